"""COCO AP: a 3-image, 2-category synthetic ground truth with hand-reasoned results, cross-checked
against calling pycocotools' COCOeval directly.

Boxes below are exact copies of the ground truth, so every match has IoU 1 and AP is the same at every
IoU threshold (AP = AP50 = AP75). COCO AP samples the interpolated precision at the 101 recall points
0, 0.01, ..., 1. Area ranges: small < 32^2 = 1024 <= medium <= 96^2 = 9216 < large.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from goodtransfer.evaluate.coco import METRICS, evaluate_coco
from goodtransfer.io import InputError, write_json

# (annotation id, image id, category id, x, y, w, h) -- 200x200 images
OBJECTS = [
    (1, 1, 1, 10, 10, 20, 20),  # area 400: small
    (2, 1, 2, 60, 60, 50, 50),  # area 2500: medium
    (3, 2, 1, 20, 20, 110, 110),  # area 12100: large
    (4, 3, 1, 100, 30, 40, 60),  # area 2400: medium
    (5, 3, 2, 10, 120, 30, 30),  # area 900: small
]


def _ground_truth() -> dict:
    annotations = [
        {
            "id": ann_id,
            "image_id": image_id,
            "category_id": cat_id,
            "bbox": [x, y, w, h],
            "area": w * h,
            "iscrowd": 0,
            "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
        }
        for ann_id, image_id, cat_id, x, y, w, h in OBJECTS
    ]
    return {
        "images": [{"id": i, "height": 200, "width": 200} for i in (1, 2, 3)],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": annotations,
    }


def _box_detection(ann_id: int, score: float) -> dict:
    _, image_id, cat_id, x, y, w, h = OBJECTS[ann_id - 1]
    return {"image_id": image_id, "category_id": cat_id, "bbox": [x, y, w, h], "score": score}


def _mask_detection(ann_id: int, score: float) -> dict:
    # COCO rasterises an integer-cornered rectangle polygon to exactly the pixels [y, y+h) x [x, x+w)
    _, image_id, cat_id, x, y, w, h = OBJECTS[ann_id - 1]
    mask = np.zeros((200, 200), dtype=np.uint8)
    mask[y : y + h, x : x + w] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"image_id": image_id, "category_id": cat_id, "segmentation": rle, "score": score}


def _direct_cocoeval(gt: dict, detections: list[dict], iou_type: str) -> list[float]:
    """pycocotools called as its README shows, with no help from the code under test."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(detections)), iou_type)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return [float(s * 100) if s >= 0 else math.nan for s in coco_eval.stats[:6]]


def test_perfect_box_detections_give_100_everywhere() -> None:
    result = evaluate_coco(_ground_truth(), [_box_detection(k, 0.9) for k in range(1, 6)], "bbox")
    assert result == pytest.approx(dict.fromkeys(METRICS, 100.0))


def test_duplicate_and_miss_match_hand_values_and_direct_cocoeval() -> None:
    # cat: ann 1 (0.9) TP, ann 3 (0.8) TP, ann 3 again (0.7) duplicate -> FP; ann 4 missed.
    #   recall 1/3, 2/3, 2/3 at precision 1, 1, 2/3: precision 1 at the 67 recall points 0..0.66, then 0
    #   -> AP 67/101. dog: both found -> 1. AP = AP50 = AP75 = (67/101 + 1) / 2 = 84/101.
    # small (ann 1, ann 5): both found; the other detections fall on out-of-range GT or are large -> 100.
    # medium (ann 4 missed -> 0, ann 2 found -> 1) -> 50.
    # large: only ann 3 (cat): TP then the duplicate, a large FP, after it -> 100; dog has no large GT
    #   (pycocotools -1) and is left out of the mean.
    gt = _ground_truth()
    detections = [_box_detection(1, 0.9), _box_detection(3, 0.8), _box_detection(3, 0.7)]
    detections += [_box_detection(2, 0.6), _box_detection(5, 0.5)]
    result = evaluate_coco(gt, detections, "bbox")
    hand = [84 / 101 * 100] * 3 + [100.0, 50.0, 100.0]
    assert [result[m] for m in METRICS] == pytest.approx(hand)
    assert [result[m] for m in METRICS] == pytest.approx(_direct_cocoeval(gt, detections, "bbox"))


def test_perfect_rle_mask_detections_give_100_everywhere() -> None:
    result = evaluate_coco(_ground_truth(), [_mask_detection(k, 0.9) for k in range(1, 6)], "segm")
    assert result == pytest.approx(dict.fromkeys(METRICS, 100.0))


