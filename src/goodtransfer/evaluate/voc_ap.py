"""PASCAL VOC detection AP, numerically as detectron2's ``PascalVOCDetectionEvaluator``.

detectron2's ``voc_eval`` (from py-faster-rcnn) is reproduced step by step:

* detections of a class are ranked by ``np.argsort(-confidence)`` (numpy's default, unstable sort, so
  ties keep whatever order numpy gives them, exactly as in detectron2);
* IoU uses the "+1" inclusive-pixel convention; a detection is compared with *every* ground-truth box
  of its image (difficult and already-matched ones included) and only the best one (first on ties)
  counts: IoU strictly above the threshold and that box difficult -> ignored (neither TP nor FP);
  not difficult and unmatched -> TP; already matched -> FP (duplicate); IoU not above -> FP;
* ``rec = tp / npos`` and ``prec = tp / max(tp + fp, eps)`` on cumulative counts, then ``voc_ap``.

A class with no detections gets AP 0. A class with no non-difficult ground truth (``npos == 0``)
gets ``rec = 0/0 = nan``, as in detectron2: the 11-point metric then gives 0.0 (every ``rec >= t``
is False) while the area metric gives NaN if the class has any detection (0.0 if none). Both still
count in the class mean, like detectron2.

``VocEvaluator.process`` also rounds like detectron2's text result files (score to 3 decimals, box
coordinates to 1 decimal), because those rounded values are what detectron2 ranks and matches.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from goodtransfer.data.voc import VocRecord, to_voc_box
from goodtransfer.io import InputError

# (image_id, score, (xmin, ymin, xmax, ymax) in VOC 1-based coordinates)
Detection = tuple[str, float, Sequence[float]]


def voc_ap(rec: np.ndarray, prec: np.ndarray, use_07_metric: bool) -> float:
    """AP from cumulative recall/precision: VOC07 11-point, or area under the precision envelope."""
    rec = np.asarray(rec, dtype=np.float64)
    prec = np.asarray(prec, dtype=np.float64)
    if rec.shape != prec.shape:
        raise InputError(f"voc_ap: rec has shape {rec.shape} but prec has {prec.shape}; expected equal")
    if use_07_metric:
        ap = 0.0
        # np.arange gives 0.30000000000000004, 0.6000000000000001, 0.7000000000000001: a recall of
        # exactly 0.3/0.6/0.7 does NOT reach those points. Kept on purpose to match detectron2.
        for t in np.arange(0.0, 1.1, 0.1):
            reached = rec >= t
            p = np.max(prec[reached]) if reached.any() else 0.0
            ap = ap + p / 11.0  # accumulate in detectron2's order so rounding matches
        return float(ap)
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # precision envelope (max is exact, order-free)
    steps = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


@dataclass(frozen=True)
class _ClassTruth:
    """Ground truth of one class: per-image boxes (float), difficult flags and first global GT index."""

    boxes: dict[str, np.ndarray]
    difficult: dict[str, np.ndarray]
    offset: dict[str, int]
    npos: int


@dataclass(frozen=True)
class _Ranked:
    """Detections of one class in rank order with their best-overlap ground truth (threshold-free)."""

    ovmax: list[float]
    gt_index: list[int]  # global index of the best-overlap GT box, -1 when the image has none
    gt_difficult: list[bool]


def _class_truth(records: Sequence[VocRecord], classname: str) -> _ClassTruth:
    boxes: dict[str, np.ndarray] = {}
    difficult: dict[str, np.ndarray] = {}
    offset: dict[str, int] = {}
    total = npos = 0
    for record in records:
        if record.image_id in boxes:
            # detectron2 would count this image's ground truth twice in npos.
            raise InputError(f"records: image id {record.image_id!r} appears twice; expected unique ids")
        objs = [obj for obj in record.objects if obj.name == classname]
        boxes[record.image_id] = np.array([obj.bbox for obj in objs], dtype=np.float64).reshape(-1, 4)
        difficult[record.image_id] = np.array([obj.difficult for obj in objs], dtype=bool)
        offset[record.image_id] = total
        total += len(objs)
        npos += sum(not obj.difficult for obj in objs)
    return _ClassTruth(boxes, difficult, offset, npos)


def _overlaps(dets: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(n, g) IoU with inclusive pixels, written with detectron2's operation order for equal rounding."""
    bb = dets[:, None, :]
    ixmin = np.maximum(gt[:, 0], bb[..., 0])
    iymin = np.maximum(gt[:, 1], bb[..., 1])
    ixmax = np.minimum(gt[:, 2], bb[..., 2])
    iymax = np.minimum(gt[:, 3], bb[..., 3])
    iw = np.maximum(ixmax - ixmin + 1.0, 0.0)
    ih = np.maximum(iymax - iymin + 1.0, 0.0)
    inters = iw * ih
    uni = (
        (bb[..., 2] - bb[..., 0] + 1.0) * (bb[..., 3] - bb[..., 1] + 1.0)
        + (gt[:, 2] - gt[:, 0] + 1.0) * (gt[:, 3] - gt[:, 1] + 1.0)
        - inters
    )
    return inters / uni


