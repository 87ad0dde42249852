"""MAFL facial landmark error: mean point-to-point distance over inter-ocular distance, in percent.

Landmark order (MAFL's): left eye, right eye, nose, left mouth corner, right mouth corner. Per image,
the 5 Euclidean distances between predicted and ground-truth points are averaged and divided by that
image's *ground-truth* eye-to-eye distance; the result is averaged over images and given in percent.
"""

from __future__ import annotations

import numpy as np

from goodtransfer.io import InputError

NUM_LANDMARKS = 5
LEFT_EYE, RIGHT_EYE = 0, 1


def landmark_error(pred: np.ndarray, gt: np.ndarray) -> float:
    """Inter-ocular-normalised mean landmark error (percent) of (N, 5, 2) predictions vs ground truth."""
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    for name, arr in (("pred", pred), ("gt", gt)):
        if arr.ndim != 3 or arr.shape[1:] != (NUM_LANDMARKS, 2) or arr.shape[0] == 0:
            raise InputError(f"landmark_error: {name} has shape {arr.shape}; expected (N >= 1, 5, 2)")
        if not np.isfinite(arr).all():
            raise InputError(f"landmark_error: {name} has non-finite coordinates in image {_first_bad(arr)}")
    if pred.shape != gt.shape:
        raise InputError(f"landmark_error: pred has shape {pred.shape} but gt has {gt.shape}; expected equal")
    inter_ocular = np.linalg.norm(gt[:, LEFT_EYE] - gt[:, RIGHT_EYE], axis=1)
    if (inter_ocular == 0).any():
        index = int(np.flatnonzero(inter_ocular == 0)[0])
        raise InputError(
            f"landmark_error: gt image {index} has both eyes at one point (inter-ocular distance 0)"
        )
    per_image = np.linalg.norm(pred - gt, axis=2).mean(axis=1) / inter_ocular
    return float(per_image.mean() * 100)


def _first_bad(arr: np.ndarray) -> int:
    return int(np.flatnonzero(~np.isfinite(arr).all(axis=(1, 2)))[0])
