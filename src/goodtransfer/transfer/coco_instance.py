"""COCO detection + instance segmentation: Mask R-CNN R50-C4 fine-tuning (MoCo's ``coco_R_50_C4``), COCO AP.

Model: ``c4.build_c4_detector`` (res4 backbone and RPN, 14x14 RoIAlign, res5 + extra BN, class-specific
boxes) plus the mask branch of detectron2's ``Res5ROIHeads``: the res5 maps of the positive RoIs also feed
``MaskRCNNConvUpsampleHead`` with NUM_CONV 0 (ConvTranspose2d 2048->256 k2 s2, ReLU, 1x1 conv to one mask
per class). Mask targets rasterise each gt polygon inside its proposal box (detectron2's polygon
``crop_and_resize``); the loss is BCE on the gt-class channel. At test time res5 runs again on the
detected boxes and the masks are pasted by bilinear sampling and thresholded at 0.5, as detectron2 does.
Training follows detectron2's solver (no weight decay on BatchNorm parameters) and MoCo's PreciseBN; the
RPN and box losses are detectron2's or torchvision's by key (``rcnn_losses``), and batches may hold one
orientation each (``aspect_ratio_grouping``). Images are resized and batched as ``c4_transform`` says
(``resize_rounding``, ``size_divisibility``); unlike detectron2, float tensors are resized (no antialiasing).

Spec keys: ``train_splits`` (e.g. [train2017]), ``test_split`` (val2017), ``max_iter``, ``ims_per_batch``,
``base_lr``, ``momentum``, ``weight_decay``, ``weight_decay_norm`` (SOLVER.WEIGHT_DECAY_NORM), ``steps``,
``warmup_iters``, ``warmup_factor``, ``min_size_train`` (shortest sides, one drawn per image),
``min_size_test``, ``max_size``, ``resize_rounding``, ``size_divisibility``, ``anchor_sizes``,
``aspect_ratios``, ``aspect_ratio_grouping`` (DATALOADER.ASPECT_RATIO_GROUPING), ``rpn`` and ``roi_heads``
(``$defs/rpn`` and ``$defs/roi_heads`` of the config schema: losses, sampling, NMS, box coding),
``mask_resolution`` (the head's output side, 2 * ceil(pooler_resolution / 2)), ``mask_conv_dim``,
``precise_bn_iters`` (TEST.PRECISE_BN.NUM_ITER; 0 turns it off), ``test_batch``, ``checkpoint_period``,
``log_period``, ``workers``, ``seed``, ``run``, ``device``, ``precision``, ``channels_last``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_util
from torch import nn
from torch.utils.data import Dataset
from torchvision.models.detection import FasterRCNN
from torchvision.models.resnet import ResNet
from torchvision.transforms.functional import pil_to_tensor

from goodtransfer.checkpoint import save_backbone
from goodtransfer.checkpoint_import import resnet_from_checkpoint
from goodtransfer.data.coco import CocoRecord, CocoSplit, load_split
from goodtransfer.data.images import open_rgb
from goodtransfer.device import Compute
from goodtransfer.evaluate.coco import evaluate_coco
from goodtransfer.finite import null_if_nan, require_steps
from goodtransfer.io import InputError, spec_hash
from goodtransfer.transfer.c4 import C4RoIHeads, backbone_keys_loaded, build_c4_detector
from goodtransfer.transfer.c4_transform import C4Transform
from goodtransfer.transfer.detection_training import detect, train_detector
from goodtransfer.transfer.tasks import DownstreamJob

METRICS = tuple(f"{kind}_{name}" for kind in ("bbox", "segm") for name in ("AP", "AP50", "AP75"))


# --------------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------------


def polygons_in_box(polygons: Sequence[np.ndarray], box: Sequence[float], size: int) -> np.ndarray:
    """detectron2's ``rasterize_polygons_within_box``: the polygons' union on a size x size grid over box."""
    x0, y0, x1, y1 = box
    scale = np.array([size / max(x1 - x0, 0.1), size / max(y1 - y0, 0.1)])
    shifted = [((p.reshape(-1, 2) - (x0, y0)) * scale).ravel() for p in polygons]
    return mask_util.decode(mask_util.merge(mask_util.frPyObjects(shifted, size, size)))


def paste_masks(
    masks: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int], chunk: int = 32
) -> torch.Tensor:
    """(N, M, M) probabilities in box frames -> (N, H, W) in the image (detectron2's ``_do_paste_mask``)."""
    h, w = size
    ys = torch.arange(h, device=masks.device, dtype=torch.float32) + 0.5
    xs = torch.arange(w, device=masks.device, dtype=torch.float32) + 0.5
    pasted = [masks.new_zeros((0, h, w), dtype=torch.float32)]
    for part, box in zip(masks.float().split(chunk), boxes.float().split(chunk), strict=True):
        x0, y0, x1, y1 = (v[:, None] for v in box.unbind(1))
        gx = ((xs[None] - x0) / (x1 - x0) * 2 - 1)[:, None, :].expand(-1, h, -1)
        gy = ((ys[None] - y0) / (y1 - y0) * 2 - 1)[:, :, None].expand(-1, -1, w)
        grid = torch.stack([gx, gy], dim=3)
        pasted.append(F.grid_sample(part[:, None], grid, align_corners=False)[:, 0])
    return torch.cat(pasted)


class PolygonTransform(C4Transform):
    """The C4 detectors' resize/normalise/batch, also scaling ``target["polygons"]`` and pasting masks."""

    def resize(self, image: torch.Tensor, target: dict[str, Any] | None = None):
        height, width = image.shape[-2:]
        image, target = super().resize(image, target)
        if target is not None and "polygons" in target:
            scale = np.array([image.shape[-1] / width, image.shape[-2] / height])
            target["polygons"] = [[(p.reshape(-1, 2) * scale).ravel() for p in i] for i in target["polygons"]]
        return image, target

    def postprocess(self, result, image_shapes, original_image_sizes):
        if self.training:
            return result
        masks = [r.pop("masks") for r in result]
        result = super().postprocess(result, image_shapes, original_image_sizes)
        for r, m, size in zip(result, masks, original_image_sizes, strict=True):
            r["masks"] = paste_masks(m[:, 0], r["boxes"], (int(size[0]), int(size[1])))[:, None]
        return result


class C4MaskHead(nn.Module):
    """detectron2's MaskRCNNConvUpsampleHead with NUM_CONV 0: deconv x2, ReLU, class-specific 1x1 logits."""

    def __init__(self, in_channels: int, conv_dim: int, num_classes: int) -> None:
        super().__init__()
        self.deconv = nn.ConvTranspose2d(in_channels, conv_dim, kernel_size=2, stride=2)
        self.predictor = nn.Conv2d(conv_dim, num_classes, kernel_size=1)
        nn.init.kaiming_normal_(self.deconv.weight, mode="fan_out", nonlinearity="relu")  # c2_msra_fill
        nn.init.normal_(self.predictor.weight, std=0.001)
        for layer in (self.deconv, self.predictor):
            nn.init.constant_(layer.bias, 0.0)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.predictor(F.relu(self.deconv(features)))


class Res5MaskRoIHeads(C4RoIHeads):
    """detectron2's Res5ROIHeads with a mask head: res5 runs once on the sampled RoIs for both heads."""

    def __init__(self, heads: C4RoIHeads, mask_head: C4MaskHead, mask_resolution: int) -> None:
        super().__init__(heads, heads.smooth_l1_beta)
        self.mask_head, self.mask_resolution = mask_head, mask_resolution

    def _res5(
        self, features: dict[str, torch.Tensor], boxes: list[torch.Tensor], shapes: Any
    ) -> torch.Tensor:
        pooled = self.box_roi_pool(features, boxes, shapes)
        return self.box_head.norm(self.box_head.res5(pooled))

    def forward(self, features, proposals, image_shapes, targets=None):
        if self.training:
            proposals, matched, labels, regression_targets = self.select_training_samples(proposals, targets)
        maps = self._res5(features, proposals, image_shapes)
        class_logits, box_regression = self.box_predictor(maps.mean(dim=(2, 3)))
        if self.training:
            losses = self.box_losses(class_logits, box_regression, labels, regression_targets)
            return [], {**losses, "loss_mask": self._mask_loss(maps, proposals, matched, labels, targets)}
        boxes, scores, labels = self.postprocess_detections(
            class_logits, box_regression, proposals, image_shapes
        )
        masks = self._predict_masks(features, boxes, labels, image_shapes)
        return [
            {"boxes": b, "labels": c, "scores": s, "masks": m}
            for b, c, s, m in zip(boxes, labels, scores, masks, strict=True)
        ], {}

    def _mask_loss(self, maps, proposals, matched, labels, targets) -> torch.Tensor:
        foreground = torch.cat(labels) > 0
        logits = self.mask_head(maps[foreground]).float()
        if logits.shape[0] == 0:
            return logits.sum() * 0
        wanted = []
        for boxes, gt_index, label, target in zip(proposals, matched, labels, targets, strict=True):
            fg = label > 0
            for box, gt in zip(boxes[fg].tolist(), gt_index[fg].tolist(), strict=True):
                wanted.append(polygons_in_box(target["polygons"][gt], box, self.mask_resolution))
        mask_targets = torch.from_numpy(np.stack(wanted)).to(logits.device, torch.float32)
        classes = torch.cat(labels)[foreground] - 1
        picked = logits[torch.arange(len(classes), device=logits.device), classes]
        return F.binary_cross_entropy_with_logits(picked, mask_targets)

    def _predict_masks(self, features, boxes, labels, image_shapes) -> list[torch.Tensor]:
        counts = [len(b) for b in boxes]
        if sum(counts) == 0:
            side = self.mask_resolution
            return [b.new_zeros((0, 1, side, side)) for b in boxes]
        logits = self.mask_head(self._res5(features, boxes, image_shapes)).float()
        classes = torch.cat(labels) - 1
        probs = logits[torch.arange(len(classes), device=logits.device), classes].sigmoid()
        return list(probs[:, None].split(counts))


def build_c4_mask_rcnn(resnet: ResNet, num_classes: int, spec: dict[str, Any]) -> FasterRCNN:
    """``c4.build_c4_detector`` with the mask branch: a torchvision Mask R-CNN in inputs and outputs."""
    resolution = 2 * math.ceil(spec["roi_heads"]["pooler_resolution"] / 2)  # res5 halves, the deconv doubles
    if spec["mask_resolution"] != resolution:
        raise InputError(
            f"spec: mask_resolution is {spec['mask_resolution']}; the C4 mask head gives {resolution} "
            f"for roi_heads.pooler_resolution {spec['roi_heads']['pooler_resolution']}"
        )
    model = build_c4_detector(resnet, num_classes, spec)
    old = model.transform
    model.transform = PolygonTransform(
        old.min_size, old.max_size, old.image_mean, old.image_std, spec["size_divisibility"],
        spec["resize_rounding"],
    )  # fmt: skip
    mask_head = C4MaskHead(model.roi_heads.box_head.out_channels, spec["mask_conv_dim"], num_classes)
    model.roi_heads = Res5MaskRoIHeads(model.roi_heads, mask_head, resolution)
    return model


def resnet_state_dict(model: FasterRCNN) -> dict[str, torch.Tensor]:
    """The detector's ResNet weights under torchvision keys: ``c4.backbone_keys_loaded`` inverted, so
    conv1..layer3 come from ``backbone.*`` and layer4 from the RoI head's ``res5``."""
    weights, where = model.state_dict(), backbone_keys_loaded(model)
    return {resnet: weights[inside].detach().clone() for resnet, inside in where.items()}


# --------------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------------


class CocoInstanceData(Dataset):
    """Images in [0, 1], targets {boxes, labels 1..K, polygons}; item (position, flip)."""

    def __init__(self, records: Sequence[CocoRecord]) -> None:
        self.records = list(records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, item: tuple[int, bool]) -> tuple[torch.Tensor, dict[str, Any], int]:
        position, flip = item
        record = self.records[position]
        image = open_rgb(record.image_path, exif_transpose=True)  # detectron2 applies the EXIF orientation
        if image.size != (record.width, record.height):
            raise InputError(
                f"{record.image_path}: image is {image.size[0]}x{image.size[1]}; the annotation file says "
                f"{record.width}x{record.height}"
            )
        pixels = pil_to_tensor(image).float().div_(255)
        boxes = torch.tensor([o.box for o in record.objects], dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([o.category + 1 for o in record.objects], dtype=torch.int64)
        polygons = [[p.copy() for p in o.polygons] for o in record.objects]
        if flip:
            pixels, w = pixels.flip(-1), record.width
            boxes = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], dim=1)
            for instance in polygons:
                for p in instance:
                    p[0::2] = w - p[0::2]
        return pixels, {"boxes": boxes, "labels": labels, "polygons": polygons}, record.image_id


