"""The RPN's and the box head's losses, detectron2 0.6's or torchvision's by key.

Box regression: detectron2's ``MODEL.RPN.SMOOTH_L1_BETA`` and ``MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA`` are 0.0,
a plain L1 (fvcore's ``smooth_l1_loss`` below beta 1e-5); torchvision's smooth L1 has beta 1/9 in both.
RPN normaliser (``rpn.loss_normalizer``): detectron2 divides the objectness BCE and the box loss, each
summed over the sampled anchors, by ``BATCH_SIZE_PER_IMAGE`` x images (``batch_size_per_image``, even when
fewer anchors were sampled); torchvision by the number of anchors sampled (``sampled``). The box head's
losses are normalised alike in both: cross-entropy averaged over the sampled RoIs, box loss summed over
the foreground RoIs' class-specific deltas and divided by the number of sampled RoIs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

L1_BELOW = 1e-5  # fvcore's smooth_l1_loss is a plain L1 for a beta under this
RPN_NORMALIZERS = ("batch_size_per_image", "sampled")


def box_regression_loss(deltas: torch.Tensor, targets: torch.Tensor, beta: float) -> torch.Tensor:
    """Smooth L1 with ``beta`` (L1 for beta < 1e-5), summed, in fp32 whatever the deltas' dtype."""
    deltas, targets = deltas.float(), targets.float()
    if beta < L1_BELOW:
        return (deltas - targets).abs().sum()
    return F.smooth_l1_loss(deltas, targets, beta=beta, reduction="sum")


def rpn_losses(
    objectness: torch.Tensor,
    deltas: torch.Tensor,
    labels: torch.Tensor,
    targets: torch.Tensor,
    positive: torch.Tensor,
    sampled: torch.Tensor,
    *,
    beta: float,
    normalizer: str,
    batch_size_per_image: int,
    images: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(objectness loss, box loss) of the anchors ``sampled`` (indices; ``positive`` among them) out of all
    images' anchors: ``objectness`` logits (A,), ``deltas`` and ``targets`` (A, 4), ``labels`` 1/0 (A,)."""
    logits, truth = objectness[sampled].float(), labels[sampled].float()
    box = box_regression_loss(deltas[positive], targets[positive], beta)
    if normalizer == "sampled":  # torchvision
        return F.binary_cross_entropy_with_logits(logits, truth), box / sampled.numel()
    if normalizer != "batch_size_per_image":
        raise ValueError(f"rpn.loss_normalizer: {normalizer!r}; expected one of {RPN_NORMALIZERS}")
    count = batch_size_per_image * images  # detectron2: loss_rpn_cls and loss_rpn_loc
    return F.binary_cross_entropy_with_logits(logits, truth, reduction="sum") / count, box / count


def fast_rcnn_losses(
    class_logits: torch.Tensor,
    box_regression: torch.Tensor,
    labels: torch.Tensor,
    targets: torch.Tensor,
    *,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(classification, box) losses of the sampled RoIs: ``class_logits`` (R, K+1), class-specific
    ``box_regression`` (R, 4(K+1)), ``labels`` 0..K (0 background) and ``targets`` (R, 4)."""
    classification = F.cross_entropy(class_logits, labels)
    foreground = torch.where(labels > 0)[0]
    chosen = box_regression.reshape(len(labels), -1, 4)[foreground, labels[foreground]]
    box = box_regression_loss(chosen, targets[foreground], beta)
    return classification, box / max(labels.numel(), 1)
