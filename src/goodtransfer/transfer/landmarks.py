"""MAFL facial landmarks (paper Table 5): fine-tune a ResNet end to end to regress 5 points.

Model (the paper's head): the backbone up to the spatial res5 output (no avgpool), then a 1x1 conv
C->``head_channels`` (2048->128 for ResNet-50), BatchNorm, LeakyReLU, flatten, and a fully connected layer
to the 10 coordinates. Every layer is trained. The metric is the inter-ocular-normalised mean error (%)
of :func:`goodtransfer.evaluate.landmarks.landmark_error`, on MAFL ``testing.txt``, in original pixels.

Not stated in the paper, chosen here: the whole aligned 178x218 image is resized (no crop) to
``input_size`` (224x224 at paper scale, as for ImageNet backbones); targets are the points in [-1, 1]
with the pixel-centre convention ``u = 2 (x + 0.5) / W - 1``, which a resize leaves unchanged; the loss
is the mean squared error of these normalised coordinates; the optimizer, schedule, weight decay and
augmentation are spec keys. With ``flip`` a mirrored image swaps the left/right eyes and mouth corners.

Epoch-based and resumable: epoch e's order and flips are a function of (seed, e), and the model and
optimizer are saved to ``state_dir`` every ``checkpoint_period`` epochs and after the last one, so a
resumed run ends with the same weights as an uninterrupted one.

Spec keys: ``run``, ``seed``, ``device``, ``precision``, ``channels_last``; ``input_size`` (int or
[height, width]); ``epochs``, ``batch_size``, ``lr``, optional ``lr_reference_batch`` (lr is scaled by
batch_size / lr_reference_batch), ``schedule`` (cosine | step, per epoch), ``milestones`` (epochs, for
step); ``optimizer`` (sgd | adam | adamw), ``momentum`` (sgd), ``weight_decay``; ``head_channels``,
``leaky_slope``; ``flip`` (bool); ``workers``, ``log_period`` (iterations between log lines),
``checkpoint_period`` (epochs).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.models.resnet import ResNet

from goodtransfer.checkpoint_import import resnet_from_checkpoint
from goodtransfer.data.celeba import landmarks, mafl_samples
from goodtransfer.data.images import open_rgb
from goodtransfer.data.transforms import normalize
from goodtransfer.device import Compute
from goodtransfer.engine import Hook, Trainer
from goodtransfer.engine.hooks import (
    EpochCheckpoint,
    EpochEnd,
    FiniteLoss,
    LrSchedule,
    ProgressLog,
    TensorBoard,
)
from goodtransfer.engine.trainer import LossFn
from goodtransfer.evaluate.landmarks import landmark_error
from goodtransfer.finite import require_steps, task_key
from goodtransfer.models.backbone import feature_dim
from goodtransfer.progress import Progress
from goodtransfer.resume import ResumeState, set_rng_state
from goodtransfer.schedule import epoch_lr
from goodtransfer.transfer.tasks import DownstreamJob

NUM_POINTS = 5
# Mirroring swaps left eye <-> right eye and left <-> right mouth corner; the nose stays.
FLIP_ORDER = (1, 0, 2, 4, 3)
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "step")


def to_unit(points: np.ndarray, size: Sequence[int] | np.ndarray) -> np.ndarray:
    """Pixel coordinates (..., 5, 2) in images of (width, height) -> [-1, 1]; pixel x covers [x, x + 1)."""
    size = np.asarray(size, dtype=np.float64)[..., None, :]
    return 2.0 * (np.asarray(points, dtype=np.float64) + 0.5) / size - 1.0


def from_unit(units: np.ndarray, size: Sequence[int] | np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_unit`."""
    size = np.asarray(size, dtype=np.float64)[..., None, :]
    return (np.asarray(units, dtype=np.float64) + 1.0) / 2.0 * size - 0.5


def flip_points(units: np.ndarray) -> np.ndarray:
    """Normalised points of the horizontally mirrored image, in MAFL's left/right order."""
    mirrored = np.asarray(units)[..., FLIP_ORDER, :].copy()
    mirrored[..., 0] = -mirrored[..., 0]
    return mirrored


def input_hw(spec: dict[str, Any]) -> tuple[int, int]:
    size = spec["input_size"]
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