def _detection_arrays(detections: Sequence[Detection], classname: str) -> tuple[list[str], np.ndarray]:
    image_ids, rows = [], []
    for k, (image_id, score, box) in enumerate(detections):
        if len(box) != 4:
            raise InputError(f"detections[{classname!r}][{k}]: box has {len(box)} values; expected 4")
        image_ids.append(image_id)
        rows.append([float(score), *(float(v) for v in box)])
    return image_ids, np.array(rows, dtype=np.float64).reshape(-1, 5)


def _rank(detections: Sequence[Detection], truth: _ClassTruth, classname: str) -> _Ranked:
    image_ids, table = _detection_arrays(detections, classname)
    order = np.argsort(-table[:, 0])  # same call as detectron2: tie order must match it
    boxes = table[order, 1:]
    ranked_ids = [image_ids[i] for i in order]
    ovmax = np.full(len(ranked_ids), -np.inf)
    gt_index = np.full(len(ranked_ids), -1, dtype=np.int64)
    gt_difficult = np.zeros(len(ranked_ids), dtype=bool)
    by_image: dict[str, list[int]] = defaultdict(list)
    for d, image_id in enumerate(ranked_ids):
        by_image[image_id].append(d)
    for image_id, idx in by_image.items():
        if image_id not in truth.boxes:
            raise InputError(f"detections[{classname!r}]: image {image_id!r} is not in the evaluated records")
        gt = truth.boxes[image_id]
        if gt.size == 0:
            continue
        overlaps = _overlaps(boxes[idx], gt)
        best = np.argmax(overlaps, axis=1)  # first maximum on ties, like detectron2's np.argmax
        ovmax[idx] = np.max(overlaps, axis=1)
        gt_index[idx] = truth.offset[image_id] + best
        gt_difficult[idx] = truth.difficult[image_id][best]
    return _Ranked(ovmax.tolist(), gt_index.tolist(), gt_difficult.tolist())


def _ap_at(ranked: _Ranked, npos: int, iou_thresh: float, use_07_metric: bool) -> float:
    nd = len(ranked.ovmax)
    tp = np.zeros(nd)
    fp = np.zeros(nd)
    matched: set[int] = set()
    for d in range(nd):
        if ranked.ovmax[d] > iou_thresh:
            if ranked.gt_difficult[d]:
                continue  # matched a difficult box: neither TP nor FP
            if ranked.gt_index[d] in matched:
                fp[d] = 1.0
            else:
                tp[d] = 1.0
                matched.add(ranked.gt_index[d])
        else:
            fp[d] = 1.0
    fp = np.cumsum(fp)
    tp = np.cumsum(tp)
    with np.errstate(divide="ignore", invalid="ignore"):  # npos == 0 gives nan recall, as detectron2
        rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return voc_ap(rec, prec, use_07_metric)


