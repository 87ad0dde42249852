"""Feature inversion with a deep image prior (Fig. 2, Fig. 6, App. D): what do layer4 features keep?

For a frozen backbone f and an image x0, a randomly initialised skip encoder-decoder r_theta (Ulyanov et
al. 2018) is fitted so that f(r_theta(z0)[:crop, :crop]) matches f(x0) on layer4 (MSE, the mean over
elements); z0 is fixed noise, uniform in [0, noise_scale]. Only theta is optimised (Adam), one image at a
time, with the generator in train mode (BatchNorm on the single image's statistics).

``output: normalised`` (the authors' code) takes the generator's 3 channels as an ImageNet-normalised
image, de-normalised and clipped to [0, 1] for saving; ``output: sigmoid`` (DIP's default) makes them an
image in [0, 1] that is normalised before the backbone. Each reconstruction is seeded with ``seed``, so
every backbone starts from the same z0 and generator weights for a given image.
"""

from __future__ import annotations

import functools
import io
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image, PngImagePlugin
from torch import nn
from torchvision import transforms as T
from torchvision.models.resnet import ResNet

from goodtransfer.checkpoint_import import resnet_from_checkpoint
from goodtransfer.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from goodtransfer.device import Compute
from goodtransfer.engine import Hook, Trainer
from goodtransfer.engine.hooks import FiniteLoss
from goodtransfer.evaluate.perceptual import perceptual_from_spec
from goodtransfer.io import InputError, spec_hash, write_bytes, write_json
from goodtransfer.resume import file_digest

GENERATOR_KEYS = ("noise_channels", "channels_down", "channels_up", "channels_skip", "kernel_sizes", "output")
# Every key that changes a reconstruction; a saved PNG made under other values is recomputed.
INVERSION_KEYS = (
    *GENERATOR_KEYS,
    "noise_size",
    "noise_scale",
    "resize",
    "crop",
    "iterations",
    "lr",
    "seed",
    "precision",
)
REQUIRED = (*INVERSION_KEYS, "lpips_net", "lpips_weights")
OUTPUTS = ("normalised", "sigmoid")
_RESUME_TAG = "goodtransfer-inversion"  # PNG text chunk: which spec, checkpoint and image made the file
GRID_IMAGES = 6  # columns of the figure (the paper's qualitative Fig. 2 shows 6 images); metrics use all
_LABEL = re.compile(r"^[A-Za-z0-9._-]+$")


# --------------------------------------------------------------------------------------------------------
# The deep-image-prior skip encoder-decoder
# --------------------------------------------------------------------------------------------------------


def _block(cin: int, cout: int, kernel: int, downsample: bool = False) -> nn.Sequential:
    """Zero-padded conv (then 2x average pooling when downsampling), BatchNorm, LeakyReLU(0.2)."""
    pool = [nn.AvgPool2d(2)] if downsample else []
    conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2)
    return nn.Sequential(conv, *pool, nn.BatchNorm2d(cout), nn.LeakyReLU(0.2))


class _Scale(nn.Module):
    """One scale: [skip(x), up(deeper(down(x)))] concatenated, BatchNorm, then a k x k and a 1 x 1 block."""

    def __init__(self, cin: int, down: int, up: int, skip: int, kernel: int, deeper: _Scale | None) -> None:
        super().__init__()
        self.skip = _block(cin, skip, 1) if skip else None
        self.down = nn.Sequential(_block(cin, down, kernel, downsample=True), _block(down, down, kernel))
        self.deeper = deeper if deeper is not None else nn.Identity()
        merged = skip + (deeper.out_channels if deeper is not None else down)
        self.merge_norm = nn.BatchNorm2d(merged)
        self.up = nn.Sequential(_block(merged, up, kernel), _block(up, up, 1))
        self.out_channels = up

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        deep = F.interpolate(self.deeper(self.down(x)), scale_factor=2, mode="nearest")
        merged = deep if self.skip is None else torch.cat([self.skip(x), deep], dim=1)
        return self.up(self.merge_norm(merged))


