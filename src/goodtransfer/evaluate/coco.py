"""COCO box / mask AP through pycocotools, reported as detectron2's ``COCOEvaluator`` reports it.

* ``AP, AP50, AP75, APs, APm, APl`` are ``COCOeval.stats[0:6] * 100``; a stat pycocotools gives as -1
  (no ground truth in that area range) becomes NaN, as detectron2 does.
* For ``segm`` the detections' ``bbox`` is dropped before ``loadRes`` (as detectron2 does): otherwise
  pycocotools takes the box area, not the mask area, as the detection's area for the small/medium/large
  split.
* No detections at all gives 0 for every metric: pycocotools' ``loadRes`` fails on an empty list.
* pycocotools writes into the ground-truth and result dicts it is given (``segmentation`` -> RLE,
  ``ignore``, ``area``, ``id``), so both are deep-copied; its progress prints are silenced.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from goodtransfer.io import InputError, read_json

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
IouType = Literal["bbox", "segm"]


def evaluate_coco(
    gt_json: Path | str | dict, detections: Sequence[dict], iou_type: IouType = "bbox"
) -> dict[str, float]:
    """{"AP", "AP50", "AP75", "APs", "APm", "APl"} in percent for COCO-format results."""
    if iou_type not in ("bbox", "segm"):
        raise InputError(f"iou_type: got {iou_type!r}; expected 'bbox' or 'segm'")
    source = str(gt_json) if isinstance(gt_json, str | Path) else "gt_json"
    gt = read_json(gt_json) if isinstance(gt_json, str | Path) else copy.deepcopy(gt_json)
    _check_ground_truth(gt, source, iou_type)
    results = _checked_detections(detections, gt, source, iou_type)
    if not results:
        return dict.fromkeys(METRICS, 0.0)
    stats = _run_cocoeval(gt, results, iou_type)
    return {name: float(s * 100) if s >= 0 else float("nan") for name, s in zip(METRICS, stats, strict=True)}


def _run_cocoeval(gt: dict, results: list[dict], iou_type: IouType) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress and the summary table
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(results), iou_type)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return np.asarray(coco_eval.stats[: len(METRICS)])


def _check_ground_truth(gt: Any, source: str, iou_type: IouType) -> None:
    if not isinstance(gt, dict):
        raise InputError(f"{source}: top level is {type(gt).__name__}; expected a COCO dict")
    for key in ("images", "annotations", "categories"):
        if not isinstance(gt.get(key), list):
            raise InputError(f"{source}: field {key!r} is missing or not a list")
    image_fields = ("id", "height", "width") if iou_type == "segm" else ("id",)  # polygons need the size
    _check_fields(gt["images"], image_fields, f"{source}: images")
    _check_fields(gt["categories"], ("id",), f"{source}: categories")
    shape_field = "bbox" if iou_type == "bbox" else "segmentation"
    ann_fields = ("id", "image_id", "category_id", "area", "iscrowd", shape_field)
    _check_fields(gt["annotations"], ann_fields, f"{source}: annotations")
    image_ids = {img["id"] for img in gt["images"]}
    for k, ann in enumerate(gt["annotations"]):
        if ann["image_id"] not in image_ids:
            raise InputError(f"{source}: annotations[{k}] has image_id {ann['image_id']!r}, not in images")


def _check_fields(items: list, fields: Sequence[str], where: str) -> None:
    for k, item in enumerate(items):
        missing = [f for f in fields if not isinstance(item, dict) or f not in item]
        if missing:
            raise InputError(f"{where}[{k}]: missing field(s) {missing}; expected {list(fields)}")


def _checked_detections(detections: Sequence[dict], gt: dict, source: str, iou_type: IouType) -> list[dict]:
    """Copies of the detections (bbox dropped for segm), each checked against the ground truth."""
    image_ids = {img["id"] for img in gt["images"]}
    category_ids = {cat["id"] for cat in gt["categories"]}
    shape_field = "bbox" if iou_type == "bbox" else "segmentation"
    _check_fields(list(detections), ("image_id", "category_id", "score", shape_field), "detections")
    results = []
    for k, det in enumerate(detections):
        if det["image_id"] not in image_ids:
            raise InputError(f"detections[{k}]: image_id {det['image_id']!r} is not an image of {source}")
        if det["category_id"] not in category_ids:
            raise InputError(
                f"detections[{k}]: category_id {det['category_id']!r} is not a category of {source}"
            )
        if iou_type == "bbox" and len(det["bbox"]) != 4:
            raise InputError(f"detections[{k}]: bbox has {len(det['bbox'])} values; expected [x, y, w, h]")
        if iou_type == "segm" and not (
            isinstance(det["segmentation"], dict) and "counts" in det["segmentation"]
        ):
            raise InputError(f"detections[{k}]: segmentation is not an RLE dict with 'size' and 'counts'")
        result = copy.deepcopy(det)
        if iou_type == "segm":
            result.pop("bbox", None)  # mask area, not box area, decides small/medium/large
        results.append(result)
    return results
