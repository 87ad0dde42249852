"""Linear readout (ImageNet-Acc column): a linear classifier on frozen, globally pooled res5 features.

With ``augment_train`` the frozen backbone sees RandomResizedCrop + flip every epoch (MoCo's lincls);
without it, features are computed once with the evaluation transform and cached, which is what the
embedded default uses to stay within minutes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision import transforms as T

from goodtransfer.checkpoint_import import resnet_from_checkpoint
from goodtransfer.data.imagefolder import image_folder
from goodtransfer.data.transforms import eval_transform, normalize
from goodtransfer.device import Compute
from goodtransfer.engine import Trainer
from goodtransfer.engine.hooks import (
    EpochCheckpoint,
    FiniteLoss,
    History,
    LrSchedule,
    ProgressLog,
    Reseed,
    TensorBoard,
)
from goodtransfer.finite import task_key
from goodtransfer.models.backbone import feature_dim, pooled_features
from goodtransfer.progress import Progress
from goodtransfer.resume import seed_everything
from goodtransfer.schedule import epoch_lr
from goodtransfer.transfer.tasks import DownstreamJob


@torch.no_grad()
def extract_features(backbone: nn.Module, loader: DataLoader, compute: Compute) -> TensorDataset:
    backbone.eval()
    features, labels = [], []
    for images, targets in loader:
        with compute.autocast():
            features.append(pooled_features(backbone, compute.images(images)).float().cpu())
        labels.append(targets)
    return TensorDataset(torch.cat(features), torch.cat(labels))


def _batches(dataset, spec: dict[str, Any], shuffle: bool, epoch: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(spec["seed"] * 1009 + epoch)
    workers = spec["workers"] if not isinstance(dataset, TensorDataset) else 0
    return DataLoader(
        dataset, batch_size=spec["batch_size"], shuffle=shuffle, generator=generator, num_workers=workers
    )


def _features_of(backbone, batch, compute: Compute, cached: bool) -> torch.Tensor:
    if cached:
        return batch.to(compute.device)
    with torch.no_grad(), compute.autocast():
        return pooled_features(backbone, compute.images(batch)).float()


@torch.no_grad()
def top1(backbone, classifier, loader, compute: Compute, cached: bool) -> float:
    correct = total = 0
    for inputs, targets in loader:
        predicted = classifier(_features_of(backbone, inputs, compute, cached)).argmax(dim=1).cpu()
        correct += int((predicted == targets).sum())
        total += len(targets)
    return 100.0 * correct / max(total, 1)


def _data(spec: dict[str, Any], backbone, data_root: Path, compute: Compute) -> tuple[Any, Any, bool]:
    """(train, val, cached): frozen features computed once, or images augmented every epoch."""
    size = spec["input_size"]
    val = image_folder(data_root, "val", eval_transform(size))
    if spec["augment_train"]:
        augment = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), normalize()])
        return image_folder(data_root, "train", augment), val, False
    train = image_folder(data_root, "train", eval_transform(size))
    return (
        extract_features(backbone, _batches(train, spec, False), compute),
        extract_features(backbone, _batches(val, spec, False), compute),
        True,
    )


def run(job: DownstreamJob) -> dict[str, Any]:
    """Train a linear classifier on frozen features of the job's backbone; top-1 on ``val``. Resumable per
    epoch (the classifier and its optimizer)."""
    spec = job.spec
    compute = Compute.from_spec(spec)
    backbone, _ = resnet_from_checkpoint(job.checkpoint)
    backbone = compute.module(backbone).eval()
    train, val, cached = _data(spec, backbone, job.data, compute)
    num_classes = len(image_folder(job.data, "train", None).classes)
    classifier = nn.Linear(feature_dim(backbone), num_classes).to(compute.device)
    classifier.weight.data.normal_(0, 0.01)  # MoCo lincls init
    classifier.bias.data.zero_()
    optimizer = torch.optim.SGD(
        classifier.parameters(), lr=spec["lr"], momentum=spec["momentum"], weight_decay=spec["weight_decay"]
    )
    resume = job.resume_state()
    start, history = 0, []
    if (state := resume.load()) is not None:
        classifier.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, history = state["epoch"], list(state["history"])
        print(f"[linear] resuming {spec['run']} from epoch {start}", file=sys.stderr)
    steps = len(_batches(train, spec, True))
    progress = Progress(f"linear {spec['run']}", spec["epochs"] * steps, done=start * steps,
                        items_per_step=spec["batch_size"], unit="img", every=steps)  # fmt: skip

    def loss(model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        inputs, targets = batch
        return {"loss": F.cross_entropy(model(_features_of(backbone, inputs, compute, cached)),
                                        targets.to(compute.device))}  # fmt: skip

    Trainer(
        classifier, optimizer, compute, loss=loss, batches=lambda epoch: _batches(train, spec, True, epoch),
        epochs=spec["epochs"], autocast=False,
        hooks=[
            Reseed(lambda epoch: seed_everything(spec["seed"] * 1009 + epoch)),  # the augmentations' draws
            LrSchedule(lambda trainer: epoch_lr(spec, trainer.epoch)),
            FiniteLoss(spec["run"], fix=task_key(spec, "lr")),
            ProgressLog(progress),
            TensorBoard(job.log_dir, fresh=start == 0),
            History(history, spec["batch_size"]),
            EpochCheckpoint(resume, 1, model=classifier.state_dict, extra=lambda: {"history": history}),
        ],
    ).train(start_epoch=start, start_iter=start * steps, resumed=state)  # fmt: skip
    accuracy = top1(backbone, classifier, _batches(val, spec, False), compute, cached)
    loss_value = history[-1]["loss"] if history else float("nan")
    print(f"[linear] {spec['run']} top-1 {accuracy:.2f} (final train loss {loss_value:.3f})", file=sys.stderr)
    return {"top1": accuracy, "epochs": spec["epochs"], "train_loss": loss_value, "resumed_from": start}