class SkipGenerator(nn.Module):
    """DIP ``skip``: ``len(channels_down)`` scales, each halving the resolution; 3 output channels."""

    def __init__(
        self,
        noise_channels: int,
        channels_down: list[int],
        channels_up: list[int],
        channels_skip: list[int],
        kernel_sizes: list[int],
        sigmoid: bool = False,
    ) -> None:
        super().__init__()
        body: _Scale | None = None
        for i in reversed(range(len(channels_down))):
            cin = noise_channels if i == 0 else channels_down[i - 1]
            body = _Scale(cin, channels_down[i], channels_up[i], channels_skip[i], kernel_sizes[i], body)
        assert body is not None
        self.body = body
        self.head = nn.Conv2d(channels_up[0], 3, 1)
        self.sigmoid = sigmoid

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        out = self.head(self.body(noise))
        return torch.sigmoid(out) if self.sigmoid else out


def build_generator(spec: dict[str, Any]) -> SkipGenerator:
    channels = (spec["channels_down"], spec["channels_up"], spec["channels_skip"], spec["kernel_sizes"])
    return SkipGenerator(spec["noise_channels"], *channels, sigmoid=spec["output"] == "sigmoid")


# --------------------------------------------------------------------------------------------------------
# Inversion of one image
# --------------------------------------------------------------------------------------------------------


@dataclass
class Reconstruction:
    image: torch.Tensor  # (3, crop, crop) in [0, 1], on the CPU
    losses: list[float]  # feature MSE before each Adam step, then of ``image``'s generator output


def layer4_features(model: ResNet, images: torch.Tensor) -> torch.Tensor:
    """res5 feature map (2048 x 7 x 7 for a 224-px input to ResNet-50)."""
    x = model.maxpool(model.relu(model.bn1(model.conv1(images))))
    return model.layer4(model.layer3(model.layer2(model.layer1(x))))


