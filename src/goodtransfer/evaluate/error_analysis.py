"""False-positive types of VOC detections, as Hoiem, Chodpathumwan & Dai (ECCV 2012) count them.

Follows their ``detectionAnalysis`` toolbox (``matchDetectionsWithGroundTruth.m``,
``analyzeFalsePositives.m``, ``setDatasetParameters.m``), which the paper used for Figs 1 and 7:

* boxes in VOC pixels, IoU with the "+1" inclusive-pixel areas; difficult objects are kept as ground truth;
* detections of a class are ranked by score; a detection is correct when its best *unmatched* same-class
  box has IoU >= 0.5 (greedy by score); if that box is difficult it is ignored (neither TP nor FP) and
  the box is used up; every other detection is a false positive (FP);
* an FP is **Loc** if it has IoU >= 0.1 with any same-class box (poor localisation, or a duplicate of an
  already-matched box); else **Sim** if IoU >= 0.1 with a box of a similar class; else **Oth** if IoU >=
  0.1 with a box of any other class; else **BG**. ``sim_rule="max_overlap"`` instead decides Sim/Oth by
  the class of the best-overlapping other object, as the toolbox's pie-chart counts (``confuse_count``) do.

The counts cover the top of the ranking: ``count="detections"`` takes the ``top_n`` best detections and
classifies their FPs (the toolbox's pie charts and the paper's Fig. 7, with ``top_n`` = the number of
non-difficult objects of the class); ``count="false_positives"`` takes the ``top_n`` best FPs. The trend
(Fig. 1) takes the top 25, 50, ... FPs; ``toolbox_cut=True`` finds those cuts as ``displayFPTrend.m``
does, with BG counted twice in the running total, which the paper's Fig. 1 shows (24 FPs at "25").
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

from goodtransfer.data.voc import VocRecord, load_split, to_voc_box
from goodtransfer.io import InputError, read_json, write_json

FP_TYPES: tuple[str, ...] = ("Loc", "Sim", "Oth", "BG")
STRONG_IOU, WEAK_IOU = 0.5, 0.1
TREND_POINTS: tuple[int, ...] = (25, 50, 100, 200, 400)

# setDatasetParameters.m: any two classes sharing a group are similar. The toolbox's animal group
# includes person, and aeroplane/bird form their own group; {bicycle, motorbike} repeats a vehicle pair.
SIMILAR_GROUPS: tuple[frozenset[str], ...] = (
    frozenset({"bird", "cat", "cow", "dog", "horse", "person", "sheep"}),
    frozenset({"aeroplane", "bicycle", "boat", "bus", "car", "motorbike", "train"}),
    frozenset({"bicycle", "motorbike"}),
    frozenset({"chair", "diningtable", "sofa"}),
    frozenset({"aeroplane", "bird"}),
)

SimRule = Literal["priority", "max_overlap"]
Count = Literal["detections", "false_positives"]


@cache
def similar_classes(name: str) -> frozenset[str]:
    """Classes the toolbox counts as similar to ``name`` (not including itself)."""
    return frozenset().union(*(group for group in SIMILAR_GROUPS if name in group)) - {name}


def _iou(boxes: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(n, g) IoU of VOC boxes with inclusive-pixel areas, as the toolbox and the VOC devkit compute it."""
    iw = np.minimum(boxes[:, None, 2], gt[None, :, 2]) - np.maximum(boxes[:, None, 0], gt[None, :, 0]) + 1
    ih = np.minimum(boxes[:, None, 3], gt[None, :, 3]) - np.maximum(boxes[:, None, 1], gt[None, :, 1]) + 1
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    area_d = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    area_g = (gt[:, 2] - gt[:, 0] + 1) * (gt[:, 3] - gt[:, 1] + 1)
    return inter / (area_d[:, None] + area_g[None, :] - inter)


def _fp_type(
    overlaps: np.ndarray, names: Sequence[str], classname: str, order: Sequence[str], rule: SimRule
) -> str:
    """Loc/Sim/Oth/BG of one FP from its IoU with every object of its image."""
    best: dict[str, float] = {}
    for iou, name in zip(overlaps.tolist(), names, strict=True):
        if iou >= WEAK_IOU:
            best[name] = max(best.get(name, 0.0), iou)
    if classname in best:
        return "Loc"
    if not best:
        return "BG"
    similar = similar_classes(classname)
    if rule == "max_overlap":  # first class in class order wins a tie, like MATLAB's max
        top = max(sorted(best, key=order.index), key=lambda name: best[name])
        return "Sim" if top in similar else "Oth"
    return "Sim" if similar & best.keys() else "Oth"


