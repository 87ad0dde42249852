"""Semantic segmentation mIoU / mAcc / aAcc, numerically as mmsegmentation v0.x computes them.

mmseg's ``intersect_and_union`` + ``total_intersect_and_union`` + ``total_area_to_metrics``:

* pixels whose ground truth equals ``ignore_index`` are dropped before anything is counted;
* areas are class histograms over [0, num_classes - 1] (``torch.histc``), so a *prediction* outside that
  range still counts in its ground-truth class's pixel count (a miss) but adds to no class's
  prediction count; such predictions are kept here in an extra "out of range" confusion column;
* areas are summed over all images first (dataset-level IoU, not a mean of per-image IoUs);
* IoU = TP / (TP + FP + FN) and Acc = TP / (TP + FN) per class; 0/0 gives NaN, and mIoU / mAcc are
  ``np.nanmean`` over classes, so a class absent from both ground truth and prediction is left out of
  mIoU, and a class absent from the ground truth is left out of mAcc (its IoU is 0 if it was predicted);
* aAcc = sum TP / number of labelled pixels.

mmseg rounds its summary to two decimals (``np.round(x * 100, 2)``); values here are unrounded percent.
A ground-truth value outside 0..num_classes-1 other than ``ignore_index`` is rejected: mmseg would
silently count it in no class, which only ever means a label-mapping bug (e.g. Cityscapes ids, not
train ids).
"""

from __future__ import annotations

import numpy as np

from goodtransfer.io import InputError

# mmseg's CityscapesDataset.CLASSES: the 19 train ids in order.
CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
    "bicycle",
)  # fmt: skip


class SegmentationEvaluator:
    """Accumulates a confusion matrix over images; ``evaluate`` gives mmseg's metrics in percent."""

    def __init__(self, num_classes: int, ignore_index: int = 255, class_names: tuple[str, ...] | None = None):
        if num_classes < 1:
            raise InputError(f"num_classes: got {num_classes}; expected at least 1")
        if 0 <= ignore_index < num_classes:
            raise InputError(
                f"ignore_index: got {ignore_index}, a valid class id; expected outside 0..{num_classes - 1}"
            )
        if class_names is not None and len(class_names) != num_classes:
            raise InputError(
                f"class_names: got {len(class_names)} names; expected num_classes = {num_classes}"
            )
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = class_names or tuple(str(c) for c in range(num_classes))
        # rows: ground truth class; columns: predicted class, last column = prediction out of range
        self.confusion = np.zeros((num_classes, num_classes + 1), dtype=np.int64)

    def process(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Add one image's predicted and ground-truth label maps (same shape, integer values)."""
        pred, gt = np.asarray(pred), np.asarray(gt)
        if pred.shape != gt.shape:
            raise InputError(
                f"process: prediction shape {pred.shape} differs from ground truth shape {gt.shape}"
            )
        for name, arr in (("prediction", pred), ("ground truth", gt)):
            if not np.issubdtype(arr.dtype, np.integer):
                raise InputError(f"process: {name} has dtype {arr.dtype}; expected integer class ids")
        labelled = gt != self.ignore_index
        gt = gt[labelled].astype(np.int64)
        pred = pred[labelled].astype(np.int64)
        bad = (gt < 0) | (gt >= self.num_classes)
        if bad.any():
            raise InputError(
                f"process: ground truth value {int(gt[bad][0])} is neither a class id "
                f"0..{self.num_classes - 1} nor ignore_index {self.ignore_index}"
            )
        n = self.num_classes
        pred = np.where((pred < 0) | (pred >= n), n, pred)  # out-of-range predictions: extra column
        counts = np.bincount(gt * (n + 1) + pred, minlength=n * (n + 1))
        self.confusion += counts.reshape(n, n + 1)

    def evaluate(self) -> dict:
        """{"mIoU", "mAcc", "aAcc", "per_class_IoU", "per_class_Acc"} in percent; NaN = class left out."""
        tp = np.diag(self.confusion[:, : self.num_classes]).astype(np.float64)
        gt_count = self.confusion.sum(axis=1).astype(np.float64)
        pred_count = self.confusion[:, : self.num_classes].sum(axis=0).astype(np.float64)
        if gt_count.sum() == 0:
            raise InputError(
                "SegmentationEvaluator: no labelled pixels were processed; expected at least one"
            )
        union = gt_count + pred_count - tp
        with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 -> NaN marks a class mmseg leaves out
            iou = tp / union
            acc = tp / gt_count
        return {
            # some class has ground truth, so neither array is all NaN and nanmean is warning-free
            "mIoU": float(np.nanmean(iou) * 100),
            "mAcc": float(np.nanmean(acc) * 100),
            "aAcc": float(tp.sum() / gt_count.sum() * 100),
            "per_class_IoU": dict(zip(self.class_names, (float(v * 100) for v in iou), strict=True)),
            "per_class_Acc": dict(zip(self.class_names, (float(v * 100) for v in acc), strict=True)),
        }
