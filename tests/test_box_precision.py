"""Box geometry is fp32 under bf16 autocast: at the paper's 800 x 1333, the same deltas give the same boxes.

bf16 spacing is 4 px between 512 and 1024 and 8 px above, so a box decoded, pooled or written in bf16 moves
by pixels. The backbone's features and the heads' scores and deltas are pinned here (bf16-representable
values in the dtype autocast gives a layer); everything else is the project's detector. Any difference
between a bf16-autocast run and an fp32 run then comes from the geometry path alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from goodtransfer.io import read_yaml
from goodtransfer.models.backbone import build_resnet
from goodtransfer.transfer import c4, coco_instance
from goodtransfer.transfer.c4 import C4RoIPool, build_c4_detector
from tests.workflow import ROOT

PAPER_SIZES = {"min_size_train": [800], "min_size_test": 800, "max_size": 1333,
               "anchor_sizes": [32, 64, 128, 256, 512]}  # fmt: skip
CLASSES = 20
TOLERANCE_PX = 0.01


def _layer_dtype() -> torch.dtype:
    """The dtype a Linear or Conv2d layer returns here: autocast's, or fp32 without it."""
    return torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else torch.float32


def _pinned(shape: tuple[int, ...], seed: int, scale: float) -> torch.Tensor:
    """Seeded values that bf16 represents exactly, so that both runs see the very same numbers."""
    values = scale * torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    return values.bfloat16().to(_layer_dtype())