def _label_image(
    boxes: np.ndarray, record: VocRecord, classname: str, order: Sequence[str], rule: SimRule
) -> list[str]:
    """Labels of one image's detections of one class, given in rank order: TP, ignored or an FP type."""
    names = [obj.name for obj in record.objects]
    if not names:
        return ["BG"] * len(boxes)
    overlaps = _iou(boxes, np.array([obj.bbox for obj in record.objects], dtype=np.float64))
    own = [k for k, name in enumerate(names) if name == classname]
    used: set[int] = set()
    labels = []
    for row in overlaps:
        free = [k for k in own if k not in used and row[k] >= STRONG_IOU]
        if free:
            k = max(free, key=lambda j: row[j])  # max() keeps the first of equal overlaps
            used.add(k)
            labels.append("ignored" if record.objects[k].difficult else "TP")
        else:
            labels.append(_fp_type(row, names, classname, order, rule))
    return labels


def rank_labels(
    detections: Sequence[Mapping[str, Any]],
    records: Sequence[VocRecord],
    classname: str,
    classes: Sequence[str],
    sim_rule: SimRule = "priority",
) -> list[str]:
    """Labels of ``classname``'s detections from highest to lowest score (ties keep input order)."""
    by_id = {record.image_id: record for record in records}
    mine = [det for det in detections if det["class"] == classname]
    order = sorted(range(len(mine)), key=lambda i: -float(mine[i]["score"]))
    per_image: dict[str, list[int]] = defaultdict(list)
    for rank, i in enumerate(order):
        per_image[mine[i]["image_id"]].append(rank)
    labels = [""] * len(mine)
    for image_id, ranks in per_image.items():
        if image_id not in by_id:
            raise InputError(f"detections of {classname!r}: image {image_id!r} is not in the evaluated split")
        boxes = np.array([to_voc_box(mine[order[r]]["box"]) for r in ranks], dtype=np.float64)
        image_labels = _label_image(boxes, by_id[image_id], classname, classes, sim_rule)
        for rank, label in zip(ranks, image_labels, strict=True):
            labels[rank] = label
    return labels


def _tally(fps: Sequence[str]) -> dict[str, Any]:
    counts = {kind: sum(label == kind for label in fps) for kind in FP_TYPES}
    total = sum(counts.values())
    fractions = {kind: (counts[kind] / total if total else None) for kind in FP_TYPES}
    return {"false_positives": total, "counts": counts, "fractions": fractions}


def top_false_positives(labels: Sequence[str], top_n: int, count: Count = "detections") -> list[str]:
    """FP labels among the ``top_n`` best detections, or the ``top_n`` best FPs."""
    if top_n < 0:
        raise InputError(f"top_n: got {top_n}; expected a count >= 0")
    if count == "detections":
        return [label for label in labels[:top_n] if label in FP_TYPES]
    if count == "false_positives":
        return [label for label in labels if label in FP_TYPES][:top_n]
    raise InputError(f"count: got {count!r}; expected 'detections' or 'false_positives'")


def fp_trend(labels: Sequence[str], points: Sequence[int] = TREND_POINTS, toolbox_cut: bool = False) -> dict:
    """FP-type counts and fractions among the top ``n`` FPs for each ``n`` in ``points`` (Fig. 1)."""
    fps = [label for label in labels if label in FP_TYPES]
    cuts = []
    for n in points:
        if toolbox_cut:  # first prefix whose Loc + Sim + Oth + 2 * BG reaches n (displayFPTrend.m)
            running = np.cumsum([2 if label == "BG" else 1 for label in fps])
            reached = np.flatnonzero(running >= n)
            cuts.append(int(reached[0]) + 1 if reached.size else 0)
        else:
            cuts.append(min(n, len(fps)))
    tallies = [_tally(fps[:cut]) for cut in cuts]
    return {
        "points": list(points),
        "false_positives": [t["false_positives"] for t in tallies],
        "counts": {kind: [t["counts"][kind] for t in tallies] for kind in FP_TYPES},
        "fractions": {kind: [t["fractions"][kind] for t in tallies] for kind in FP_TYPES},
    }


