"""Faster R-CNN with the R50-C4 structure of detectron2/MoCo, built from torchvision parts.

stem..res4 (``conv1``..``layer3``) is the backbone at stride 16; the RPN runs on res4; RoIAlign
(aligned, 14x14) pools each proposal from res4; res5 (``layer4``, stride 2) plus one extra BatchNorm
(MoCo's ``Res5ROIHeadsExtraNorm``) and global average pooling form the box head. Nothing is frozen
(``FREEZE_AT: 0``) and every BatchNorm is trained. Box geometry (anchors, decoding, NMS, RoIAlign's boxes)
stays fp32 under autocast (``fp32_boxes``). The RPN's and the box head's losses, sampling, NMS and box
coding come from the spec's ``rpn`` and ``roi_heads`` sections (``rcnn_losses``: detectron2's or
torchvision's losses). Images are resized and batched as detectron2's (``c4_transform``: the spec's
``resize_rounding`` and ``size_divisibility``), anchors laid at the backbone's stride, 16.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.models.resnet import ResNet
from torchvision.ops import MultiScaleRoIAlign, roi_align

from goodtransfer.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from goodtransfer.io import InputError
from goodtransfer.transfer.c4_transform import C4Transform
from goodtransfer.transfer.fp32_boxes import (
    Fp32AnchorGenerator,
    Fp32BoxCoder,
    Fp32RoIHeads,
    Fp32RPN,
    without_autocast,
)
from goodtransfer.transfer.rcnn_losses import fast_rcnn_losses, rpn_losses

STRIDE = 16  # res4's: of the RPN's anchors and of RoIAlign


class C4Backbone(nn.Module):
    """stem + res2..res4 of a torchvision ResNet, named as in torchvision."""

    def __init__(self, resnet: ResNet) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2, self.layer3 = resnet.layer1, resnet.layer2, resnet.layer3
        self.out_channels = _stage_channels(resnet.layer3)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        return self.layer3(self.layer2(self.layer1(x)))


class C4RoIPool(MultiScaleRoIAlign):
    """Single-level RoIAlign on res4 (detectron2's ROIAlignV2: aligned=True, adaptive sampling).

    Subclasses MultiScaleRoIAlign only because torchvision's FasterRCNN checks the pooler's type. Pools in
    fp32 at the fp32 boxes (as the op's own autocast would, had the boxes not been cast to bf16 before it),
    and returns the features' dtype.
    """

    def __init__(self, resolution: int, stride: int = STRIDE) -> None:
        super().__init__(featmap_names=["0"], output_size=resolution, sampling_ratio=0)
        self.resolution, self.scale = resolution, 1.0 / stride

    def forward(self, features: dict[str, torch.Tensor], proposals: list[torch.Tensor], image_shapes: Any):
        del image_shapes
        feature = features["0"]
        boxes = [p.float() for p in proposals]
        with without_autocast(feature):
            pooled = roi_align(
                feature.float(), boxes, self.resolution, self.scale, sampling_ratio=0, aligned=True
            )
        return pooled.to(feature.dtype)


class Res5ExtraNormHead(nn.Module):
    """res5 on pooled RoIs, one extra BatchNorm after it (MoCo's Res5ROIHeadsExtraNorm), then mean pool."""

    def __init__(self, layer4: nn.Sequential) -> None:
        super().__init__()
        self.res5 = layer4
        self.norm = nn.BatchNorm2d(_stage_channels(layer4))
        self.out_channels = _stage_channels(layer4)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.norm(self.res5(pooled)).mean(dim=(2, 3))


def _stage_channels(stage: nn.Sequential) -> int:
    last = stage[-1]
    return (last.bn3 if hasattr(last, "bn3") else last.bn2).num_features


class ClassSpecificBoxPredictor(nn.Module):
    """detectron2's FastRCNNOutputLayers: K+1 scores and 4K class-specific box deltas (none for background).

    torchvision's RoIHeads indexes deltas as (K+1) x 4, so four zeros stand in for the background box,
    which neither its loss nor its post-processing ever uses.
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.cls_score = nn.Linear(in_channels, num_classes + 1)
        self.bbox_pred = nn.Linear(in_channels, 4 * num_classes)
        # detectron2's init: N(0, 0.01) scores, N(0, 0.001) deltas, zero bias.
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        for layer in (self.cls_score, self.bbox_pred):
            nn.init.constant_(layer.bias, 0.0)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = features.flatten(1)
        deltas = self.bbox_pred(features)
        return self.cls_score(features), torch.cat([deltas.new_zeros(deltas.shape[0], 4), deltas], dim=1)


class C4RPN(Fp32RPN):
    """The fp32 RPN with the spec's box-regression loss, normaliser and box-coder weights."""

    def __init__(
        self,
        rpn: RegionProposalNetwork,
        smooth_l1_beta: float,
        loss_normalizer: str,
        weights: Sequence[float],
    ) -> None:
        super().__init__(rpn)
        self.smooth_l1_beta, self.loss_normalizer = smooth_l1_beta, loss_normalizer
        self.box_coder = Fp32BoxCoder(tuple(weights), rpn.box_coder.bbox_xform_clip)

    def compute_loss(
        self,
        objectness: torch.Tensor,
        pred_bbox_deltas: torch.Tensor,
        labels: list[torch.Tensor],
        regression_targets: list[torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        positive, negative = self.fg_bg_sampler(labels)  # torchvision's draws, in torchvision's order
        positive = torch.where(torch.cat(positive))[0]
        sampled = torch.cat([positive, torch.where(torch.cat(negative))[0]])
        return rpn_losses(
            objectness.flatten(), pred_bbox_deltas, torch.cat(labels), torch.cat(regression_targets),
            positive, sampled, beta=self.smooth_l1_beta, normalizer=self.loss_normalizer,
            batch_size_per_image=self.fg_bg_sampler.batch_size_per_image, images=len(labels),
        )  # fmt: skip


class C4RoIHeads(Fp32RoIHeads):
    """The fp32 box RoI heads with the spec's box-regression loss (``rcnn_losses.fast_rcnn_losses``)."""

    def __init__(self, heads: RoIHeads, smooth_l1_beta: float) -> None:
        super().__init__(heads)
        self.smooth_l1_beta = smooth_l1_beta

    def box_losses(
        self,
        class_logits: torch.Tensor,
        box_regression: torch.Tensor,
        labels: list[torch.Tensor],
        regression_targets: list[torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        classification, box = fast_rcnn_losses(
            class_logits, box_regression, torch.cat(labels), torch.cat(regression_targets),
            beta=self.smooth_l1_beta,
        )  # fmt: skip
        return {"loss_classifier": classification, "loss_box_reg": box}

    def forward(self, features, proposals, image_shapes, targets=None):
        if self.training:
            proposals, _, labels, regression_targets = self.select_training_samples(proposals, targets)
        pooled = self.box_roi_pool(features, proposals, image_shapes)
        class_logits, box_regression = self.box_predictor(self.box_head(pooled))
        if self.training:
            return [], self.box_losses(class_logits, box_regression, labels, regression_targets)
        boxes, scores, labels = self.postprocess_detections(
            class_logits, box_regression, proposals, image_shapes
        )
        return [
            {"boxes": b, "labels": c, "scores": s} for b, c, s in zip(boxes, labels, scores, strict=True)
        ], {}


def _iou_range(spec: dict[str, Any], section: str) -> tuple[float, float]:
    """(below: negative, at or above: positive) from ``[low, high]`` (between: ignored) or ``[one]``."""
    thresholds = spec[section]["iou_thresholds"]
    if not 1 <= len(thresholds) <= 2 or thresholds[0] > thresholds[-1]:
        raise InputError(
            f"spec: {section}.iou_thresholds is {thresholds}; expected [low, high] with low <= high, or [one]"
        )
    return thresholds[0], thresholds[-1]


def build_c4_detector(resnet: ResNet, num_classes: int, spec: dict[str, Any]) -> FasterRCNN:
    """A Faster R-CNN C4 for ``num_classes`` foreground classes from an initialised ResNet."""
    anchors = Fp32AnchorGenerator(
        sizes=(tuple(spec["anchor_sizes"]),), aspect_ratios=(tuple(spec["aspect_ratios"]),), strides=(STRIDE,)
    )
    backbone = C4Backbone(resnet)
    head = Res5ExtraNormHead(copy.deepcopy(resnet.layer4))
    rpn = spec["rpn"]
    roi = spec["roi_heads"]
    (rpn_low, rpn_high), (roi_low, roi_high) = _iou_range(spec, "rpn"), _iou_range(spec, "roi_heads")
    model = FasterRCNN(
        backbone,
        num_classes=None,
        min_size=tuple(spec["min_size_train"]),
        max_size=spec["max_size"],
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
        rpn_anchor_generator=anchors,
        rpn_head=RPNHead(backbone.out_channels, anchors.num_anchors_per_location()[0]),
        rpn_pre_nms_top_n_train=rpn["pre_nms_topk_train"],
        rpn_pre_nms_top_n_test=rpn["pre_nms_topk_test"],
        rpn_post_nms_top_n_train=rpn["post_nms_topk_train"],
        rpn_post_nms_top_n_test=rpn["post_nms_topk_test"],
        rpn_nms_thresh=rpn["nms_thresh"],
        rpn_fg_iou_thresh=rpn_high,
        rpn_bg_iou_thresh=rpn_low,
        rpn_batch_size_per_image=rpn["batch_size_per_image"],
        rpn_positive_fraction=rpn["positive_fraction"],
        box_roi_pool=C4RoIPool(roi["pooler_resolution"]),
        box_head=head,
        box_predictor=ClassSpecificBoxPredictor(head.out_channels, num_classes),
        box_score_thresh=roi["score_thresh_test"],
        box_nms_thresh=roi["nms_thresh_test"],
        box_detections_per_img=roi["detections_per_image"],
        box_fg_iou_thresh=roi_high,
        box_bg_iou_thresh=roi_low,
        box_batch_size_per_image=roi["batch_size_per_image"],
        box_positive_fraction=roi["positive_fraction"],
        bbox_reg_weights=tuple(roi["bbox_reg_weights"]),
    )
    model.transform = C4Transform(
        tuple(spec["min_size_train"]), spec["max_size"], list(IMAGENET_MEAN), list(IMAGENET_STD),
        spec["size_divisibility"], spec["resize_rounding"],
    )  # fmt: skip
    model.rpn = C4RPN(model.rpn, rpn["smooth_l1_beta"], rpn["loss_normalizer"], rpn["bbox_reg_weights"])
    model.roi_heads = C4RoIHeads(model.roi_heads, roi["smooth_l1_beta"])
    return model


def backbone_keys_loaded(model: FasterRCNN) -> OrderedDict[str, str]:
    """Map each ResNet checkpoint key to where it lives in the detector (res5 keys live in the head)."""
    mapping: OrderedDict[str, str] = OrderedDict()
    for key in model.backbone.state_dict():
        mapping[key] = f"backbone.{key}"
    for key in model.roi_heads.box_head.res5.state_dict():
        mapping[f"layer4.{key}"] = f"roi_heads.box_head.res5.{key}"
    return mapping