class PinnedBackbone(nn.Module):
    """res4 features pinned for the batch's shape (stride 16), as the C4 backbone would give them."""

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.out_channels = out_channels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        n, _, h, w = images.shape
        return _pinned((n, self.out_channels, -(-h // 16), -(-w // 16)), 6, 1.0)


class PinnedRPNHead(nn.Module):
    """The RPN head with its objectness logits and box deltas pinned for the feature map's shape."""

    def __init__(self, anchors_per_cell: int) -> None:
        super().__init__()
        self.anchors_per_cell = anchors_per_cell

    def forward(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        n, _, h, w = features[0].shape
        a = self.anchors_per_cell
        return [_pinned((n, a, h, w), 0, 2.0)], [_pinned((n, 4 * a, h, w), 1, 0.3)]


class PinnedBoxPredictor(nn.Module):
    """The box predictor with pinned class scores and class-specific deltas, one row per RoI."""

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rois = features.shape[0]
        return _pinned((rois, CLASSES + 1), 2, 3.0), _pinned((rois, 4 * (CLASSES + 1)), 3, 0.3)


def _voc_detector() -> nn.Module:
    spec = {**read_yaml(ROOT / "config.yaml")["downstream"]["voc07"], **PAPER_SIZES}
    return build_c4_detector(build_resnet("resnet10"), CLASSES, spec)


def _coco_mask_rcnn() -> nn.Module:
    spec = {**read_yaml(ROOT / "config.yaml")["downstream"]["coco"], **PAPER_SIZES}
    spec["roi_heads"] = {**spec["roi_heads"], "detections_per_image": 20}  # fewer 800 x 1333 masks to paste
    return coco_instance.build_c4_mask_rcnn(build_resnet("resnet10"), CLASSES, spec)


def _pinned_model(build: Callable[[], nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    model = build()
    model.backbone = PinnedBackbone(model.backbone.out_channels)
    model.rpn.head = PinnedRPNHead(model.rpn.anchor_generator.num_anchors_per_location()[0])
    model.roi_heads.box_predictor = PinnedBoxPredictor()
    return model


def _run(model: nn.Module, precision: torch.dtype, *inputs: Any) -> tuple[Any, dict[str, Any]]:
    """model(*inputs) under ``precision`` autocast (none for fp32), with the RPN's proposals and the RoI
    heads' training samples seen on the way."""
    seen: dict[str, Any] = {}
    rpn = model.rpn.register_forward_hook(lambda m, args, out: seen.update(proposals=out[0]))
    sample = model.roi_heads.select_training_samples

    def select(proposals: list[torch.Tensor], targets: Any) -> Any:
        seen["samples"] = sample(proposals, targets)
        return seen["samples"]

    model.roi_heads.select_training_samples = select
    torch.manual_seed(1)  # the same RoI and anchor sampling in both runs
    try:
        with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=precision != torch.float32):
            return model(*inputs), seen
    finally:
        rpn.remove()
        del model.roi_heads.select_training_samples


def _gap(bf16: list[torch.Tensor], fp32: list[torch.Tensor]) -> float:
    """Largest coordinate difference in px between two runs' boxes, image by image (as many boxes each)."""
    assert [b.shape for b in bf16] == [b.shape for b in fp32]
    return max(float((b.float() - f).abs().max()) for b, f in zip(bf16, fp32, strict=True))


def _fp32(boxes: list[torch.Tensor]) -> bool:
    return all(b.dtype == torch.float32 for b in boxes)


def _image() -> torch.Tensor:
    return torch.rand(3, 800, 1333, generator=torch.Generator().manual_seed(4))


@pytest.mark.parametrize("build", [_voc_detector, _coco_mask_rcnn], ids=["voc_faster_rcnn", "coco_mask_rcnn"])
def test_same_deltas_give_the_same_proposals_and_detections_under_bf16_autocast(build):
    model = _pinned_model(build).eval()
    fp32, fp32_seen = _run(model, torch.float32, [_image()])
    bf16, bf16_seen = _run(model, torch.bfloat16, [_image()])
    proposals = fp32_seen["proposals"][0]
    assert proposals[:, 2].max() > 1024 and proposals[:, 3].max() > 512  # where bf16 spacing is 8 and 4 px
    assert _gap(bf16_seen["proposals"], fp32_seen["proposals"]) <= TOLERANCE_PX
    assert _fp32(bf16_seen["proposals"])
    detections = [d["boxes"] for d in fp32]
    assert len(detections[0]) > 5 and detections[0][:, 2].max() > 1024  # written at the image's own size
    assert _gap([d["boxes"] for d in bf16], detections) <= TOLERANCE_PX
    assert _fp32([d["boxes"] for d in bf16])  # the detections written, not bf16 values widened later
    assert all(torch.equal(b["labels"], f["labels"]) for b, f in zip(bf16, fp32, strict=True))


def test_training_samples_and_regression_targets_keep_fp32_ground_truth_under_bf16_autocast():
    model = _pinned_model(_voc_detector).train()
    boxes = torch.tensor(
        [[503.3, 201.7, 811.9, 655.2], [1021.4, 390.6, 1329.7, 777.1], [12.2, 30.9, 95.6, 88.4]]
    )
    targets = [{"boxes": boxes, "labels": torch.tensor([3, 7, 12])}]
    _, fp32 = _run(model, torch.float32, [_image()], targets)
    _, bf16 = _run(model, torch.bfloat16, [_image()], targets)
    (fp32_rois,), _, (fp32_labels,), (fp32_targets,) = fp32["samples"]
    (bf16_rois,), _, (bf16_labels,), (bf16_targets,) = bf16["samples"]
    assert all(any(torch.equal(box, roi) for roi in bf16_rois) for box in boxes)  # gt boxes join, unrounded
    assert _gap([bf16_rois], [fp32_rois]) <= TOLERANCE_PX
    assert torch.equal(bf16_labels, fp32_labels)
    assert bf16_targets.dtype == torch.float32
    torch.testing.assert_close(bf16_targets, fp32_targets, rtol=0, atol=1e-5)


def test_roi_align_pools_at_the_fp32_boxes_under_bf16_autocast(monkeypatch):
    # A checkerboard of 16 px cells at stride 16: moving a box by a few pixels changes what it pools.
    rows, cols = torch.meshgrid(torch.arange(50), torch.arange(84), indexing="ij")
    feature = ((rows + cols) % 2).float().expand(1, 4, 50, 84).contiguous()
    g = torch.Generator().manual_seed(5)
    x0, y0 = 512 + 700 * torch.rand(64, generator=g), 200 + 500 * torch.rand(64, generator=g)
    w, h = 24 + 100 * torch.rand(64, generator=g), 24 + 60 * torch.rand(64, generator=g)
    boxes = torch.stack([x0, y0, (x0 + w).clamp(max=1333), y0 + h], dim=1)
    assert (boxes.bfloat16().float() - boxes).abs().max() > 2  # bf16 could not hold these boxes
    passed: list[torch.Tensor] = []

    def roi_align(
        features: torch.Tensor, rois: list[torch.Tensor], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        passed.extend(rois)
        return torchvision_roi_align(features, rois, *args, **kwargs)

    torchvision_roi_align = c4.roi_align
    monkeypatch.setattr(c4, "roi_align", roi_align)
    pool = C4RoIPool(14)
    fp32 = pool({"0": feature}, [boxes], [(800, 1333)])
    with torch.autocast("cpu", torch.bfloat16):
        bf16 = pool({"0": feature.bfloat16()}, [boxes], [(800, 1333)])  # res4 as the backbone gives it
    assert passed[-1].dtype == torch.float32 and torch.equal(passed[-1], boxes)
    assert float((bf16.float() - fp32).abs().max()) <= 0.01  # bf16 rounding of the pooled values only
    moved = pool({"0": feature}, [boxes.bfloat16().float()], [(800, 1333)])
    assert float((moved - fp32).abs().max()) > 0.1  # what the check would see if the boxes were rounded