def analyse(
    detections: Sequence[Mapping[str, Any]],
    records: Sequence[VocRecord],
    classes: Sequence[str],
    top_n: int | None = None,
    count: Count = "detections",
    sim_rule: SimRule = "priority",
    trend_points: Sequence[int] = TREND_POINTS,
    toolbox_cut: bool = False,
    all_classes: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Per-class and summary FP breakdown; ``top_n=None`` means the class's non-difficult object count.

    ``all_classes`` (default ``classes``) orders the classes for ``sim_rule="max_overlap"`` ties.
    """
    order = list(all_classes or classes)
    by_class: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for det in detections:
        by_class[det["class"]].append(det)
    per_class = {}
    for name in classes:
        labels = rank_labels(by_class[name], records, name, order, sim_rule)
        npos = sum(obj.name == name and not obj.difficult for record in records for obj in record.objects)
        cut = npos if top_n is None else top_n
        per_class[name] = {
            "npos": npos,
            "detections": len(labels),
            "true_positives": labels.count("TP"),
            "top_n": cut,
            **_tally(top_false_positives(labels, cut, count)),
            "trend": fp_trend(labels, trend_points, toolbox_cut),
        }
    return {
        "method": {
            "top_n": "npos" if top_n is None else top_n,
            "count": count,
            "sim_rule": sim_rule,
            "toolbox_cut": toolbox_cut,
            "iou_correct": STRONG_IOU,
            "iou_overlap": WEAK_IOU,
            "similar_groups": [sorted(group) for group in SIMILAR_GROUPS],
        },
        "classes": per_class,
        "summary": _summary(per_class),
    }


def _summary(per_class: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Pooled counts over classes, and the mean of per-class fractions (the paper's "mean Loc share")."""
    pooled = {kind: sum(c["counts"][kind] for c in per_class.values()) for kind in FP_TYPES}
    total = sum(pooled.values())
    scored = [c for c in per_class.values() if c["false_positives"]]
    return {
        "false_positives": total,
        "counts": pooled,
        "fractions": {kind: (pooled[kind] / total if total else None) for kind in FP_TYPES},
        "mean_fractions": {
            kind: (float(np.mean([c["fractions"][kind] for c in scored])) if scored else None)
            for kind in FP_TYPES
        },
        "classes_with_false_positives": len(scored),
    }


def _checked(payload: Any, path: Path) -> tuple[list[str], list[dict]]:
    """The ``classes`` and ``detections`` of a detections.json file, each field checked."""
    if not isinstance(payload, dict) or not {"classes", "detections"} <= payload.keys():
        raise InputError(f"{path}: expected an object with 'classes' and 'detections'")
    classes = list(payload["classes"])
    for k, det in enumerate(payload["detections"]):
        missing = {"image_id", "class", "score", "box"} - set(det)
        if missing:
            raise InputError(f"{path}: detections[{k}] lacks {sorted(missing)}")
        if det["class"] not in classes:
            raise InputError(f"{path}: detections[{k}].class {det['class']!r} is not in 'classes'")
        if len(det["box"]) != 4 or not all(math.isfinite(float(v)) for v in det["box"]):
            raise InputError(f"{path}: detections[{k}].box is {det['box']!r}; expected 4 finite numbers")
        if not math.isfinite(float(det["score"])):
            raise InputError(f"{path}: detections[{k}].score is {det['score']!r}; expected a finite number")
    return classes, payload["detections"]


def analyse_run(
    detections_json: Path,
    voc_root: Path,
    split: str,
    classes: Sequence[str] | None = None,
    top_n: int | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Analyse ``results/voc07/<run>/detections.json`` against ``split`` of ``voc_root``.

    ``classes`` defaults to every class of the file; ground truth of all its classes is always read,
    since Sim and Oth need the other objects. ``options`` go to ``analyse``.
    """
    all_classes, detections = _checked(read_json(detections_json), Path(detections_json))
    chosen = list(classes or all_classes)
    unknown = [name for name in chosen if name not in all_classes]
    if unknown:
        raise InputError(f"classes: {unknown} are not classes of {detections_json} ({all_classes})")
    records = load_split(voc_root, split, all_classes)
    result = analyse(detections, records, chosen, top_n, all_classes=all_classes, **options)
    result["source"] = {"detections": str(detections_json), "voc_root": str(voc_root), "split": split}
    return result


def write_analysis(
    out_json: Path,
    detections_json: Path,
    voc_root: Path,
    split: str,
    classes: Sequence[str] | None = None,
    top_n: int | None = None,
    **options: Any,
) -> dict[str, Any]:
    """``analyse_run`` and write its result to ``out_json`` atomically; returns the result."""
    result = analyse_run(detections_json, voc_root, split, classes, top_n, **options)
    write_json(out_json, result)
    return result