class MaflData(Dataset):
    """(image resized to ``size`` and normalised, 10 target numbers in [-1, 1], original (width, height))."""

    def __init__(self, paths: Sequence[Path], points: np.ndarray, size: tuple[int, int]) -> None:
        self.paths, self.points, self.size = list(paths), points, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: tuple[int, bool]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        index, flip = item
        image = open_rgb(self.paths[index])
        width, height = image.size
        units = to_unit(self.points[index], (width, height))
        if (height, width) != self.size:
            image = image.resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR)
        pixels = normalize()(image)
        if flip:
            pixels, units = pixels.flip(-1), flip_points(units)
        return pixels, torch.from_numpy(units.reshape(-1)).float(), torch.tensor([width, height])


def epoch_batches(size: int, batch: int, seed: int, epoch: int, flip: bool) -> list[list[tuple[int, bool]]]:
    """Batches of (index, flip) for one epoch: a function of (seed, epoch) only, so a resumed run agrees."""
    generator = torch.Generator().manual_seed(seed * 104729 + epoch)
    order = torch.randperm(size, generator=generator).tolist()
    flips = (torch.rand(size, generator=generator) < 0.5).tolist()
    items = [(i, flip and flips[i]) for i in order]
    return [items[k : k + batch] for k in range(0, size, batch)]


class LandmarkRegressor(nn.Module):
    """ResNet to res5 (spatial), then 1x1 conv -> BN -> LeakyReLU -> flatten -> FC to 2 * 5 numbers."""

    def __init__(self, backbone: ResNet, input_size: tuple[int, int], channels: int, slope: float) -> None:
        super().__init__()
        width = feature_dim(backbone)
        backbone.avgpool, backbone.fc = nn.Identity(), nn.Identity()  # unused: no pooling, own head
        self.backbone = backbone
        # Every stride-2 stage (conv1, maxpool, layer2-4) maps n to ceil(n / 2) in torchvision's ResNet.
        h, w = input_size
        for _ in range(5):
            h, w = (h + 1) // 2, (w + 1) // 2
        self.head = nn.Sequential(
            nn.Conv2d(width, channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.LeakyReLU(slope),
            nn.Flatten(),
            nn.Linear(channels * h * w, 2 * NUM_POINTS),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        b = self.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(images))))
        return self.head(b.layer4(b.layer3(b.layer2(b.layer1(x)))))


def _optimizer(model: nn.Module, spec: dict[str, Any]) -> torch.optim.Optimizer:
    if spec["optimizer"] == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=spec["lr"], momentum=spec["momentum"], weight_decay=spec["weight_decay"]
        )
    adam = torch.optim.Adam if spec["optimizer"] == "adam" else torch.optim.AdamW
    return adam(model.parameters(), lr=spec["lr"], weight_decay=spec["weight_decay"])


def _pinned(compute: Compute) -> bool:
    return compute.device.type == "cuda"


def _loader(data: MaflData, spec: dict[str, Any], compute: Compute, epoch: int) -> DataLoader:
    batches = epoch_batches(len(data), spec["batch_size"], spec["seed"], epoch, spec["flip"])
    return DataLoader(data, batch_sampler=batches, num_workers=spec["workers"], pin_memory=_pinned(compute))