# --------------------------------------------------------------------------------------------------------
# Training and evaluation
# --------------------------------------------------------------------------------------------------------


def _results(image_id: int, output: dict[str, torch.Tensor], category_ids: Sequence[int]) -> list[dict]:
    """One image's detections in COCO results format (xywh boxes, RLE masks, original category ids)."""
    boxes = output["boxes"].float().cpu().tolist()
    scores, labels = output["scores"].float().cpu().tolist(), output["labels"].cpu().tolist()
    masks = (output["masks"][:, 0] >= 0.5).cpu().numpy().astype(np.uint8)
    rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0))) if len(boxes) else []
    results = []
    for (x0, y0, x1, y1), score, label, rle in zip(boxes, scores, labels, rles, strict=True):
        segmentation = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
        results.append({"image_id": image_id, "category_id": category_ids[label - 1], "score": score,
                        "bbox": [x0, y0, x1 - x0, y1 - y0], "segmentation": segmentation})  # fmt: skip
    return results


@torch.no_grad()
def evaluate(model: nn.Module, split: CocoSplit, spec: dict[str, Any], compute: Compute) -> tuple[dict, list]:
    """Box and mask AP / AP50 / AP75 (and APs/m/l, None where undefined) and the raw COCO results."""
    results: list[dict] = []
    for image_id, output in detect(model, CocoInstanceData(split.records), spec, compute):
        results += _results(image_id, output, split.category_ids)
    metrics: dict[str, float] = {}
    for kind in ("bbox", "segm"):
        for name, value in evaluate_coco(split.json_path, results, kind).items():
            metrics[f"{kind}_{name}"] = value
    # pycocotools gives -1 (NaN here) for an area range without ground truth: null, and why.
    return null_if_nan(metrics, {}, "no ground truth in this area range (pycocotools gives -1)"), results


