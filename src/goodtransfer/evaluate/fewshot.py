"""Few-shot episode accuracy summary as Chen et al. 2019 (CloserLookFewShot, ``test.py``) prints it.

``acc_mean = np.mean(acc_all)``, ``acc_std = np.std(acc_all)`` (population std, ddof=0) and the
interval half-width ``1.96 * acc_std / np.sqrt(iter_num)``, where ``iter_num`` is the number of episodes
(600 there). Inputs there are percentages, so both outputs are in the unit of the inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from goodtransfer.io import InputError


def mean_and_ci95(accuracies: Sequence[float]) -> tuple[float, float]:
    """(mean, 1.96 * np.std(acc) / sqrt(n)) over per-episode accuracies, in the inputs' unit."""
    acc = np.asarray(accuracies, dtype=np.float64)
    if acc.ndim != 1 or acc.size < 2:
        raise InputError(f"accuracies: got shape {acc.shape}; expected a flat list of at least 2 episodes")
    if not np.isfinite(acc).all():
        raise InputError(f"accuracies: episode {int(np.flatnonzero(~np.isfinite(acc))[0])} is not finite")
    return float(np.mean(acc)), float(1.96 * np.std(acc) / np.sqrt(acc.size))
