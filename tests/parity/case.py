"""The detectron2 parity case, shared by its generator (``make_detectron2_case.py``) and its test.

Both sides build our C4 detector from the paper preset's ``voc07`` section and fill it with the same
seeded random weights (``fill_random_weights``), so the case stores outputs only, never weights. The
detection stage sees the top ``DETECTION_PROPOSALS`` proposals and the box head samples
``ROI_BATCH_PER_IMAGE`` RoIs per image (MoCo: 1000 and 512), to keep the test within its CPU budget.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.models.detection import FasterRCNN

from goodtransfer import config as gtc
from goodtransfer.io import read_yaml
from goodtransfer.models.backbone import build_resnet
from goodtransfer.transfer.c4 import build_c4_detector

ROOT = Path(__file__).resolve().parents[2]
CASE_DIR = ROOT / "tests" / "data" / "detectron2_parity"
CASE_FILE = CASE_DIR / "case.pt"
SEED = 20210
# (height, width): short side 800 and long side under 1333, so neither side resizes; the last one not a
# multiple of 32 (VOC's 500 x 375 at 800), where torchvision's padding to 32 would differ from detectron2's
# none (C4) in res4's last ~4 columns, and its anchor stride would be 1067 // 67 = 15.
IMAGE_SIZES = ((800, 1056), (1216, 800), (800, 800), (800, 1067))
TRAIN_BATCH = (3, 2)  # images of the training-mode case, one batch (the second is padded to the first)
DETECTION_PROPOSALS = 100
# Added to the RPN's objectness bias for one more proposal record of image 0: logits of ~16, as a
# confident trained RPN gives (the random weights give +-2).
CONFIDENT_RPN_BIAS = 15.0
ROI_BATCH_PER_IMAGE = 64
NUM_CLASSES = 20


def parity_spec() -> dict[str, Any]:
    """The paper preset's VOC07 detection spec, in fp32 on the CPU, with the case's two reductions."""
    config = gtc.deep_merge(read_yaml(ROOT / "config.yaml"), read_yaml(ROOT / "presets" / "paper.yaml"))
    spec = gtc.downstream_spec(config, "voc07", "detectron2-parity")
    spec = {**spec, "precision": "fp32", "device": "cpu"}
    spec["roi_heads"] = {**spec["roi_heads"], "batch_size_per_image": ROI_BATCH_PER_IMAGE}
    return spec


def build_parity_detector(spec: dict[str, Any]) -> FasterRCNN:
    """Our R50-C4 detector for 20 classes with the case's weights, at the test size (800)."""
    model = build_c4_detector(build_resnet("resnet50"), NUM_CLASSES, spec)
    fill_random_weights(model, SEED)
    model.transform.min_size = (spec["min_size_test"],)  # the training case too: no random resize
    return model


def _draw(key: str, shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """A random value for one state-dict entry, scaled so that activations stay O(1) in eval mode."""

    def normal(std: float) -> torch.Tensor:
        return torch.randn(shape, generator=generator) * std

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(shape, generator=generator)

    if key.endswith("running_var"):
        return uniform(0.5, 1.5)
    if key.endswith("running_mean"):
        return normal(0.1)
    if len(shape) == 4:  # convolutions: He init (the RPN's 1x1 box deltas scaled down)
        fan_in = shape[1] * shape[2] * shape[3]
        return normal((2.0 / fan_in) ** 0.5 * (0.3 if "rpn.head.bbox_pred" in key else 1.0))
    if "box_predictor" in key:  # score logits of std ~1, so that some scores pass 0.05
        return normal({"cls_score.weight": 0.5, "bbox_pred.weight": 0.3}.get(key.split(".", 2)[-1], 0.01))
    if key.endswith("weight"):  # BatchNorm scales; the small ones keep residual growth low
        return uniform(0.2, 0.8)
    return normal(0.05)  # biases and BatchNorm shifts


@torch.no_grad()
def fill_random_weights(model: nn.Module, seed: int) -> None:
    """Every parameter and BatchNorm statistic from one seeded stream, key by key in sorted order, so that
    the values depend on the keys and shapes only (not on the order modules are built in)."""
    generator = torch.Generator().manual_seed(seed)
    state = model.state_dict()
    for key in sorted(state):
        if not key.endswith("num_batches_tracked"):
            state[key].copy_(_draw(key, state[key].shape, generator))


def weights_digest(model: nn.Module) -> str:
    """sha256 of every state-dict entry (names and bytes), in sorted order."""
    digest = hashlib.sha256()
    state = model.state_dict()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def image_path(index: int) -> Path:
    return CASE_DIR / f"image{index}.png"


def load_image(index: int) -> torch.Tensor:
    """The case's image ``index`` as uint8 RGB, C x H x W."""
    with Image.open(image_path(index)) as image:
        return torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)


def anchor_to_ours(num_sizes: int, num_ratios: int) -> torch.Tensor:
    """Position in our cell anchors of each of detectron2's: detectron2 orders them size-major
    (size s, ratio r at s * R + r), torchvision ratio-major (at r * S + s)."""
    sizes, ratios = torch.meshgrid(torch.arange(num_sizes), torch.arange(num_ratios), indexing="ij")
    return (ratios * num_sizes + sizes).flatten()


def anchor_indices_to_ours(indices: torch.Tensor, num_sizes: int, num_ratios: int) -> torch.Tensor:
    """detectron2's flat anchor indices (location-major, A cell anchors per location) in our order."""
    per_location = num_sizes * num_ratios
    cell = anchor_to_ours(num_sizes, num_ratios)
    return indices // per_location * per_location + cell[indices % per_location]