def eval_class(
    detections: Sequence[Detection],
    records: Sequence[VocRecord],
    classname: str,
    iou_thresh: float,
    use_07_metric: bool,
) -> float:
    """AP (0..1) of one class at one IoU threshold; detections carry VOC 1-based boxes."""
    truth = _class_truth(records, classname)
    return _ap_at(_rank(detections, truth, classname), truth.npos, iou_thresh, use_07_metric)


def evaluate_detections(
    detections: Mapping[str, Sequence[Detection]],
    records: Sequence[VocRecord],
    classes: Sequence[str],
    use_07_metric: bool = True,
) -> dict:
    """AP, AP50, AP75 (percent) over IoU 0.50:0.95 and per-class AP50, as detectron2 reports them."""
    unknown = sorted(set(detections) - set(classes))
    if unknown:
        raise InputError(f"detections: classes {unknown} are not in the evaluated class list {list(classes)}")
    aps: dict[int, list[float]] = defaultdict(list)
    for classname in classes:
        truth = _class_truth(records, classname)
        # Ranking and overlaps do not depend on the threshold, so they are computed once per class.
        ranked = _rank(detections.get(classname, ()), truth, classname)
        for thresh in range(50, 100, 5):
            aps[thresh].append(_ap_at(ranked, truth.npos, thresh / 100.0, use_07_metric) * 100)
    map_by_iou = {iou: np.mean(values) for iou, values in aps.items()}
    return {
        "AP": float(np.mean(list(map_by_iou.values()))),
        "AP50": float(map_by_iou[50]),
        "AP75": float(map_by_iou[75]),
        "per_class_AP50": {name: float(ap) for name, ap in zip(classes, aps[50], strict=True)},
    }


class VocEvaluator:
    """Accumulates model outputs per image and evaluates them like detectron2's VOC evaluator."""

    def __init__(
        self, records: Sequence[VocRecord], classes: Sequence[str], use_07_metric: bool = True
    ) -> None:
        self.records = list(records)
        self.classes = tuple(classes)
        self.use_07_metric = use_07_metric
        self._image_ids = {record.image_id for record in self.records}
        self.reset()

    def reset(self) -> None:
        self._predictions: dict[str, list[Detection]] = defaultdict(list)

    def process(self, image_id: str, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> None:
        """Add one image's detections: (N, 4) boxes in 0-based model coordinates, scores, class indices."""
        boxes = np.asarray(boxes)
        scores_list = np.asarray(scores).reshape(-1).tolist()
        labels_list = np.asarray(labels).reshape(-1).tolist()
        if boxes.ndim != 2 or boxes.shape[1] != 4 or not len(boxes) == len(scores_list) == len(labels_list):
            raise InputError(
                f"process({image_id!r}): boxes {boxes.shape}, {len(scores_list)} scores, "
                f"{len(labels_list)} labels; expected (N, 4) boxes with N scores and N labels"
            )
        if image_id not in self._image_ids:
            raise InputError(f"process({image_id!r}): image is not in the evaluated records")
        for box, score, label in zip(boxes, scores_list, labels_list, strict=True):
            if not 0 <= int(label) < len(self.classes):
                raise InputError(f"process({image_id!r}): label {label}; expected 0..{len(self.classes) - 1}")
            # detectron2 writes "{score:.3f} {x:.1f} ..." and re-reads it: rank and match rounded values.
            voc_box = tuple(float(f"{v:.1f}") for v in to_voc_box(box))
            self._predictions[self.classes[int(label)]].append((image_id, float(f"{score:.3f}"), voc_box))

    def evaluate(self) -> dict:
        return evaluate_detections(self._predictions, self.records, self.classes, self.use_07_metric)
