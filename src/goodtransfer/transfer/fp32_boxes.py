"""Box geometry in fp32 whatever the autocast: anchors, box coding, proposal and detection filtering.

Under bf16 autocast torchvision's detection parts compute boxes in the features' dtype: anchors take the
feature map's dtype, the box coder decodes in the deltas' dtype, and the RoI heads cast the ground truth
to the proposals'. bf16 spacing is 4 px between 512 and 1024 and 8 px above, so at the paper's 800 x 1333
boxes move by pixels. These subclasses leave the network (convolutions, heads) under autocast and take
only the geometry out of it. Three changes bring torchvision's geometry to detectron2's, in any precision:
anchors are not rounded to whole pixels, they are laid at the backbone's stride (not one derived from the
padded image size), and proposals are filtered in fp64 so that NMS ranks them by
objectness as detectron2 does (tests/test_detectron2_parity.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork


def without_autocast(tensor: torch.Tensor) -> torch.autocast:
    """A region where ``tensor``'s device computes in the inputs' own dtypes."""
    return torch.autocast(tensor.device.type, enabled=False)


class Fp32BoxCoder(BoxCoder):
    """Encodes and decodes in fp32: deltas and reference boxes are cast up, never the boxes down."""

    def decode_single(self, rel_codes: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        with without_autocast(rel_codes):
            return super().decode_single(rel_codes.float(), boxes.float())

    def encode_single(self, reference_boxes: torch.Tensor, proposals: torch.Tensor) -> torch.Tensor:
        with without_autocast(reference_boxes):
            return super().encode_single(reference_boxes.float(), proposals.float())


class Fp32AnchorGenerator(AnchorGenerator):
    """Anchors in fp32 (torchvision gives them the feature map's dtype, bf16 under autocast), and not
    rounded to whole pixels: detectron2's DefaultAnchorGenerator keeps width sqrt(size^2 / ratio) and
    height ratio x width (45.25 x 22.63 at size 32, ratio 0.5, where torchvision's rounding gives 46 x 22).
    torchvision's order stays (ratio-major, then size): the RPN head's output channels follow it.
    Anchors are laid at the backbone's ``strides`` (one per feature level), as detectron2 does: torchvision
    derives them as padded image size // feature size, which is 15 for a 1067-wide image unpadded (67 res4
    columns) instead of 16.
    """

    def __init__(
        self,
        sizes: tuple[tuple[int, ...], ...],
        aspect_ratios: tuple[tuple[float, ...], ...],
        strides: Sequence[int],
    ) -> None:
        super().__init__(sizes, aspect_ratios)
        if len(strides) != len(sizes):
            raise ValueError(f"{len(strides)} anchor strides for {len(sizes)} feature levels")
        self.strides = tuple(strides)

    def forward(self, image_list: ImageList, feature_maps: list[torch.Tensor]) -> list[torch.Tensor]:
        device = feature_maps[0].device
        grid_sizes = [list(feature.shape[-2:]) for feature in feature_maps]
        strides = [[torch.tensor(stride, dtype=torch.int64, device=device)] * 2 for stride in self.strides]
        self.set_cell_anchors(torch.float32, device)
        anchors = torch.cat(self.grid_anchors(grid_sizes, strides))
        return [anchors for _ in image_list.image_sizes]

    def generate_anchors(
        self,
        scales: Sequence[int],
        aspect_ratios: Sequence[float],
        dtype: torch.dtype = torch.float32,
        device: torch.device = torch.device("cpu"),  # noqa: B008 (torchvision's signature)
    ) -> torch.Tensor:
        anchors = []
        for ratio in aspect_ratios:
            for size in scales:
                width = math.sqrt(size * size / ratio)  # in double, as detectron2 computes them
                anchors.append([-width / 2, -ratio * width / 2, width / 2, ratio * width / 2])
        return torch.tensor(anchors, dtype=dtype, device=device)

    def set_cell_anchors(self, dtype: torch.dtype, device: torch.device) -> None:
        del dtype
        super().set_cell_anchors(torch.float32, device)


class Fp32RPN(RegionProposalNetwork):
    """torchvision's RPN with fp32 decoding, and proposal filtering (clipping, scores, NMS) in fp64.

    torchvision's NMS ranks sigmoid probabilities, detectron2's the logits. In fp32 the probabilities of
    logits above ~9 tie or swap (their spacing near 1 is 6e-8); in fp64 they keep the logits' order, so
    the same proposals survive NMS as in detectron2. The boxes come back in fp32 unchanged.
    """

    def __init__(self, rpn: RegionProposalNetwork) -> None:
        super().__init__(
            rpn.anchor_generator, rpn.head, rpn.proposal_matcher.high_threshold,
            rpn.proposal_matcher.low_threshold, rpn.fg_bg_sampler.batch_size_per_image,
            rpn.fg_bg_sampler.positive_fraction, rpn._pre_nms_top_n, rpn._post_nms_top_n, rpn.nms_thresh,
            rpn.score_thresh,
        )  # fmt: skip
        self.box_coder = Fp32BoxCoder(rpn.box_coder.weights, rpn.box_coder.bbox_xform_clip)

    def filter_proposals(
        self,
        proposals: torch.Tensor,
        objectness: torch.Tensor,
        image_shapes: list[tuple[int, int]],
        num_anchors_per_level: list[int],
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        with without_autocast(proposals):
            boxes, scores = super().filter_proposals(
                proposals.double(), objectness.double(), image_shapes, num_anchors_per_level
            )
        return [b.float() for b in boxes], [s.float() for s in scores]


class Fp32RoIHeads(RoIHeads):
    """torchvision's box RoI heads with fp32 box coding and fp32 detections (decoding, scores, NMS).

    Proposals from ``Fp32RPN`` are fp32, so the ground truth that ``select_training_samples`` casts to
    their dtype stays fp32 too.
    """

    def __init__(self, heads: RoIHeads) -> None:
        super().__init__(
            heads.box_roi_pool, heads.box_head, heads.box_predictor,
            heads.proposal_matcher.high_threshold, heads.proposal_matcher.low_threshold,
            heads.fg_bg_sampler.batch_size_per_image, heads.fg_bg_sampler.positive_fraction,
            heads.box_coder.weights, heads.score_thresh, heads.nms_thresh, heads.detections_per_img,
        )  # fmt: skip
        self.box_coder = Fp32BoxCoder(heads.box_coder.weights, heads.box_coder.bbox_xform_clip)

    def postprocess_detections(
        self,
        class_logits: torch.Tensor,
        box_regression: torch.Tensor,
        proposals: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        with without_autocast(class_logits):
            return super().postprocess_detections(
                class_logits.float(), box_regression.float(), [p.float() for p in proposals], image_shapes
            )
