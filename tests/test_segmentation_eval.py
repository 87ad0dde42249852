"""Segmentation metrics: a hand-counted 4x4 case, mmseg's NaN rules, and an independent per-class loop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from goodtransfer.evaluate.segmentation import CITYSCAPES_CLASSES, SegmentationEvaluator
from goodtransfer.io import InputError

I = 255  # noqa: E741  ignore label

# Ground truth and prediction, 4 classes (class 3 appears only as a prediction on ignored pixels).
GT = np.array(
    [
        [0, 0, 0, 1],
        [0, 0, 1, 1],
        [2, 2, I, I],
        [2, 2, I, I],
    ]
)
PRED = np.array(
    [
        [0, 0, 1, 1],
        [0, 1, 1, 1],
        [2, 0, 3, 3],
        [2, 2, 0, 0],
    ]
)
# Labelled pixels: 12. Rows = GT class, columns = predicted class:
#   class 0: 5 GT pixels -> predicted 0,0,1,0,1   TP 3, FN 2 (both to class 1)
#   class 1: 3 GT pixels -> predicted 1,1,1       TP 3
#   class 2: 4 GT pixels -> predicted 2,0,2,2     TP 3, FN 1 (to class 0)
#   class 3: 0 GT pixels; its 2 predictions lie on ignored pixels, so 0 predicted pixels
# Predicted counts: class 0 = 3 + 1 = 4, class 1 = 2 + 3 = 5, class 2 = 3, class 3 = 0
# IoU = TP / (GT + pred - TP):  0: 3/(5+4-3) = 50%   1: 3/(3+5-3) = 60%   2: 3/(4+3-3) = 75%   3: 0/0 NaN
# Acc = TP / GT:                0: 3/5 = 60%         1: 3/3 = 100%        2: 3/4 = 75%         3: 0/0 NaN
# mIoU = (50 + 60 + 75) / 3 = 61.666..%, mAcc = (60 + 100 + 75) / 3 = 78.333..%, aAcc = 9/12 = 75%


def _evaluate(pairs: list[tuple[np.ndarray, np.ndarray]], num_classes: int) -> dict:
    evaluator = SegmentationEvaluator(num_classes)
    for pred, gt in pairs:
        evaluator.process(pred, gt)
    return evaluator.evaluate()


def _flat(result: dict) -> list[float]:
    """All numbers of a result in a fixed order, so results with NaN entries can be compared."""
    return [result["mIoU"], result["mAcc"], result["aAcc"], *result["per_class_IoU"].values(),
            *result["per_class_Acc"].values()]  # fmt: skip


def test_hand_counted_4x4_maps_give_hand_computed_metrics() -> None:
    result = _evaluate([(PRED, GT)], num_classes=4)
    assert result["mIoU"] == pytest.approx(185 / 3)
    assert result["mAcc"] == pytest.approx(235 / 3)
    assert result["aAcc"] == pytest.approx(75.0)
    iou = result["per_class_IoU"]
    assert [iou["0"], iou["1"], iou["2"]] == pytest.approx([50.0, 60.0, 75.0])
    assert math.isnan(iou["3"])
    acc = result["per_class_Acc"]
    assert [acc["0"], acc["1"], acc["2"]] == pytest.approx([60.0, 100.0, 75.0])
    assert math.isnan(acc["3"])


def test_predictions_on_ignore_pixels_do_not_count() -> None:
    # Same maps with the ignored predictions changed to any other values: nothing moves.
    other = PRED.copy()
    other[2:, 2:] = [[1, 2], [3, 0]]
    assert _flat(_evaluate([(other, GT)], 4)) == pytest.approx(_flat(_evaluate([(PRED, GT)], 4)), nan_ok=True)


def test_class_absent_from_gt_and_prediction_is_excluded_from_miou() -> None:
    # With 3 classes the result equals the 4-class one: class 3 (never seen) is simply left out.
    three = _evaluate([(np.where(GT == I, I, PRED), GT)], num_classes=3)
    four = _evaluate([(PRED, GT)], num_classes=4)
    assert three["mIoU"] == pytest.approx(four["mIoU"]) == pytest.approx(185 / 3)
    assert three["mAcc"] == pytest.approx(four["mAcc"])


def test_class_predicted_but_absent_from_gt_has_iou_zero_in_miou_but_nan_acc() -> None:
    gt = np.array([[0, 0], [1, 1]])
    pred = np.array([[0, 2], [1, 1]])
    # class 0: TP 1, GT 2, pred 1 -> IoU 1/2, Acc 1/2; class 1: IoU 1, Acc 1; class 2: TP 0, GT 0, pred 1
    # -> IoU 0/1 = 0 (counts), Acc 0/0 = NaN (left out). mIoU = (50 + 100 + 0) / 3, mAcc = (50 + 100) / 2
    result = _evaluate([(pred, gt)], num_classes=3)
    assert result["per_class_IoU"]["2"] == 0.0
    assert math.isnan(result["per_class_Acc"]["2"])
    assert result["mIoU"] == pytest.approx(50.0)
    assert result["mAcc"] == pytest.approx(75.0)


def test_out_of_range_prediction_is_a_miss_but_no_class_false_positive() -> None:
    gt = np.array([[0, 0], [1, 1]])
    pred = np.array([[0, 255], [1, -1]])
    # class 0: TP 1, GT 2, pred 1 -> IoU 50%; class 1: TP 1, GT 2, pred 1 -> IoU 50%; aAcc 2/4
    result = _evaluate([(pred, gt)], num_classes=2)
    assert result["per_class_IoU"] == pytest.approx({"0": 50.0, "1": 50.0})
    assert result["aAcc"] == pytest.approx(50.0)


def test_counts_accumulate_over_images_before_dividing() -> None:
    # Dataset-level IoU: two images give the same result as one image holding both side by side.
    rng = np.random.default_rng(0)
    gts = [rng.integers(0, 3, (5, 6)) for _ in range(2)]
    preds = [rng.integers(0, 3, (5, 6)) for _ in range(2)]
    separate = _evaluate(list(zip(preds, gts, strict=True)), 3)
    joined = _evaluate([(np.hstack(preds), np.hstack(gts))], 3)
    assert _flat(separate) == pytest.approx(_flat(joined))


def _per_class_loop(pairs: list[tuple[np.ndarray, np.ndarray]], num_classes: int) -> dict:
    """Reference: boolean masks per class, written without a confusion matrix."""
    inter = np.zeros(num_classes)
    union = np.zeros(num_classes)
    label = np.zeros(num_classes)
    correct = total = 0
    for pred, gt in pairs:
        keep = gt != I
        for c in range(num_classes):
            p, g = (pred == c) & keep, (gt == c) & keep
            inter[c] += np.sum(p & g)
            union[c] += np.sum(p | g)
            label[c] += np.sum(g)
        correct += np.sum((pred == gt) & keep)
        total += np.sum(keep)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou, acc = inter / union, inter / label
    return {
        "mIoU": np.nanmean(iou) * 100,
        "mAcc": np.nanmean(acc) * 100,
        "aAcc": correct / total * 100,
        "iou": iou,
    }


def test_matches_independent_per_class_loop_on_random_maps() -> None:
    rng = np.random.default_rng(1)
    num_classes = 19
    for _ in range(3):
        pairs = []
        for _ in range(4):
            gt = rng.integers(0, 15, (32, 40))  # classes 15..18 absent from GT
            gt[rng.random(gt.shape) < 0.2] = I
            pred = rng.integers(0, 17, (32, 40))  # 17, 18 never predicted -> NaN; 15, 16 -> IoU 0
            pred[rng.random(pred.shape) < 0.05] = I  # ignore-valued predictions are plain misses
            pairs.append((pred, gt))
        got = _evaluate(pairs, num_classes)
        want = _per_class_loop(pairs, num_classes)
        assert got["mIoU"] == pytest.approx(want["mIoU"], rel=1e-12)
        assert got["mAcc"] == pytest.approx(want["mAcc"], rel=1e-12)
        assert got["aAcc"] == pytest.approx(want["aAcc"], rel=1e-12)
        assert list(got["per_class_IoU"].values()) == pytest.approx(want["iou"] * 100, nan_ok=True)


def test_class_names_key_the_per_class_results() -> None:
    evaluator = SegmentationEvaluator(19, class_names=CITYSCAPES_CLASSES)
    evaluator.process(np.zeros((2, 2), dtype=np.uint8), np.zeros((2, 2), dtype=np.uint8))
    result = evaluator.evaluate()
    assert list(result["per_class_IoU"]) == list(CITYSCAPES_CLASSES)
    assert result["per_class_IoU"]["road"] == 100.0
    assert result["mIoU"] == 100.0


def test_gt_value_outside_classes_and_not_ignore_is_rejected_naming_it() -> None:
    evaluator = SegmentationEvaluator(19)
    with pytest.raises(InputError, match="ground truth value 19 "):
        evaluator.process(np.zeros((2, 2), dtype=np.int64), np.array([[0, 19], [255, 1]]))


def test_shape_mismatch_is_rejected_naming_both_shapes() -> None:
    with pytest.raises(InputError, match=r"\(2, 3\).*\(3, 2\)"):
        SegmentationEvaluator(3).process(np.zeros((2, 3), dtype=int), np.zeros((3, 2), dtype=int))


def test_float_label_maps_are_rejected() -> None:
    with pytest.raises(InputError, match="dtype float64"):
        SegmentationEvaluator(3).process(np.zeros((2, 2)), np.zeros((2, 2), dtype=int))


def test_evaluating_without_labelled_pixels_is_an_error() -> None:
    evaluator = SegmentationEvaluator(3)
    evaluator.process(np.zeros((2, 2), dtype=int), np.full((2, 2), I))
    with pytest.raises(InputError, match="no labelled pixels"):
        evaluator.evaluate()