def test_segm_uses_mask_area_not_detection_bbox_for_size_split() -> None:
    # An extra cat mask of 15x15 = 225 px (small) on image 2, away from ann 3, scored highest, with a
    # bogus 150x150 bbox. By mask area it is a small FP: cat small = FP then TP -> precision 1/2 at every
    # recall point -> 0.5; dog small 1 -> APs 75; large untouched -> 100. By box area (pycocotools'
    # default when bbox is present) it would be a large FP instead: APs 100, APl 50.
    extra = np.zeros((200, 200), dtype=np.uint8)
    extra[160:175, 160:175] = 1
    fp = {"image_id": 2, "category_id": 1, "segmentation": mask_utils.encode(np.asfortranarray(extra)),
          "bbox": [10, 10, 150, 150], "score": 0.95}  # fmt: skip
    detections = [fp] + [_mask_detection(k, 0.9) for k in range(1, 6)]
    for det in detections[1:]:  # loadRes picks its branch from the first result, so all need a bbox
        det["bbox"] = mask_utils.toBbox(det["segmentation"]).tolist()
    result = evaluate_coco(_ground_truth(), detections, "segm")
    assert result["APs"] == pytest.approx(75.0)
    assert result["APl"] == pytest.approx(100.0)
    with_box_area = _direct_cocoeval(_ground_truth(), detections, "segm")
    assert with_box_area[3:] == pytest.approx([100.0, 100.0, 50.0])


def test_area_range_without_ground_truth_is_nan() -> None:
    gt = _ground_truth()
    gt["annotations"] = [ann for ann in gt["annotations"] if ann["id"] == 3]  # one large cat only
    result = evaluate_coco(gt, [_box_detection(3, 0.9)], "bbox")
    assert result["AP"] == pytest.approx(100.0) and result["APl"] == pytest.approx(100.0)
    assert math.isnan(result["APs"]) and math.isnan(result["APm"])


def test_no_detections_give_all_zeros() -> None:
    assert evaluate_coco(_ground_truth(), [], "bbox") == dict.fromkeys(METRICS, 0.0)
    assert evaluate_coco(_ground_truth(), [], "segm") == dict.fromkeys(METRICS, 0.0)


def test_ground_truth_file_path_is_read(tmp_path: Path) -> None:
    path = tmp_path / "instances.json"
    write_json(path, _ground_truth())
    result = evaluate_coco(path, [_box_detection(k, 0.9) for k in range(1, 6)], "bbox")
    assert result["AP"] == pytest.approx(100.0)


def test_inputs_are_not_modified() -> None:
    gt = _ground_truth()
    detections = [_mask_detection(k, 0.9) for k in range(1, 6)]
    for det in detections:
        det["bbox"] = [0, 0, 1, 1]
    gt_before, dets_before = copy.deepcopy(gt), copy.deepcopy(detections)
    evaluate_coco(gt, detections, "segm")
    assert gt == gt_before and detections == dets_before


def test_missing_ground_truth_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        evaluate_coco(tmp_path / "missing.json", [], "bbox")


def test_detection_on_unknown_image_is_rejected_naming_it() -> None:
    detection = _box_detection(1, 0.9) | {"image_id": 99}
    with pytest.raises(InputError, match=r"detections\[0\]: image_id 99 "):
        evaluate_coco(_ground_truth(), [detection], "bbox")


def test_detection_of_unknown_category_is_rejected_naming_it() -> None:
    detection = _box_detection(1, 0.9) | {"category_id": 7}
    with pytest.raises(InputError, match=r"detections\[0\]: category_id 7 "):
        evaluate_coco(_ground_truth(), [detection], "bbox")


def test_segm_detection_without_rle_is_rejected() -> None:
    detection = _box_detection(1, 0.9) | {"segmentation": [[0, 0, 5, 0, 5, 5]]}
    with pytest.raises(InputError, match="not an RLE dict"):
        evaluate_coco(_ground_truth(), [detection], "segm")


def test_ground_truth_annotation_without_area_is_rejected_naming_the_field() -> None:
    gt = _ground_truth()
    del gt["annotations"][2]["area"]
    with pytest.raises(InputError, match=r"annotations\[2\]: missing field\(s\) \['area'\]"):
        evaluate_coco(gt, [], "bbox")


def test_unknown_iou_type_is_rejected() -> None:
    with pytest.raises(InputError, match="iou_type"):
        evaluate_coco(_ground_truth(), [], "keypoints")  # type: ignore[arg-type]
