"""Our C4 detector against detectron2 0.6's R50-C4 (MoCo's VOC config) on identical inputs.

tests/data/detectron2_parity/ holds what detectron2 gave (tests/parity/make_detectron2_case.py, the only
part that needs detectron2) for seeded random weights that this test regenerates in our layout
(tests/parity/case.py) and the same PNG pixels, fed at 800 px so that neither side resizes.

Proposals and detections: both sides sort them by score after NMS, but scores equal to within float
noise (1e-6) may come out in either order, so each of detectron2's, in its order, is paired with the
unpaired one of ours that overlaps it most (IoU-greedy; detections of the same class only); counts must
be equal. Errors are relative, with a floor of 1 for box coordinates (pixels) and logits and none for
probabilities and scores (all above 0.05): at most 1e-3 for inference outputs and 1e-4 for losses.
Losses use the anchors and RoIs detectron2 sampled (our samplers replay them): no sampling randomness.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler
from torchvision.ops import box_iou

from tests.parity.case import (
    CASE_FILE,
    CONFIDENT_RPN_BIAS,
    DETECTION_PROPOSALS,
    IMAGE_SIZES,
    NUM_CLASSES,
    SEED,
    anchor_indices_to_ours,
    build_parity_detector,
    load_image,
    parity_spec,
    weights_digest,
)

INFERENCE_RTOL = 1e-3
LOSS_RTOL = 1e-4


def _relative_error(ours: torch.Tensor, theirs: torch.Tensor, floor: float) -> float:
    assert ours.shape == theirs.shape, f"{tuple(ours.shape)} here, {tuple(theirs.shape)} in detectron2"
    if ours.numel() == 0:
        return 0.0
    return float(((ours - theirs).abs() / theirs.abs().clamp(min=floor)).max())


@contextmanager
def _recording(owner: Any, name: str) -> Iterator[list[tuple[tuple[Any, ...], Any]]]:
    """Record (arguments, result) of each call of ``owner.name`` within the block."""
    method, calls = getattr(owner, name), []

    def record(*args: Any) -> Any:
        calls.append((args, method(*args)))
        return calls[-1][1]

    setattr(owner, name, record)
    try:
        yield calls
    finally:
        delattr(owner, name)


class ReplayedSampler(BalancedPositiveNegativeSampler):
    """Returns fixed positive/negative masks (detectron2's draws) and keeps the labels it was given."""

    def __init__(self, like: BalancedPositiveNegativeSampler, masks: list[tuple[torch.Tensor, ...]]) -> None:
        super().__init__(like.batch_size_per_image, like.positive_fraction)
        self.masks, self.labels = masks, []

    def __call__(self, matched_idxs: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        self.labels = matched_idxs
        assert [len(m) for m in matched_idxs] == [len(pos) for pos, _ in self.masks]
        return [pos for pos, _ in self.masks], [neg for _, neg in self.masks]


def _mask(length: int, indices: torch.Tensor) -> torch.Tensor:
    mask = torch.zeros(length, dtype=torch.uint8)
    mask[indices] = 1
    return mask


@pytest.fixture(scope="module")
def case() -> dict[str, Any]:
    return torch.load(CASE_FILE, weights_only=True)


@pytest.fixture(scope="module")
def model() -> FasterRCNN:
    return build_parity_detector(parity_spec()).eval()


def _features(model: FasterRCNN, images: Any) -> OrderedDict[str, torch.Tensor]:
    return OrderedDict([("0", model.backbone(images.tensors))])


def _proposals(model: FasterRCNN, images: Any, features: Any) -> dict[str, torch.Tensor]:
    with _recording(model.rpn, "filter_proposals") as calls:
        model.rpn(images, features)
    ((_, (boxes, probabilities)),) = calls
    return {"proposal_boxes": boxes[0], "probabilities": probabilities[0]}


@pytest.fixture(scope="module")
def inference(model: FasterRCNN) -> list[dict[str, Any]]:
    """Per image: the RPN's proposals and probabilities, then detections from the top proposals; image 0's
    also with the confident RPN."""
    results = []
    with torch.no_grad():
        for index in range(len(IMAGE_SIZES)):
            image = load_image(index).float() / 255
            images, _ = model.transform([image])
            features = _features(model, images)
            proposals = _proposals(model, images, features)
            top = [proposals["proposal_boxes"][:DETECTION_PROPOSALS]]
            found, _ = model.roi_heads(features, top, images.image_sizes)
            (found,) = model.transform.postprocess(found, images.image_sizes, [tuple(image.shape[1:])])
            results.append({**proposals, **found})
            if index == 0:
                bias = model.rpn.head.cls_logits.bias
                original = bias.clone()
                bias.add_(CONFIDENT_RPN_BIAS)
                try:
                    results[0]["confident"] = _proposals(model, images, features)
                finally:
                    bias.copy_(original)
    return results


@pytest.fixture(scope="module")
def training(model: FasterRCNN, case: dict[str, Any]) -> dict[str, Any]:
    """Training-mode losses of the case's batch on detectron2's sampled anchors and RoIs, with what our
    losses were computed from."""
    recorded = case["training"]
    model = copy.deepcopy(model).train()  # training-mode BatchNorm would update the shared running stats
    images_in = [load_image(index).float() / 255 for index in recorded["images"]]
    targets_in = [
        {"boxes": boxes, "labels": classes + 1}  # ours: 0 is background
        for boxes, classes in zip(recorded["gt_boxes"], recorded["gt_classes"], strict=True)
    ]
    rpn, heads = model.rpn, model.roi_heads
    with torch.no_grad():
        images, targets = model.transform(images_in, targets_in)
        features = _features(model, images)
        anchors = features["0"].shape[-2] * features["0"].shape[-1] * rpn.head.cls_logits.out_channels
        sizes, ratios = len(rpn.anchor_generator.sizes[0]), len(rpn.anchor_generator.aspect_ratios[0])
        rpn.fg_bg_sampler = ReplayedSampler(
            rpn.fg_bg_sampler,
            [
                tuple(_mask(anchors, anchor_indices_to_ours(chosen, sizes, ratios)) for chosen in pair)
                for pair in zip(recorded["rpn_positive"], recorded["rpn_negative"], strict=True)
            ],
        )
        with _recording(rpn, "compute_loss") as rpn_calls:
            _, rpn_losses = rpn(images, features, targets)
        rois = recorded["roi_boxes"]
        appended = [len(t["boxes"]) for t in targets]  # our RoI heads append the ground truth at the end
        heads.fg_bg_sampler = ReplayedSampler(
            heads.fg_bg_sampler,
            [
                (
                    F.pad(classes != NUM_CLASSES, (0, extra)).to(torch.uint8),
                    F.pad(classes == NUM_CLASSES, (0, extra)).to(torch.uint8),
                )
                for classes, extra in zip(recorded["roi_classes"], appended, strict=True)
            ],
        )
        with _recording(heads, "select_training_samples") as roi_calls:
            predictions: list[Any] = []
            hook = heads.box_predictor.register_forward_hook(lambda *args: predictions.append(args[2]))
            _, roi_losses = heads(features, rois, images.image_sizes, targets)
            hook.remove()
    ((rpn_args, _),) = rpn_calls
    ((_, (_, _, roi_labels, roi_targets)),) = roi_calls
    return {
        "losses": {**rpn_losses, **roi_losses},
        "rpn_labels": rpn.fg_bg_sampler.labels,
        "rpn_masks": rpn.fg_bg_sampler.masks,
        "rpn_inputs": rpn_args,  # objectness, deltas, labels, regression targets
        "rpn_batch_per_image": rpn.fg_bg_sampler.batch_size_per_image,
        "roi_labels": roi_labels,
        "roi_predictions": predictions[0],  # class logits, class-specific deltas (background first)
        "roi_targets": roi_targets,
    }


def test_case_weights_regenerate_bit_for_bit(model: FasterRCNN, case: dict[str, Any]) -> None:
    # Everything below assumes both sides ran these exact weights.
    assert case["meta"]["seed"] == SEED
    assert weights_digest(model) == case["meta"]["weights_sha256"], (
        "the seeded weights differ from the ones the case was made with (a new torch random stream, or a "
        "changed detector layout): remake the case with tests/parity/make_detectron2_case.py"
    )


def _pairing(
    ours: torch.Tensor, theirs: torch.Tensor, same_group: torch.Tensor | None = None
) -> torch.Tensor:
    """For each of detectron2's boxes in order, the unpaired one of ours that overlaps it most (its index)."""
    assert len(ours) == len(theirs), f"{len(ours)} boxes here, {len(theirs)} in detectron2"
    overlap = box_iou(theirs, ours)
    if same_group is not None:
        overlap[~same_group] = -1.0
    pairs = []
    for row in overlap:
        pairs.append(int(row.argmax()))
        overlap[:, pairs[-1]] = -2.0
    return torch.tensor(pairs, dtype=torch.int64)


def _assert_same_proposals(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Boxes and probabilities (ours keeps no logits) agree; returns the pairing."""
    assert len(theirs["proposal_boxes"]) == 1000
    pair = _pairing(ours["proposal_boxes"], theirs["proposal_boxes"])
    assert _relative_error(ours["proposal_boxes"][pair], theirs["proposal_boxes"], 1.0) < INFERENCE_RTOL
    probabilities = torch.sigmoid(theirs["objectness_logits"].double())
    assert _relative_error(ours["probabilities"][pair].double(), probabilities, 0.0) < INFERENCE_RTOL
    return pair


def test_rpn_proposals_match_detectron2(inference: list[dict[str, Any]], case: dict[str, Any]) -> None:
    for ours, theirs in zip(inference, case["inference"], strict=True):
        pair = _assert_same_proposals(ours, theirs)
        logits = torch.logit(ours["probabilities"].double()).float()  # exact enough below |logit| ~ 15
        assert _relative_error(logits[pair], theirs["objectness_logits"], 1.0) < INFERENCE_RTOL


def test_confident_rpn_keeps_detectron2s_proposals(
    inference: list[dict[str, Any]], case: dict[str, Any]
) -> None:
    # Logits ~16: fp32 sigmoid probabilities tie there and NMS kept other boxes (all 1000 differed).
    assert case["meta"]["confident_rpn_bias"] == CONFIDENT_RPN_BIAS
    _assert_same_proposals(inference[0]["confident"], case["confident_proposals"])


def test_detections_match_detectron2(inference: list[dict[str, Any]], case: dict[str, Any]) -> None:
    for ours, theirs in zip(inference, case["inference"], strict=True):
        labels = theirs["classes"] + 1  # ours: 0 is background
        pair = _pairing(ours["boxes"], theirs["boxes"], labels[:, None] == ours["labels"][None, :])
        assert torch.equal(ours["labels"][pair], labels)
        assert _relative_error(ours["boxes"][pair], theirs["boxes"], 1.0) < INFERENCE_RTOL
        assert _relative_error(ours["scores"][pair], theirs["scores"], 0.0) < INFERENCE_RTOL


def test_replayed_anchors_and_rois_get_detectron2s_labels(
    training: dict[str, Any], case: dict[str, Any]
) -> None:
    for labels, (positive, negative) in zip(training["rpn_labels"], training["rpn_masks"], strict=True):
        assert torch.all(labels[positive.bool()] == 1) and torch.all(labels[negative.bool()] == 0)
    for labels, theirs in zip(training["roi_labels"], case["training"]["roi_classes"], strict=True):
        assert torch.equal(labels, torch.where(theirs == NUM_CLASSES, 0, theirs + 1))


def _close(ours: torch.Tensor, theirs: float) -> bool:
    return abs(float(ours) - theirs) <= LOSS_RTOL * abs(theirs)


def test_classification_losses_match_detectron2(training: dict[str, Any], case: dict[str, Any]) -> None:
    ours, theirs = training["losses"], case["training"]["losses"]
    assert _close(ours["loss_objectness"], theirs["loss_rpn_cls"])
    assert _close(ours["loss_classifier"], theirs["loss_cls"])


def _l1_box_losses(training: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """detectron2's box losses from our tensors: L1 (SMOOTH_L1_BETA 0), the RPN's summed over positive
    anchors / (256 x images), the box head's over foreground RoIs' own-class deltas / sampled RoIs."""
    _, deltas, _, targets = training["rpn_inputs"]
    positive = torch.cat([pos for pos, _ in training["rpn_masks"]]).bool()
    normalizer = training["rpn_batch_per_image"] * len(training["rpn_masks"])
    rpn = (deltas[positive] - torch.cat(targets)[positive]).abs().sum() / normalizer
    labels, targets = torch.cat(training["roi_labels"]), torch.cat(training["roi_targets"])
    _, box_deltas = training["roi_predictions"]
    foreground = torch.where(labels > 0)[0]
    own = box_deltas.reshape(len(labels), -1, 4)[foreground, labels[foreground]]
    return rpn, (own - targets[foreground]).abs().sum() / len(labels)


def test_box_losses_in_detectron2s_form_match_from_our_deltas_and_targets(
    training: dict[str, Any], case: dict[str, Any]
) -> None:
    # Our predictions, box coding and matching agree: only the loss function differs (next test).
    rpn, box = _l1_box_losses(training)
    theirs = case["training"]["losses"]
    assert _close(rpn, theirs["loss_rpn_loc"]) and _close(box, theirs["loss_box_reg"])


# detectron2's box losses are L1 (SMOOTH_L1_BETA 0); without these keys ours are torchvision's smooth L1
# (beta 1/9). rpn.loss_normalizer (same branch) makes no difference here: 256 anchors sampled per image.
MISSING_LOSS_KEYS = [
    f"{head}.smooth_l1_beta" for head in ("rpn", "roi_heads") if "smooth_l1_beta" not in parity_spec()[head]
]


@pytest.mark.xfail(
    bool(MISSING_LOSS_KEYS),
    strict=True,
    reason=f"the spec has no {MISSING_LOSS_KEYS} (branch c4-recipe): our box losses are smooth L1, beta 1/9",
)
def test_box_regression_losses_match_detectron2(training: dict[str, Any], case: dict[str, Any]) -> None:
    ours, theirs = training["losses"], case["training"]["losses"]
    assert _close(ours["loss_rpn_box_reg"], theirs["loss_rpn_loc"])
    assert _close(ours["loss_box_reg"], theirs["loss_box_reg"])
