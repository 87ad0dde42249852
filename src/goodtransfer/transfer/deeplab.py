"""Cityscapes DeepLab-v3 fine-tuning and evaluation, as mmsegmentation v0.x
``deeplabv3_r50-d8_512x1024_40k_cityscapes`` does it, on a torchvision ResNet (plain V1 stem).

Model: the ResNet is dilated in place to output stride 8 (layer3 dilation 2, layer4 dilation 4, strides
removed, first block of each contracted to half the dilation as mmseg's ``contract_dilation=True``); every
pretrained weight and state-dict key is kept. ASPP head (image pooling + 1x1 + three 3x3 atrous convs,
conv-BN-ReLU each, concat, 3x3 bottleneck, dropout, 1x1 classifier) on layer4; FCN auxiliary head (one 3x3
conv-BN-ReLU, dropout, 1x1) on layer3. All BN layers train; plain BN over one device's batch equals
mmseg's SyncBN over 4 GPUs x 2 images only when the whole batch is on one device (multi-GPU is out of scope).

Training: SGD, poly lr ``(base_lr - min_lr) * (1 - it / max_iter) ** power + min_lr``; loss =
CE(decode) + aux_weight * CE(aux) on logits bilinearly resized to the crop, ignore 255, averaged over all
pixels including ignored ones (mmseg v0.x ``avg_non_ignore=False``). Augmentation: resize to ``scale`` x
ratio (keep aspect, mmcv ``imrescale``), random crop retried up to 10 times until no class covers
``cat_max_ratio`` of it, flip 0.5, PhotoMetricDistortion, normalise, pad to the crop with 0 / 255.
Simplifications: resizing uses torch bilinear/nearest (cv2's INTER_LINEAR/INTER_NEAREST sampling, rounding
may differ by one level); PhotoMetricDistortion's saturation and hue steps use PIL's 8-bit HSV (hue in
0..255, so mmseg's +-18 of OpenCV's 180 becomes +-round(18 * 256 / 180)) instead of OpenCV's.
Every random draw is a function of (seed, iteration, slot), so a resumed run sees the same batches.

Test: each val image whole, resized to ``scale`` keeping aspect (2048x1024 is the native size), single
scale, logits resized back to the label, argmax; mIoU / mAcc / aAcc (percent) and per-class IoU / Acc
(null for a class absent from ground truth and prediction) via ``SegmentationEvaluator``.

Spec keys: ``max_iter``, ``ims_per_batch`` (>= 2: BN in the image-pooling branch), ``base_lr``,
``min_lr``, ``power``, ``momentum``, ``weight_decay``, ``crop_size`` [h, w], ``scale`` [w, h] (mmseg's
``img_scale``), ``ratio_range`` [lo, hi], ``cat_max_ratio``, ``aspp_dilations`` (the three atrous rates),
``head_channels`` (ASPP, 512), ``aux_channels`` (FCN, 256), ``aux_weight``, ``dropout``,
``checkpoint_period``, ``log_period``, ``workers``, ``seed``, ``run``; optional ``device``,
``precision``, ``channels_last`` (see ``goodtransfer.device``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.models.resnet import BasicBlock, ResNet

from goodtransfer.checkpoint import save_backbone
from goodtransfer.checkpoint_import import infer_arch, resnet_from_checkpoint
from goodtransfer.data.cityscapes import IGNORE, load_split, read_train_ids
from goodtransfer.data.images import open_rgb
from goodtransfer.data.samplers import IterationSampler
from goodtransfer.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from goodtransfer.device import Compute
from goodtransfer.engine import Trainer
from goodtransfer.engine.hooks import FiniteLoss, IterationCheckpoint, LrSchedule, ProgressLog, TensorBoard
from goodtransfer.engine.trainer import LossFn
from goodtransfer.evaluate.segmentation import CITYSCAPES_CLASSES, SegmentationEvaluator
from goodtransfer.finite import null_if_nan, require_steps, task_key
from goodtransfer.io import InputError, spec_hash
from goodtransfer.models.backbone import backbone_state_dict
from goodtransfer.progress import Progress
from goodtransfer.resume import ResumeState, set_rng_state
from goodtransfer.transfer.tasks import DownstreamJob

# --------------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------------


def _set_dilation(conv: nn.Conv2d, dilation: int) -> None:
    conv.stride, conv.dilation, conv.padding = (1, 1), (dilation, dilation), (dilation, dilation)


def dilate_resnet(resnet: ResNet) -> ResNet:
    """Output stride 8 in place: layer3/layer4 strides removed, dilations 2/4 (first block 1/2)."""
    for layer, dilation in ((resnet.layer3, 2), (resnet.layer4, 4)):
        for index, block in enumerate(layer):
            rate = dilation // 2 if index == 0 else dilation
            # mmseg's BasicBlock dilates only conv1 (conv2 stays 3x3, padding 1); Bottleneck its 3x3 conv2.
            _set_dilation(block.conv1 if isinstance(block, BasicBlock) else block.conv2, rate)
            if block.downsample is not None:
                block.downsample[0].stride = (1, 1)
    return resnet


def _conv_bn_relu(cin: int, cout: int, kernel: int, dilation: int = 1) -> nn.Sequential:
    conv = nn.Conv2d(cin, cout, kernel, padding=dilation * (kernel // 2), dilation=dilation, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")  # mmcv ConvModule init
    return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _classifier(channels: int, num_classes: int, dropout: float) -> nn.Sequential:
    conv = nn.Conv2d(channels, num_classes, 1)
    nn.init.normal_(conv.weight, std=0.01)  # mmseg's conv_seg init
    nn.init.zeros_(conv.bias)
    return nn.Sequential(nn.Dropout2d(dropout), conv)


class ASPPHead(nn.Module):
    """mmseg's ASPPHead: [image pool, 1x1, atrous 3x3 ...] -> concat -> 3x3 bottleneck -> classifier."""

    def __init__(self, cin: int, channels: int, dilations: Sequence[int], num_classes: int, dropout: float):
        super().__init__()
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), _conv_bn_relu(cin, channels, 1))
        branches = [_conv_bn_relu(cin, channels, 1)] + [_conv_bn_relu(cin, channels, 3, d) for d in dilations]
        self.branches = nn.ModuleList(branches)
        self.bottleneck = _conv_bn_relu((len(branches) + 1) * channels, channels, 3)
        self.classifier = _classifier(channels, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.interpolate(self.image_pool(x), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(self.bottleneck(torch.cat([pooled] + [b(x) for b in self.branches], dim=1)))


class DeepLabV3(nn.Module):
    """Dilated ResNet + ASPP decode head + FCN auxiliary head; logits at 1/8 of the input."""

    def __init__(self, backbone: ResNet, num_classes: int, spec: dict[str, Any]) -> None:
        super().__init__()
        backbone.fc = nn.Identity()  # the classifier is not part of the segmenter
        self.backbone = dilate_resnet(backbone)
        c3, c4 = (_out_channels(layer) for layer in (backbone.layer3, backbone.layer4))
        self.decode_head = ASPPHead(
            c4, spec["head_channels"], spec["aspp_dilations"], num_classes, spec["dropout"]
        )
        self.auxiliary_head = nn.Sequential(
            _conv_bn_relu(c3, spec["aux_channels"], 3),
            _classifier(spec["aux_channels"], num_classes, spec["dropout"]),
        )

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """layer3 and layer4 outputs, both at stride 8."""
        b = self.backbone
        x = b.layer2(b.layer1(b.maxpool(b.relu(b.bn1(b.conv1(x))))))
        c3 = b.layer3(x)
        return c3, b.layer4(c3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c3, c4 = self.features(x)
        return self.decode_head(c4), self.auxiliary_head(c3)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Decode-head logits resized to the input (mmseg's ``encode_decode``)."""
        logits = self.decode_head(self.features(x)[1])
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _out_channels(layer: nn.Sequential) -> int:
    block = layer[-1]
    return (block.bn3 if hasattr(block, "bn3") else block.bn2).num_features


def build_from_checkpoint(spec: dict[str, Any], checkpoint: Path) -> DeepLabV3:
    resnet, _ = resnet_from_checkpoint(checkpoint)
    return DeepLabV3(resnet, len(CITYSCAPES_CLASSES), spec)


def resnet_state_dict(model: DeepLabV3) -> dict[str, torch.Tensor]:
    """The segmenter's ResNet weights under torchvision keys (dilation changes no key or shape)."""
    return backbone_state_dict(model.backbone)


# --------------------------------------------------------------------------------------------------------
# Data pipeline
# --------------------------------------------------------------------------------------------------------


def poly_lr(base_lr: float, iteration: int, max_iter: int, power: float, min_lr: float) -> float:
    """mmcv's PolyLrUpdaterHook, by iteration (``iteration`` counts from 0)."""
    return (base_lr - min_lr) * (1 - iteration / max_iter) ** power + min_lr


def rescale_size(width: int, height: int, scale: Sequence[float]) -> tuple[int, int]:
    """mmcv ``rescale_size``: the largest (w, h) with the same aspect inside ``scale`` (long, short)."""
    factor = min(max(scale) / max(width, height), min(scale) / min(width, height))
    return int(width * factor + 0.5), int(height * factor + 0.5)


def _resize(image: np.ndarray, label: np.ndarray | None, size: tuple[int, int]) -> tuple[Any, Any]:
    w, h = size
    img = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float()
    img = F.interpolate(img, size=(h, w), mode="bilinear", align_corners=False)
    img = img.round_().clamp_(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()
    if label is None:
        return img, None
    lab = F.interpolate(torch.from_numpy(label)[None, None].float(), size=(h, w), mode="nearest")
    return img, lab[0, 0].to(torch.uint8).numpy()


def crop_origin(
    label: np.ndarray, crop: Sequence[int], cat_max_ratio: float, rng: np.random.Generator
) -> tuple[int, int]:
    """mmseg RandomCrop: redraw (up to 10 times) while one class covers >= cat_max_ratio of the crop."""
    (h, w), (ch, cw) = label.shape, crop

    def draw() -> tuple[int, int]:
        return int(rng.integers(0, max(h - ch, 0) + 1)), int(rng.integers(0, max(w - cw, 0) + 1))

    y, x = draw()
    if cat_max_ratio < 1:
        for _ in range(10):
            counts = np.bincount(label[y : y + ch, x : x + cw].ravel(), minlength=256)[:IGNORE]
            counts = counts[counts > 0]
            if len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio:
                break
            y, x = draw()
    return y, x


def _convert(values: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    return np.clip(values.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


def _hsv_step(image: np.ndarray, channel: int, rng: np.random.Generator) -> np.ndarray:
    hsv = np.array(Image.fromarray(image).convert("HSV"))
    if channel == 1:
        hsv[..., 1] = _convert(hsv[..., 1], alpha=rng.uniform(0.5, 1.5))
    else:
        shift = round(int(rng.integers(-18, 18)) * 256 / 180)
        hsv[..., 0] = (hsv[..., 0].astype(np.int64) + shift) % 256
    return np.array(Image.merge("HSV", [Image.fromarray(hsv[..., c]) for c in range(3)]).convert("RGB"))


def photometric_distortion(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """mmseg PhotoMetricDistortion on an RGB uint8 image: brightness +-32, contrast 0.5-1.5 (first or
    last), saturation 0.5-1.5, hue +-18 degrees/2; each applied with probability 0.5."""
    if rng.integers(2):
        image = _convert(image, beta=rng.uniform(-32, 32))
    mode = int(rng.integers(2))
    if mode == 1 and rng.integers(2):
        image = _convert(image, alpha=rng.uniform(0.5, 1.5))
    for channel in (1, 0):  # saturation, then hue
        if rng.integers(2):
            image = _hsv_step(image, channel, rng)
    if mode == 0 and rng.integers(2):
        image = _convert(image, alpha=rng.uniform(0.5, 1.5))
    return image


def _normalise(image: np.ndarray) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255)
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return (tensor - mean) / std


class CityscapesData(Dataset):
    """Train items ``(position, rng key)`` give augmented crops; test items ``position`` whole images."""

    def __init__(self, pairs: Sequence[tuple[Path, Path]], spec: dict[str, Any]) -> None:
        self.pairs, self.spec = list(pairs), spec

    def __len__(self) -> int:
        return len(self.pairs)

    def _load(self, position: int) -> tuple[np.ndarray, np.ndarray]:
        image_path, label_path = self.pairs[position]
        pixels = np.asarray(open_rgb(image_path))
        label = read_train_ids(label_path)
        if label.shape != pixels.shape[:2]:
            raise InputError(f"{label_path}: size {label.shape} differs from {image_path} {pixels.shape[:2]}")
        return pixels, label

    def __getitem__(self, item: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(item, int):
            pixels, label = self._load(item)
            image, _ = _resize(
                pixels, None, rescale_size(pixels.shape[1], pixels.shape[0], self.spec["scale"])
            )
            return _normalise(image), torch.from_numpy(label.astype(np.int64))
        position, key = item
        return self._augment(*self._load(position), np.random.default_rng(key))

    def _augment(self, pixels: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> Any:
        spec, (ch, cw) = self.spec, self.spec["crop_size"]
        ratio = rng.uniform(*spec["ratio_range"])
        target = (int(spec["scale"][0] * ratio), int(spec["scale"][1] * ratio))
        pixels, label = _resize(pixels, label, rescale_size(pixels.shape[1], pixels.shape[0], target))
        y, x = crop_origin(label, (ch, cw), spec["cat_max_ratio"], rng)
        pixels, label = pixels[y : y + ch, x : x + cw], label[y : y + ch, x : x + cw]
        if rng.random() < 0.5:
            pixels, label = pixels[:, ::-1], label[:, ::-1]
        image = _normalise(photometric_distortion(np.ascontiguousarray(pixels), rng))
        h, w = label.shape
        image = F.pad(image, (0, cw - w, 0, ch - h), value=0.0)
        target_map = F.pad(torch.from_numpy(label.astype(np.int64)), (0, cw - w, 0, ch - h), value=IGNORE)
        return image, target_map


class SegmentationSampler(IterationSampler):
    """IterationSampler's batches, each item keyed by (seed, iteration, slot) for its random draws."""

    def __init__(self, size: int, batch: int, seed: int, start: int, stop: int) -> None:
        super().__init__(size, batch, seed, start, stop, flip=False)

    def __iter__(self) -> Iterator[list[tuple[int, tuple[int, int, int]]]]:
        for iteration, batch in enumerate(super().__iter__(), start=self.start):
            yield [(p, (self.seed, iteration, slot)) for slot, (p, _) in enumerate(batch)]


# --------------------------------------------------------------------------------------------------------
# Training, evaluation, entry point
# --------------------------------------------------------------------------------------------------------


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CE on logits resized to the target, ignored pixels counted in the mean (mmseg v0.x)."""
    logits = F.interpolate(logits.float(), size=target.shape[-2:], mode="bilinear", align_corners=False)
    return F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="none").mean()


def _train(
    model: DeepLabV3, data: CityscapesData, spec: dict[str, Any], compute: Compute, resume: ResumeState,
    log_dir: Path,
) -> int:  # fmt: skip
    """Train to ``max_iter``, resuming from the last state; returns the iteration it started from."""
    optimizer = torch.optim.SGD(
        model.parameters(), lr=spec["base_lr"], momentum=spec["momentum"], weight_decay=spec["weight_decay"]
    )
    start, state = 0, resume.load()
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["iteration"]
        print(f"[cityscapes] resuming {spec['run']} from iteration {start}", file=sys.stderr)
    require_steps(len(data), run=spec["run"], images=len(data), batch=spec["ims_per_batch"], drop_last=False,
                  fix="add images to the training split")  # fmt: skip
    last = spec["max_iter"]
    sampler = SegmentationSampler(len(data), spec["ims_per_batch"], spec["seed"], start, last)
    batches = iter(DataLoader(data, batch_sampler=sampler, num_workers=spec["workers"]))
    if state is not None:  # after the loader drew its seed, so dropout masks match an uninterrupted run
        set_rng_state(state["rng"])
    progress = Progress(f"cityscapes {spec['run']}", last, done=start, items_per_step=spec["ims_per_batch"],
                        unit="img", every=spec["log_period"])  # fmt: skip
    Trainer(
        model, optimizer, compute, loss=_loss(spec, compute), batches=lambda epoch: batches, epochs=1,
        autocast=False,
        hooks=[
            LrSchedule(lambda t: poly_lr(spec["base_lr"], t.iter, last, spec["power"], spec["min_lr"])),
            FiniteLoss(spec["run"], fix=task_key(spec, "base_lr"), iterations=True),
            ProgressLog(progress, mean=False),
            TensorBoard(log_dir, fresh=start == 0),
            IterationCheckpoint(resume, spec["checkpoint_period"], last),
        ],
    ).train(start_iter=start, resumed=state)  # fmt: skip
    return start


def _loss(spec: dict[str, Any], compute: Compute) -> LossFn:
    """The decode head's CE and the auxiliary head's, weighted; the network runs under the job's
    autocast, the losses in fp32 on its logits."""

    def loss(model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        images, targets = batch
        targets = targets.to(compute.device)
        with compute.autocast():
            logits, aux = model(compute.images(images))
        return {
            "loss_decode": segmentation_loss(logits, targets),
            "loss_aux": spec["aux_weight"] * segmentation_loss(aux, targets),
        }

    return loss


@torch.no_grad()
def evaluate(
    model: DeepLabV3, data: CityscapesData, spec: dict[str, Any], compute: Compute
) -> dict[str, Any]:
    """Whole-image single-scale inference at ``scale``; mmseg's metrics over the 19 classes."""
    model.eval()
    evaluator = SegmentationEvaluator(len(CITYSCAPES_CLASSES), IGNORE, CITYSCAPES_CLASSES)
    loader = DataLoader(data, batch_size=None, sampler=range(len(data)), num_workers=spec["workers"])
    for image, label in loader:
        with compute.autocast():
            logits = model.predict(compute.images(image[None]))
        logits = F.interpolate(logits.float(), size=label.shape, mode="bilinear", align_corners=False)
        evaluator.process(logits.argmax(dim=1)[0].cpu().numpy(), label.numpy())
    # NaN marks a class absent from both ground truth and prediction: null in the file, and why.
    return null_if_nan(evaluator.evaluate(), {}, "class absent from ground truth and prediction (left out)")


def run(job: DownstreamJob) -> dict[str, Any]:
    """Fine-tune DeepLab-v3 from the job's backbone on Cityscapes train, evaluate on val. With
    ``job.backbone_out``, the trained segmenter's ResNet is saved as a backbone checkpoint (Table 2's
    supervised Synthia row: "a supervised segmentation network")."""
    spec = job.spec
    train_pairs, val_pairs = load_split(job.data, "train"), load_split(job.data, "val")
    compute = Compute.from_spec(spec)
    model = compute.module(build_from_checkpoint(spec, Path(job.checkpoint)))
    start = _train(model, CityscapesData(train_pairs, spec), spec, compute, job.resume_state(), job.log_dir)
    metrics = evaluate(model, CityscapesData(val_pairs, spec), spec, compute)
    print(
        f"[cityscapes] {spec['run']} val mIoU {metrics['mIoU']:.2f} aAcc {metrics['aAcc']:.2f}",
        file=sys.stderr,
    )
    if job.backbone_out is not None:
        weights = resnet_state_dict(model)
        meta = {"method": "supervised-segmentation", "run": spec["run"], "config_hash": spec_hash(spec),
                "epoch": -1, "iterations": spec["max_iter"], "arch": infer_arch(job.checkpoint, weights),
                "init": str(job.checkpoint)}  # fmt: skip
        save_backbone(job.backbone_out, weights, meta)
    return {**metrics, "iterations": spec["max_iter"], "resumed_from": start,
            "train_images": len(train_pairs), "val_images": len(val_pairs)}  # fmt: skip
