"""MAFL landmark error: hand cases normalised by the ground-truth inter-ocular distance."""

from __future__ import annotations

import numpy as np
import pytest

from goodtransfer.evaluate.landmarks import landmark_error
from goodtransfer.io import InputError

# left eye, right eye, nose, left mouth corner, right mouth corner; eyes 10 px apart
FACE = np.array([[30.0, 40.0], [40.0, 40.0], [35.0, 47.0], [31.0, 53.0], [39.0, 53.0]])


def test_every_landmark_one_pixel_off_with_eyes_ten_apart_is_ten_percent() -> None:
    pred = FACE + np.array([[1, 0], [0, 1], [-1, 0], [0, -1], [1, 0]])
    assert landmark_error(pred[None], FACE[None]) == pytest.approx(10.0)


def test_error_is_averaged_over_landmarks_then_images() -> None:
    # image 0: only the nose is off, by a 3-4-5 triangle: (5 / 5 landmarks) / 10 = 10%
    # image 1: face scaled x2 (eyes 20 apart), every landmark 5 px off: 5 / 20 = 25%
    # mean over images: (10 + 25) / 2 = 17.5%
    pred0 = FACE.copy()
    pred0[2] += [3.0, 4.0]
    gt1 = FACE * 2
    pred1 = gt1 + [3.0, -4.0]
    assert landmark_error(np.stack([pred0, pred1]), np.stack([FACE, gt1])) == pytest.approx(17.5)


def test_normaliser_is_the_ground_truth_eye_distance_not_the_predicted_one() -> None:
    # predicted eyes pushed 5 px apart each (pred eye distance 20); GT eyes 10 apart:
    # errors 5, 5, 0, 0, 0 -> mean 2 -> 2 / 10 = 20%
    pred = FACE.copy()
    pred[0, 0] -= 5.0
    pred[1, 0] += 5.0
    assert landmark_error(pred[None], FACE[None]) == pytest.approx(20.0)


def test_perfect_predictions_have_zero_error() -> None:
    assert landmark_error(FACE[None], FACE[None]) == 0.0


def test_zero_inter_ocular_distance_is_rejected_naming_the_image() -> None:
    gt = np.stack([FACE, FACE.copy()])
    gt[1, 1] = gt[1, 0]
    with pytest.raises(InputError, match="gt image 1 "):
        landmark_error(gt, gt)


@pytest.mark.parametrize("shape", [(2, 4, 2), (2, 5, 3), (0, 5, 2), (5, 2)])
def test_wrong_shapes_are_rejected(shape: tuple[int, ...]) -> None:
    with pytest.raises(InputError, match=r"expected \(N >= 1, 5, 2\)"):
        landmark_error(np.zeros(shape), np.zeros(shape))


def test_pred_and_gt_image_counts_must_match() -> None:
    with pytest.raises(InputError, match=r"\(2, 5, 2\).*\(1, 5, 2\)"):
        landmark_error(np.stack([FACE, FACE]), FACE[None])
