"""The C4 detectors' RPN and box-head losses: detectron2 0.6's L1 and normalisers by default (config.yaml),
torchvision's by key, on tiny examples computed by hand."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models.detection.roi_heads import fastrcnn_loss
from torchvision.models.detection.rpn import RegionProposalNetwork

from goodtransfer.io import InputError
from goodtransfer.models.backbone import build_resnet
from goodtransfer.transfer import c4, coco_instance
from goodtransfer.transfer.c4 import build_c4_detector
from tests.workflow import protocol_spec

CLASSES = 3
TORCHVISION = {"smooth_l1_beta": 1 / 9}


def _spec(protocol: str, rpn: dict[str, Any] | None = None, roi: dict[str, Any] | None = None) -> dict:
    spec = protocol_spec(protocol)
    return {**spec, "rpn": {**spec["rpn"], **(rpn or {})}, "roi_heads": {**spec["roi_heads"], **(roi or {})}}


def _voc(**sections: Any) -> nn.Module:
    return build_c4_detector(build_resnet("resnet10"), CLASSES, _spec("voc07", **sections))


def _coco(**sections: Any) -> nn.Module:
    return coco_instance.build_c4_mask_rcnn(build_resnet("resnet10"), CLASSES, _spec("coco", **sections))


def _bce(logit: float, label: float) -> float:
    return math.log1p(math.exp(logit)) - label * logit


# Two images of four anchors each; labels 1 positive, 0 negative, -1 ignored. With 128 anchors sampled per
# image at most, every labelled anchor is sampled (no random draw): 2 positives, 4 negatives.
RPN_LABELS = [torch.tensor([1.0, 0.0, -1.0, 0.0]), torch.tensor([0.0, 1.0, 0.0, -1.0])]
RPN_LOGITS = torch.tensor([2.0, -1.0, 9.0, 0.5, 0.0, 3.0, -2.0, 9.0])
RPN_TARGETS = [torch.zeros(4, 4), torch.zeros(4, 4)]
RPN_DELTAS = torch.full((8, 4), 5.0)  # ignored and negative anchors' deltas do not count
RPN_DELTAS[0] = torch.tensor([0.5, -0.25, 0.05, 0.0])  # |.| sums to 0.8
RPN_DELTAS[5] = torch.tensor([-1.0, 0.0, 0.1, 0.2])  # 1.3


def _rpn_bce() -> float:
    """BCE summed over the six sampled anchors (the ignored anchors' logit 9 does not count)."""
    return sum(_bce(x, y) for x, y in [(2.0, 1), (-1.0, 0), (0.5, 0), (0.0, 0), (3.0, 1), (-2.0, 0)])


def _rpn_losses(rpn: RegionProposalNetwork) -> tuple[float, float]:
    objectness, box = rpn.compute_loss(RPN_LOGITS[:, None], RPN_DELTAS, RPN_LABELS, RPN_TARGETS)
    return float(objectness), float(box)


def test_rpn_box_loss_is_l1_and_both_losses_are_sums_over_batch_size_per_image_times_images():
    rpn = _voc().rpn
    assert rpn.fg_bg_sampler.batch_size_per_image == 128
    objectness, box = _rpn_losses(rpn)
    assert box == pytest.approx((0.8 + 1.3) / (128 * 2), rel=1e-6)
    assert objectness == pytest.approx(_rpn_bce() / (128 * 2), rel=1e-6)


def test_rpn_keeps_torchvisions_losses_by_key():
    rpn = _voc(rpn={**TORCHVISION, "loss_normalizer": "sampled"}).rpn
    theirs = RegionProposalNetwork.compute_loss(rpn, RPN_LOGITS[:, None], RPN_DELTAS, RPN_LABELS, RPN_TARGETS)
    assert _rpn_losses(rpn) == tuple(float(v) for v in theirs)
    quadratic = 0.5 * 9 * (0.05**2 + 0.1**2)  # |x| < beta 1/9: x^2 / (2 beta)
    linear = (0.5 + 0.25 + 1.0 + 0.2) - 4 / 18  # |x| >= 1/9: |x| - beta / 2
    assert float(theirs[1]) == pytest.approx((quadratic + linear) / 6, rel=1e-6)  # 6 anchors sampled
    assert float(theirs[0]) == pytest.approx(_rpn_bce() / 6, rel=1e-6)


# Two images' sampled RoIs (3 + 2), labels 0 (background) .. 3; class-specific deltas (background's first).
ROI_LABELS = [torch.tensor([2, 0, 1]), torch.tensor([0, 3])]
ROI_TARGETS = [torch.tensor([[0.0] * 4, [9.0] * 4, [0.25, 0.25, -0.5, 0.0]]),
               torch.tensor([[9.0] * 4, [0.0] * 4])]  # fmt: skip
ROI_LOGITS = torch.zeros(5, CLASSES + 1)  # cross-entropy log(4) for every RoI
ROI_DELTAS = torch.full((5, CLASSES + 1, 4), 7.0)  # other classes' deltas do not count
ROI_DELTAS[0, 2] = torch.tensor([0.3, -0.2, 0.0, 0.5])  # |.| 1.0 against zeros
ROI_DELTAS[2, 1] = torch.zeros(4)  # 1.0 against (0.25, 0.25, -0.5, 0)
ROI_DELTAS[4, 3] = torch.ones(4)  # 4.0


@pytest.mark.parametrize("build", [_voc, _coco], ids=["voc_faster_rcnn", "coco_mask_rcnn"])
def test_box_head_loss_is_l1_over_foreground_divided_by_the_sampled_rois(build: Callable[..., nn.Module]):
    losses = build().roi_heads.box_losses(ROI_LOGITS, ROI_DELTAS.flatten(1), ROI_LABELS, ROI_TARGETS)
    assert float(losses["loss_box_reg"]) == pytest.approx((1.0 + 1.0 + 4.0) / 5, rel=1e-6)
    assert float(losses["loss_classifier"]) == pytest.approx(math.log(4), rel=1e-6)


def test_box_head_keeps_torchvisions_loss_by_key():
    heads = _voc(roi=TORCHVISION).roi_heads
    ours = heads.box_losses(ROI_LOGITS, ROI_DELTAS.flatten(1), ROI_LABELS, ROI_TARGETS)
    theirs = fastrcnn_loss(ROI_LOGITS, ROI_DELTAS.flatten(1), ROI_LABELS, ROI_TARGETS)
    assert (float(ours["loss_classifier"]), float(ours["loss_box_reg"])) == tuple(float(v) for v in theirs)
    assert float(theirs[1]) != pytest.approx(6.0 / 5)


@pytest.mark.parametrize("build", [_voc, _coco], ids=["voc_faster_rcnn", "coco_mask_rcnn"])
def test_training_step_computes_its_losses_with_the_specs_recipe(build, monkeypatch):
    seen: dict[str, dict[str, Any]] = {}
    for name in ("rpn_losses", "fast_rcnn_losses"):
        original = getattr(c4, name)

        def spy(*args: Any, _name: str = name, _original: Callable = original, **kwargs: Any) -> Any:
            seen[_name] = kwargs
            return _original(*args, **kwargs)

        monkeypatch.setattr(c4, name, spy)
    torch.manual_seed(0)
    model = build(rpn={"smooth_l1_beta": 0.25}, roi={"smooth_l1_beta": 0.5}).train()
    square = np.array([20.0, 20.0, 20.0, 60.0, 60.0, 60.0, 60.0, 20.0])
    target = {"boxes": torch.tensor([[20.0, 20.0, 60.0, 60.0]]), "labels": torch.tensor([2]),
              "polygons": [[square]]}  # fmt: skip
    losses = model([torch.rand(3, 80, 96)], [target])
    assert seen["rpn_losses"]["beta"] == 0.25 and seen["rpn_losses"]["normalizer"] == "batch_size_per_image"
    assert seen["fast_rcnn_losses"]["beta"] == 0.5
    assert {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"} <= set(losses)


def test_sampling_nms_and_box_coding_come_from_the_spec():
    model = _voc(
        rpn={"nms_thresh": 0.6, "positive_fraction": 0.4, "iou_thresholds": [0.2, 0.8],
             "bbox_reg_weights": [2.0, 2.0, 3.0, 3.0]},
        roi={"positive_fraction": 0.3, "iou_thresholds": [0.4, 0.6],
             "bbox_reg_weights": [8.0, 8.0, 4.0, 4.0]},
    )  # fmt: skip
    rpn, heads = model.rpn, model.roi_heads
    assert (rpn.nms_thresh, rpn.fg_bg_sampler.positive_fraction) == (0.6, 0.4)
    assert (rpn.proposal_matcher.low_threshold, rpn.proposal_matcher.high_threshold) == (0.2, 0.8)
    assert rpn.box_coder.weights == (2.0, 2.0, 3.0, 3.0)
    assert heads.fg_bg_sampler.positive_fraction == 0.3
    assert (heads.proposal_matcher.low_threshold, heads.proposal_matcher.high_threshold) == (0.4, 0.6)
    assert heads.box_coder.weights == (8.0, 8.0, 4.0, 4.0)
    with pytest.raises(InputError, match=r"rpn\.iou_thresholds is \[0\.7, 0\.3\]"):
        _voc(rpn={"iou_thresholds": [0.7, 0.3]})