def _train_split(data_root: Path, splits: Sequence[str]) -> CocoSplit:
    parts = [load_split(data_root, s, training=True) for s in splits]
    for part in parts[1:]:
        if part.category_ids != parts[0].category_ids:
            raise InputError(f"{part.json_path}: categories differ from {parts[0].json_path}")
    return CocoSplit(parts[0].json_path, parts[0].category_ids, parts[0].category_names,
                     [r for p in parts for r in p.records])  # fmt: skip


def run(job: DownstreamJob) -> dict[str, Any]:
    """Fine-tune on ``train_splits``, evaluate on ``test_split``; the raw results go beside the metrics
    (coco_instances_results.json). With ``job.backbone_out``, the trained detector's ResNet is saved as a
    backbone checkpoint (Table 2's supervised COCO row: "the backbone is taken from the detection
    network")."""
    spec = job.spec
    train = _train_split(Path(job.data), spec["train_splits"])
    test = load_split(job.data, spec["test_split"], training=False)
    if test.category_ids != train.category_ids:
        raise InputError(f"{test.json_path}: categories differ from {train.json_path}")
    compute = Compute.from_spec(spec)
    resnet, source = resnet_from_checkpoint(job.checkpoint)
    model = compute.module(build_c4_mask_rcnn(resnet, len(train.category_ids), spec))
    data, fix = CocoInstanceData(train.records), f"list annotated images in {spec['train_splits']}"
    require_steps(
        len(data), run=spec["run"], images=len(data), batch=spec["ims_per_batch"], drop_last=False, fix=fix
    )
    start, _ = train_detector(model, data, spec, compute, job.resume_state(), job.log_dir)
    metrics, results = evaluate(model, test, spec, compute)
    files = dict([job.write_beside("coco_instances_results.json", results)])
    if job.backbone_out is not None:
        meta = {"method": "supervised-detection", "run": spec["run"], "config_hash": spec_hash(spec),
                "epoch": -1, "iterations": spec["max_iter"], "arch": source["arch"],
                "init": str(job.checkpoint)}  # fmt: skip
        save_backbone(job.backbone_out, resnet_state_dict(model), meta)
    return {
        **metrics, "iterations": spec["max_iter"], "resumed_from": start, "train_images": len(train.records),
        "test_images": len(test.records), "categories": len(train.category_ids), "files": files,
    }  # fmt: skip
