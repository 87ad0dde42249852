"""VOC detection AP: hand-computed cases and an independent naive implementation.

Conventions used in the comments: boxes are VOC 1-based inclusive pixels, so a box (x1, y1, x2, y2) has
area (x2 - x1 + 1) * (y2 - y1 + 1); "TP/FP" columns list cumulative counts in score order.
The 11 recall points are 0, 0.1, ..., 1.0 as numpy's arange makes them (0.3, 0.6 and 0.7 come out a
hair above their decimal value).
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest

from goodtransfer.data.voc import VocObject, VocRecord
from goodtransfer.evaluate.voc_ap import VocEvaluator, eval_class, evaluate_detections, voc_ap
from goodtransfer.io import InputError

G1 = (1, 1, 10, 10)  # area 100
G2 = (21, 21, 30, 30)  # area 100, far from G1
NOWHERE = (41, 41, 50, 50)  # overlaps nothing


def _record(image_id: str, *objects: VocObject) -> VocRecord:
    return VocRecord(image_id, Path(f"JPEGImages/{image_id}.jpg"), 100, 100, objects)


def _cats(*boxes: tuple[int, int, int, int], difficult: tuple[bool, ...] = ()) -> VocRecord:
    flags = difficult or (False,) * len(boxes)
    return _record("a", *(VocObject("cat", box, flag) for box, flag in zip(boxes, flags, strict=True)))


def _ap(dets: list, record: VocRecord, use_07: bool = True, thresh: float = 0.5) -> float:
    return eval_class([("a", score, box) for score, box in dets], [record], "cat", thresh, use_07)


def test_tp_fp_tp_gives_28_over_33_with_11_points_and_5_over_6_by_area() -> None:
    # 2 GT. Ranked: 0.9 on G1 (TP), 0.8 nowhere (FP), 0.7 on G2 (TP).
    #   TP 1,1,2  FP 0,1,1  -> recall .5,.5,1  precision 1,.5,2/3
    # 11-point: t = 0..0.5 (6 points) max precision 1; t = 0.6..1.0 (5 points) only recall 1 -> 2/3.
    #   AP = (6 * 1 + 5 * 2/3) / 11 = 28/33 = 0.8485
    # Area: envelope 1 on recall (0, .5], 2/3 on (.5, 1] -> .5 * 1 + .5 * 2/3 = 5/6 = 0.8333
    # Detections are given unsorted: ranking is by score, not input order.
    dets = [(0.7, G2), (0.9, G1), (0.8, NOWHERE)]
    assert _ap(dets, _cats(G1, G2)) == pytest.approx(28 / 33, abs=1e-12)
    assert _ap(dets, _cats(G1, G2), use_07=False) == pytest.approx(5 / 6, abs=1e-12)


def test_voc_ap_on_explicit_curve_differs_between_metrics() -> None:
    # Same curve as above fed directly to voc_ap.
    rec = np.array([0.5, 0.5, 1.0])
    prec = np.array([1.0, 0.5, 2 / 3])
    assert voc_ap(rec, prec, use_07_metric=True) == pytest.approx(28 / 33, abs=1e-12)
    assert voc_ap(rec, prec, use_07_metric=False) == pytest.approx(5 / 6, abs=1e-12)


def test_detection_on_difficult_ground_truth_is_neither_tp_nor_fp() -> None:
    # G1 normal, G2 difficult -> npos = 1. Ranked: 0.9 on G2 (ignored), 0.8 on G1 (TP).
    #   TP 0,1  FP 0,0  -> recall 0,1  precision 0/eps = 0, 1
    # 11-point: every t has recall 1 reachable with precision 1 -> AP = 1.
    # (Were the difficult hit an FP, precision at recall 1 would be 1/2 and AP 0.5.)
    record = _cats(G1, G2, difficult=(False, True))
    assert _ap([(0.9, G2), (0.8, G1)], record) == pytest.approx(1.0)
    # An undetected difficult box is not a miss either: npos stays 1.
    assert _ap([(0.8, G1)], record) == pytest.approx(1.0)


def test_duplicate_detection_counts_as_false_positive() -> None:
    # 2 GT. Ranked: 0.9 on G1 (TP), 0.8 on G1 again (duplicate -> FP), 0.7 on G2 (TP).
    #   TP 1,1,2  FP 0,1,1  -> the same curve as TP, FP, TP: AP = 28/33 (11-point).
    # Without the duplicate: recall .5, 1 at precision 1 -> AP = 1.
    record = _cats(G1, G2)
    assert _ap([(0.9, G1), (0.8, G1), (0.7, G2)], record) == pytest.approx(28 / 33, abs=1e-12)
    assert _ap([(0.9, G1), (0.7, G2)], record) == pytest.approx(1.0)


def test_missed_ground_truth_caps_recall() -> None:
    # 2 GT, one detection on G1: recall .5, precision 1.
    # 11-point: t = 0..0.5 -> 1 (6 points), t = 0.6..1 -> nothing reaches it -> 0.  AP = 6/11.
    # Area: .5 * 1 + .5 * 0 = 0.5.
    record = _cats(G1, G2)
    assert _ap([(0.9, G1)], record) == pytest.approx(6 / 11, abs=1e-12)
    assert _ap([(0.9, G1)], record, use_07=False) == pytest.approx(0.5, abs=1e-12)


def test_iou_exactly_at_threshold_is_not_a_match() -> None:
    # G1 area 10*10 = 100. Detection (1,1,10,5): area 10*5 = 50, intersection 50, union 100 -> IoU 0.5.
    # The rule is IoU > threshold (strict): at 0.5 it is an FP -> recall 0 -> AP 0.
    record = _cats(G1)
    assert _ap([(0.9, (1, 1, 10, 5))], record, thresh=0.5) == 0.0
    # One more pixel row: (1,1,10,6) has IoU 60/100 = 0.6 > 0.5 -> TP -> AP 1.
    assert _ap([(0.9, (1, 1, 10, 6))], record, thresh=0.5) == pytest.approx(1.0)


def test_iou_uses_inclusive_pixel_convention() -> None:
    # Detection (2,1,10,10) on G1: with +1 widths intersection 9*10 = 90, union 100 -> IoU 0.9.
    # Without +1 it would be 8*9 / (9*9) = 0.889, which fails a 0.89 threshold.
    assert _ap([(0.9, (2, 1, 10, 10))], _cats(G1), thresh=0.89) == pytest.approx(1.0)
    assert _ap([(0.9, (2, 1, 10, 10))], _cats(G1), thresh=0.9) == 0.0


def test_evaluate_detections_averages_over_ten_thresholds() -> None:
    # Detection (1,1,10,6) on G1 has IoU exactly 0.6: a match at 0.50 and 0.55 only (0.6 is not > 0.6).
    # Per-threshold AP: 100, 100, then 0 x 8 -> AP = 200 / 10 = 20; AP50 = 100; AP75 = 0.
    result = evaluate_detections({"cat": [("a", 0.9, (1, 1, 10, 6))]}, [_cats(G1)], ["cat"])
    assert result == {
        "AP": pytest.approx(20.0),
        "AP50": pytest.approx(100.0),
        "AP75": 0.0,
        "per_class_AP50": {"cat": pytest.approx(100.0)},
    }
    assert all(type(v) is float for v in (result["AP"], result["AP50"], result["per_class_AP50"]["cat"]))


def test_class_mean_includes_class_without_detections_as_zero() -> None:
    # cat: exact hit -> 100 at every threshold; dog: GT but no detections -> 0. Mean over classes = 50.
    record = _record("a", VocObject("cat", G1), VocObject("dog", G2))
    result = evaluate_detections({"cat": [("a", 0.9, G1)]}, [record], ["cat", "dog"])
    assert result["AP"] == pytest.approx(50.0)
    assert result["AP50"] == pytest.approx(50.0)
    assert result["per_class_AP50"] == {"cat": pytest.approx(100.0), "dog": 0.0}
    assert eval_class([], [record], "dog", 0.5, use_07_metric=False) == 0.0


def test_eleven_point_thresholds_use_numpy_arange_values() -> None:
    # 10 GT, three exact hits: recall .1, .2, .3 at precision 1.
    # numpy's arange(0, 1.1, 0.1) gives 0.30000000000000004 > 3/10, so the 0.3 point is NOT reached:
    #   AP = 3/11 (points 0, .1, .2), not the 4/11 a decimal 0.3 would give.
    boxes = [(20 * i + 1, 1, 20 * i + 10, 10) for i in range(10)]
    dets = [(0.9 - 0.1 * i, boxes[i]) for i in range(3)]
    assert _ap(dets, _cats(*boxes)) == pytest.approx(3 / 11, abs=1e-12)


def test_detection_whose_best_ground_truth_is_taken_is_false_positive() -> None:
    # G1 and G3 = (3,1,12,10) overlap. Ranked: 0.9 exactly on G1 (TP); 0.8 on B = (1,1,11,10), area 110.
    # B vs G1: inter 100, union 110 -> 0.909; B vs G3: inter 9*10 = 90, union 120 -> 0.75.
    # Only the best GT (G1, already matched) is considered, so B is an FP although G3 is free.
    #   TP 1,1  FP 0,1  npos 2 -> recall .5,.5  precision 1,.5 -> 11-point AP = 6/11.
    g3 = (3, 1, 12, 10)
    assert _ap([(0.9, G1), (0.8, (1, 1, 11, 10))], _cats(G1, g3)) == pytest.approx(6 / 11, abs=1e-12)


def test_class_without_non_difficult_ground_truth_matches_detectron2() -> None:
    # npos = 0 -> recall = 0/0 = nan. 11-point: no recall reaches any t -> 0.0. Area: nan * 0 -> nan.
    # With no detections both metrics give 0.0 (empty curve).
    record = _cats(G1, difficult=(True,))
    assert _ap([(0.9, NOWHERE)], record) == 0.0
    assert math.isnan(_ap([(0.9, NOWHERE)], record, use_07=False))
    assert _ap([], record) == 0.0
    assert _ap([], record, use_07=False) == 0.0


def test_detection_on_unknown_image_is_an_input_error() -> None:
    with pytest.raises(InputError, match="image 'zzz' is not in the evaluated records"):
        eval_class([("zzz", 0.5, G1)], [_cats(G1)], "cat", 0.5, True)
    with pytest.raises(InputError, match="not in the evaluated class list"):
        evaluate_detections({"kat": []}, [_cats(G1)], ["cat"])


def test_evaluator_converts_model_boxes_and_maps_labels() -> None:
    # Model box (0,0,10,10) is VOC (1,1,10,10) = G1 -> a perfect cat; label 1 = "dog" has no GT -> FP
    # (dog has npos 0 -> 11-point AP 0). Mean over [cat, dog] = 50.
    evaluator = VocEvaluator([_cats(G1)], ["cat", "dog"])
    evaluator.process(
        "a",
        np.array([[0, 0, 10, 10], [0, 0, 5, 5]], dtype=np.float32),
        np.array([0.9, 0.8], dtype=np.float32),
        np.array([0, 1]),
    )
    result = evaluator.evaluate()
    assert result["per_class_AP50"] == {"cat": pytest.approx(100.0), "dog": 0.0}
    assert result["AP"] == pytest.approx(50.0)
    evaluator.reset()
    assert evaluator.evaluate()["AP"] == 0.0


def test_evaluator_rounds_like_detectron2_result_files() -> None:
    # detectron2 writes boxes with one decimal. Model box (0,0,10,10.54) -> VOC (1,1,10,10.54):
    # unrounded IoU = 100 / (10 * 10.54) = 0.9488 (fails 0.95); rounded ymax 10.5 -> 100/105 = 0.952 (passes).
    # So the hit is a TP at all ten thresholds: AP = 100, not 90.
    evaluator = VocEvaluator([_cats(G1)], ["cat"])
    evaluator.process("a", np.array([[0.0, 0.0, 10.0, 10.54]]), np.array([0.9]), np.array([0]))
    assert evaluator.evaluate()["AP"] == pytest.approx(100.0)


def test_evaluator_rejects_bad_inputs() -> None:
    evaluator = VocEvaluator([_cats(G1)], ["cat"])
    with pytest.raises(InputError, match="label 3"):
        evaluator.process("a", np.zeros((1, 4)), np.ones(1), np.array([3]))
    with pytest.raises(InputError, match=r"expected \(N, 4\) boxes"):
        evaluator.process("a", np.zeros((2, 4)), np.ones(1), np.array([0, 0]))
    with pytest.raises(InputError, match="not in the evaluated records"):
        evaluator.process("b", np.zeros((1, 4)), np.ones(1), np.array([0]))


# ---------------------------------------------------------------------------------------------------
# Independent check: a deliberately naive re-implementation with plain Python loops.


def _naive_iou(a: tuple, b: tuple) -> float:
    iw = max(min(a[2], b[2]) - max(a[0], b[0]) + 1.0, 0.0)
    ih = max(min(a[3], b[3]) - max(a[1], b[1]) + 1.0, 0.0)
    inter = iw * ih
    area_a = (a[2] - a[0] + 1.0) * (a[3] - a[1] + 1.0)
    area_b = (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0)
    return inter / (area_a + area_b - inter)


def _naive_curve(dets: list, records: list[VocRecord], cls: str, thresh: float) -> tuple[list, list]:
    gts = {r.image_id: [o for o in r.objects if o.name == cls] for r in records}
    npos = sum(1 for objs in gts.values() for o in objs if not o.difficult)
    used: set[tuple[str, int]] = set()
    tp = fp = 0
    rec, prec = [], []
    for image_id, _score, box in sorted(dets, key=lambda d: -d[1]):
        ious = [_naive_iou(box, o.bbox) for o in gts[image_id]]
        best = max(range(len(ious)), key=lambda j: ious[j]) if ious else None  # first max on ties
        if best is not None and ious[best] > thresh:
            if gts[image_id][best].difficult:
                pass
            elif (image_id, best) in used:
                fp += 1
            else:
                tp += 1
                used.add((image_id, best))
        else:
            fp += 1
        rec.append(tp / npos)
        prec.append(tp / (tp + fp) if tp + fp else 0.0)
    return rec, prec


def _naive_ap(rec: list, prec: list, use_07: bool) -> float:
    if use_07:
        # i * 0.1 reproduces the arange points exactly (see the arange test above for why it matters).
        points = [i * 0.1 for i in range(11)]
        return (
            sum(max([p for r, p in zip(rec, prec, strict=True) if r >= t], default=0.0) for t in points) / 11
        )
    ap, previous = 0.0, 0.0
    for k, r in enumerate(rec):
        if r != previous:
            ap += (r - previous) * max(prec[k:])
            previous = r
    return ap


def _random_case(seed: int) -> tuple[list[VocRecord], dict[str, list], list[str]]:
    rng = random.Random(seed)
    classes = ["cat", "dog", "bird"]
    records, dets = [], {c: [] for c in classes}
    for i in range(40):
        objects = []
        for _ in range(rng.randint(0, 4)):
            x, y = rng.randint(1, 150), rng.randint(1, 150)
            box = (x, y, x + rng.randint(10, 60), y + rng.randint(10, 60))
            obj = VocObject(rng.choice(classes), box, difficult=rng.random() < 0.2)
            objects.append(obj)
            for _ in range(rng.choice([0, 1, 1, 1, 2, 3])):  # 0 = miss, 2-3 = duplicates
                jitter = tuple(v + rng.uniform(-4, 4) for v in box)
                dets[obj.name].append((f"{i:06d}", rng.random(), jitter))
        for _ in range(rng.randint(0, 3)):  # background false positives
            x, y = rng.uniform(1, 150), rng.uniform(1, 150)
            dets[rng.choice(classes)].append((f"{i:06d}", rng.random(), (x, y, x + 30, y + 30)))
        records.append(VocRecord(f"{i:06d}", Path(f"{i:06d}.jpg"), 250, 250, tuple(objects)))
    return records, dets, classes


@pytest.mark.parametrize("use_07", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_naive_implementation_on_random_detections(seed: int, use_07: bool) -> None:
    records, dets, classes = _random_case(seed)
    per_thresh = []
    for thresh in range(50, 100, 5):
        aps = [_naive_ap(*_naive_curve(dets[c], records, c, thresh / 100), use_07) * 100 for c in classes]
        per_thresh.append(sum(aps) / len(aps))
        if thresh == 50:
            expected_per_class = dict(zip(classes, aps, strict=True))
    result = evaluate_detections(dets, records, classes, use_07_metric=use_07)
    assert result["AP"] == pytest.approx(sum(per_thresh) / 10, abs=1e-6)
    assert result["AP50"] == pytest.approx(per_thresh[0], abs=1e-6)
    assert result["AP75"] == pytest.approx(per_thresh[5], abs=1e-6)
    assert result["per_class_AP50"] == pytest.approx(expected_per_class, abs=1e-6)
    assert 0.0 < result["AP"] < 100.0  # the case is non-trivial