def _normalisation(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = torch.tensor(IMAGENET_MEAN, device=device), torch.tensor(IMAGENET_STD, device=device)
    return mean.view(1, 3, 1, 1), std.view(1, 3, 1, 1)


class _InversionLog(Hook):
    """Keeps every step's feature MSE and prints one every ``every`` steps."""

    def __init__(self, losses: list[float], total: int, every: int) -> None:
        self.losses, self.total, self.every, self.began = losses, total, every, time.time()

    def after_step(self, trainer: Trainer) -> None:
        self.losses.append(trainer.loss)
        step = trainer.iter
        if self.every and step % self.every == 0:
            print(
                f"[inversion]   step {step}/{self.total} feature MSE {trainer.loss:.5f} "
                f"({(time.time() - self.began) / step:.2f} s/step)",
                file=sys.stderr,
            )


def invert(
    backbone: ResNet, target_image: torch.Tensor, spec: dict[str, Any], compute: Compute
) -> Reconstruction:
    """Fit a fresh generator so the backbone's layer4 features of its output match those of ``target_image``
    ((3, crop, crop) in [0, 1]); the backbone is frozen and kept in eval mode."""
    crop = spec["crop"]
    if tuple(target_image.shape) != (3, crop, crop):
        raise InputError(f"invert: target image is {list(target_image.shape)}; expected [3, {crop}, {crop}]")
    backbone = compute.module(backbone).eval().requires_grad_(False)
    mean, std = _normalisation(compute.device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec["seed"])
        generator = compute.module(build_generator(spec)).train()
        size = spec["noise_size"]
        noise = compute.images(torch.rand(1, spec["noise_channels"], size, size) * spec["noise_scale"])
    sigmoid = spec["output"] == "sigmoid"

    def generate() -> tuple[torch.Tensor, torch.Tensor]:
        """(backbone input, image in [0, 1]) of the generator's output cropped to ``crop``."""
        out = generator(noise)[:, :, :crop, :crop].float()
        return ((out - mean) / std, out) if sigmoid else (out, (out * std + mean).clamp(0, 1))

    def loss_of(backbone_input: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(layer4_features(backbone, backbone_input).float(), target)

    with torch.no_grad(), compute.autocast():
        target = layer4_features(
            backbone, compute.images((target_image[None].to(compute.device) - mean) / std)
        )
        target = target.float()
    losses: list[float] = []
    Trainer(
        generator, torch.optim.Adam(generator.parameters(), lr=spec["lr"]), compute, epochs=1,
        loss=lambda model, step: {"feature_mse": loss_of(generate()[0])},
        batches=lambda epoch: range(spec["iterations"]),
        hooks=[
            FiniteLoss(spec.get("run", "inversion"), fix="the inversion figure's lr", iterations=True),
            _InversionLog(losses, spec["iterations"], spec.get("log_every", 0)),
        ],
    ).train()  # fmt: skip
    with torch.no_grad(), compute.autocast():  # still train mode, as during fitting and in the authors' code
        backbone_input, image = generate()
        losses.append(loss_of(backbone_input).item())
    return Reconstruction(image[0].float().cpu(), losses)


# --------------------------------------------------------------------------------------------------------
# Images in and out
# --------------------------------------------------------------------------------------------------------


def load_image(path: str | Path, resize: int, crop: int) -> torch.Tensor:
    """Resize(resize) + CenterCrop(crop) of an RGB image, as a (3, crop, crop) tensor in [0, 1]."""
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: cannot read the image ({err}); expected a JPEG or PNG file") from None
    return T.Compose([T.Resize(resize), T.CenterCrop(crop), T.ToTensor()])(rgb)


def save_png(path: Path, image: torch.Tensor, text: dict[str, str] | None = None) -> None:
    """8-bit PNG written atomically; ``text`` goes into tEXt chunks (no timestamp, so bytes are stable)."""
    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", pnginfo=info)
    write_bytes(path, buffer.getvalue())


def read_png(path: Path) -> tuple[torch.Tensor, dict[str, str]]:
    with Image.open(path) as image:
        return T.functional.to_tensor(image.convert("RGB")), dict(getattr(image, "text", {}))


# --------------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------------


def run_inversion(
    spec: dict[str, Any],
    checkpoints: dict[str, Path],
    images: list[Path],
    out_dir: Path,
    metrics_out: Path,
    figure_out: Path | None = None,
) -> None:
    """Invert every image through every backbone; write ``out_dir/inputs/*.png``,
    ``out_dir/reconstructions/<label>/*.png``, ``metrics_out`` (LPIPS to the input per backbone) and a
    grid PDF of the first ``grid_images`` images (``figure_out``, default ``out_dir/reconstructions.pdf``).
    A reconstruction already saved under the same spec, backbone bytes and image bytes is reused, so an
    interrupted run resumes where it stopped."""
    _validate(spec, checkpoints, images)
    out_dir, began = Path(out_dir), time.time()
    compute = Compute.from_spec(spec)
    names = [_file_name(index, path) for index, path in enumerate(images)]
    shown = spec.get("grid_images", GRID_IMAGES)
    inputs = []
    for path, name in zip(images, names, strict=True):
        image = load_image(path, spec["resize"], spec["crop"])
        save_png(out_dir / "inputs" / f"{name}.png", image)
        if len(inputs) < shown:
            inputs.append(image)
    distance = perceptual_from_spec(spec).to(compute.device)
    metrics, rows = {}, [("input", inputs)]
    for label, checkpoint in checkpoints.items():
        metrics[label], recons = _invert_all(spec, (label, checkpoint), images, out_dir, distance, compute)
        metrics[label]["config_hash"] = spec_hash(spec)
        rows.append((label, recons[:shown]))
        print(f"[inversion] {label}: LPIPS mean {metrics[label]['lpips_mean']:.4f}", file=sys.stderr)
    write_json(metrics_out, metrics)
    save_grid(figure_out or out_dir / "reconstructions.pdf", rows, names[:shown], metrics)
    print(f"[inversion] done in {time.time() - began:.1f} s", file=sys.stderr)


def inversion_images(root: Path, split: str, count: int) -> list[Path]:
    """``count`` images of an ImageNet-style split, one class after another (first file of each class
    first), so a small grid already spans the classes."""
    folder = Path(root) / split
    classes = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    if not classes:
        raise InputError(f"{folder}: no class folders to draw inversion images from")
    files = [sorted(p for p in c.iterdir() if p.is_file()) for c in classes]
    order = [row[i] for i in range(max(map(len, files))) for row in files if i < len(row)]
    return order[:count]


def invert_figure(
    name: str, entry: dict[str, Any], checkpoints: list[Path], data_root: Path, work_dir: Path,
    metrics_out: Path, grid_out: Path,
) -> None:  # fmt: skip
    """The inversions an ``inversion`` figure shows: the entry's images of ``data_root`` through one
    checkpoint per run (in the entry's order), under the entry's ``settings``."""
    runs = entry["runs"]
    if len(checkpoints) != len(runs):
        raise InputError(f"figures.{name}: {len(runs)} runs but {len(checkpoints)} checkpoints")
    images = inversion_images(data_root, entry["images"]["split"], entry["images"]["count"])
    labelled = {run["label"]: Path(path) for run, path in zip(runs, checkpoints, strict=True)}
    run_inversion(dict(entry["settings"]), labelled, images, work_dir, metrics_out, figure_out=grid_out)


def _invert_all(
    spec: dict[str, Any],
    source: tuple[str, Path],
    images: list[Path],
    out_dir: Path,
    distance: torch.nn.Module,
    compute: Compute,
) -> tuple[dict[str, Any], list[torch.Tensor]]:
    """One backbone's metrics entry over all images, and its first ``grid_images`` reconstructions."""
    label, checkpoint = source
    backbone = functools.cache(functools.partial(_load_backbone, checkpoint))  # loaded only if needed
    scores, mses, recons = [], [], []
    for index, path in enumerate(images):
        image = load_image(path, spec["resize"], spec["crop"])
        png = out_dir / "reconstructions" / label / f"{_file_name(index, path)}.png"
        recon, text = _reconstruct(spec, backbone, source, (path, image), png, compute)
        with torch.no_grad():
            scores.append(float(distance(recon[None].to(compute.device), image[None].to(compute.device))))
        mses.append(float(text["feature_mse"]))
        if len(recons) < spec.get("grid_images", GRID_IMAGES):
            recons.append(recon)
    entry = {
        "lpips_mean": sum(scores) / len(scores),
        "lpips_per_image": scores,
        "feature_mse_per_image": mses,
        "images": [str(path) for path in images],
        "checkpoint": str(checkpoint),
    }
    return entry, recons


def _file_name(index: int, path: Path) -> str:
    return f"{index:04d}_{Path(path).stem}"  # the index keeps equal stems from different folders apart


def _load_backbone(checkpoint: Path) -> ResNet:
    return resnet_from_checkpoint(checkpoint)[0]


def _reconstruct(
    spec: dict[str, Any],
    backbone: Callable[[], ResNet],
    source: tuple[str, Path],
    target: tuple[Path, torch.Tensor],
    png: Path,
    compute: Compute,
) -> tuple[torch.Tensor, dict[str, str]]:
    """The reconstruction saved at ``png`` if the same settings, backbone bytes and image bytes made it
    (not merely the same paths: a retrained backbone has the same path), else a fresh one, saved;
    returned as read back (8-bit), so a resumed run scores exactly the same pixels."""
    (label, checkpoint), (image_path, image) = source, target
    settings = {key: spec[key] for key in INVERSION_KEYS}
    tag = spec_hash({**settings, "backbone": file_digest(checkpoint), "image": file_digest(image_path)})
    if png.is_file():
        saved, text = read_png(png)
        if text.get(_RESUME_TAG) == tag:
            return saved, text
        print(f"[inversion] {png}: made from other settings, weights or image; recomputing", file=sys.stderr)
    began = time.time()
    result = invert(backbone(), image, spec, compute)
    save_png(png, result.image, {_RESUME_TAG: tag, "feature_mse": repr(result.losses[-1])})
    print(
        f"[inversion] {label} {png.stem}: feature MSE {result.losses[0]:.5f} -> {result.losses[-1]:.5f} "
        f"in {time.time() - began:.1f} s",
        file=sys.stderr,
    )
    return read_png(png)


def save_grid(
    path: str | Path,
    rows: list[tuple[str, list[torch.Tensor]]],
    columns: list[str],
    metrics: dict[str, Any] | None = None,
) -> None:
    """PDF grid, one row per entry of ``rows`` (label, images), one column per image; each
    reconstruction is captioned with its LPIPS. No creation date, so equal inputs give equal bytes."""
    from matplotlib.figure import Figure  # only this figure needs matplotlib

    figure = Figure(figsize=(1.5 * len(columns) + 0.6, 1.6 * len(rows)))
    axes = figure.subplots(len(rows), len(columns), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c, image in enumerate(images):
            ax = axes[r][c]
            ax.imshow(image.permute(1, 2, 0).numpy(), interpolation="none")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(columns[c][:20], fontsize=6)
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
            if metrics and label in metrics:
                ax.set_xlabel(f"LPIPS {metrics[label]['lpips_per_image'][c]:.3f}", fontsize=6)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="pdf", metadata={"CreationDate": None, "ModDate": None})
    write_bytes(path, buffer.getvalue())


def _validate(spec: dict[str, Any], checkpoints: dict[str, Path], images: list[Path]) -> None:
    missing = [key for key in REQUIRED if key not in spec]
    if missing:
        raise InputError(f"inversion spec: missing key(s) {missing}; expected all of {list(REQUIRED)}")
    depth = len(spec["channels_down"])
    if not depth or any(len(spec[key]) != depth for key in ("channels_up", "channels_skip", "kernel_sizes")):
        raise InputError(
            "inversion spec: channels_down, channels_up, channels_skip and kernel_sizes must be "
            f"non-empty lists of one length (one entry per scale); got depth {depth}"
        )
    size = spec["noise_size"]  # the deepest scale must keep >= 2 x 2 pixels for BatchNorm on one image
    problems = {
        "output": spec["output"] in OUTPUTS,
        "kernel_sizes": all(k % 2 == 1 for k in spec["kernel_sizes"]),
        "noise_size": size % 2**depth == 0 and size >= max(spec["crop"], 2 ** (depth + 1)),
        "resize": spec["resize"] >= spec["crop"] >= 32,
        "iterations": spec["iterations"] >= 1,
    }
    wrong = [key for key, ok in problems.items() if not ok]
    if wrong:
        raise InputError(
            f"inversion spec: key {wrong[0]!r} is {spec[wrong[0]]!r}; expected output in {list(OUTPUTS)}, "
            f"odd kernel sizes, noise_size a multiple of 2**{depth} (one halving per scale), >= crop and "
            f">= {2 ** (depth + 1)}, "
            "resize >= crop >= 32 (ResNet's total stride), iterations >= 1"
        )
    bad = [label for label in checkpoints if not _LABEL.match(label)]
    if bad or not checkpoints or not images:
        raise InputError(
            f"inversion: need >= 1 checkpoint and >= 1 image, labels of [A-Za-z0-9._-] "
            f"(they name folders); got labels {list(checkpoints)}, {len(images)} images"
        )