def _loss(compute: Compute) -> LossFn:
    """MSE of the normalised coordinates, in fp32 on the network's output (the forward autocasts)."""

    def loss(model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        images, targets, _ = batch
        with compute.autocast():
            outputs = model(compute.images(images))
        return {"mse": F.mse_loss(outputs.float(), targets.to(compute.device))}

    return loss


class SampleMeanLoss(Hook):
    """Appends each epoch's mean per-sample loss to ``losses``: a short last batch weighs by its size
    (``sizes``: the images of each step), summed in fp32 as the loss itself is."""

    def __init__(self, losses: list[float], sizes: Sequence[int]) -> None:
        self.losses, self.sizes, self.total = losses, list(sizes), torch.zeros(())

    def before_epoch(self, trainer: Trainer) -> None:
        self.total = torch.zeros(())

    def after_step(self, trainer: Trainer) -> None:
        self.total = self.total + torch.tensor(trainer.loss) * self.sizes[trainer.step_in_epoch - 1]

    def after_epoch(self, trainer: Trainer) -> None:
        self.losses.append(float(self.total) / sum(self.sizes))


def train(
    model: nn.Module,
    data: MaflData,
    spec: dict[str, Any],
    compute: Compute,
    resume: ResumeState,
    log_dir: Path,
) -> tuple[int, list[float]]:
    """Fine-tune for ``spec['epochs']`` from the saved state if any, TensorBoard scalars in ``log_dir``;
    returns (start epoch, epoch losses)."""
    optimizer = _optimizer(model, spec)
    start, losses = 0, []
    if (state := resume.load()) is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, losses = state["epoch"], list(state["losses"])
        set_rng_state(state["rng"])
    sizes = [len(batch) for batch in epoch_batches(len(data), spec["batch_size"], spec["seed"], 0, False)]
    require_steps(len(sizes), run=spec["run"], images=len(data), batch=spec["batch_size"], drop_last=False,
                  fix="list images in MAFL/training.txt")  # fmt: skip
    per_epoch, epochs = len(sizes), spec["epochs"]
    progress = Progress(f"landmarks {spec['run']}", epochs * per_epoch, done=start * per_epoch,
                        items_per_step=spec["batch_size"], unit="img", every=spec["log_period"])  # fmt: skip

    def report(trainer: Trainer) -> None:
        print(f"[landmarks] {spec['run']} epoch {trainer.epoch + 1}/{epochs} loss {losses[-1]:.5f}",
              file=sys.stderr)  # fmt: skip

    Trainer(
        model, optimizer, compute, loss=_loss(compute), epochs=epochs, autocast=False,
        batches=lambda epoch: _loader(data, spec, compute, epoch),
        hooks=[
            LrSchedule(lambda trainer: epoch_lr(spec, trainer.epoch)),
            FiniteLoss(spec["run"], fix=task_key(spec, "lr")),
            ProgressLog(progress, mean=False),
            TensorBoard(log_dir, fresh=start == 0),
            SampleMeanLoss(losses, sizes),
            EpochEnd(report),
            EpochCheckpoint(resume, spec["checkpoint_period"], model=model.state_dict,
                            extra=lambda: {"losses": losses}),
        ],
    ).train(start_epoch=start, start_iter=start * per_epoch, resumed=state)  # fmt: skip
    return start, losses


@torch.no_grad()
def predict(model: nn.Module, data: MaflData, spec: dict[str, Any], compute: Compute) -> np.ndarray:
    """(N, 5, 2) predicted landmarks in each image's original pixel coordinates."""
    model.eval()
    items = [(i, False) for i in range(len(data))]
    batches = [items[k : k + spec["batch_size"]] for k in range(0, len(items), spec["batch_size"])]
    predictions = []
    loader = DataLoader(data, batch_sampler=batches, num_workers=spec["workers"], pin_memory=_pinned(compute))
    for images, _, sizes in loader:
        with compute.autocast():
            units = model(compute.images(images)).float().cpu().numpy().reshape(-1, NUM_POINTS, 2)
        predictions.append(from_unit(units, sizes.numpy()))
    return np.concatenate(predictions)


def run(job: DownstreamJob) -> dict[str, Any]:
    """Fine-tune on MAFL ``training.txt``; the error (%) on ``testing.txt``."""
    spec, data_root = job.spec, job.data
    points = landmarks(data_root)
    size = input_hw(spec)
    train_data = MaflData(*mafl_samples(data_root, "train", points), size)
    test_paths, test_points = mafl_samples(data_root, "test", points)
    test_data = MaflData(test_paths, test_points, size)
    compute = Compute.from_spec(spec)
    backbone, _ = resnet_from_checkpoint(job.checkpoint)
    model = compute.module(LandmarkRegressor(backbone, size, spec["head_channels"], spec["leaky_slope"]))
    start, losses = train(model, train_data, spec, compute, job.resume_state(), job.log_dir)
    error = landmark_error(predict(model, test_data, spec, compute), test_points)
    return {"error": error, "train_loss": losses[-1], "epochs": spec["epochs"], "resumed_from": start,
            "train_images": len(train_data), "test_images": len(test_data)}  # fmt: skip
