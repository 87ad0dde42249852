"""Learning-rate schedules, evaluated per epoch (pretraining) or per iteration (fine-tuning)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def cosine(base_lr: float, progress: float) -> float:
    """MoCo-v2's half-cosine from base_lr to 0; progress in [0, 1]."""
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def step(base_lr: float, position: int, milestones: Sequence[int], gamma: float = 0.1) -> float:
    """x gamma at each milestone reached (MoCo-v1 epochs 120/160, detectron2 iterations 6k/8k)."""
    return base_lr * gamma ** sum(position >= m for m in milestones)


def linear_warmup(position: int, warmup: int, factor: float = 0.001) -> float:
    """detectron2's WarmupMultiStepLR factor: from ``factor`` to 1 over ``warmup`` iterations."""
    if position >= warmup:
        return 1.0
    alpha = position / warmup
    return factor * (1 - alpha) + alpha


def epoch_lr(spec: dict, epoch: int) -> float:
    """Learning rate of a pretraining or readout epoch from its ``lr``/``schedule`` keys."""
    base = spec["lr"] * spec["batch_size"] / spec.get("lr_reference_batch", spec["batch_size"])
    if spec["schedule"] == "cosine":
        return cosine(base, epoch / spec["epochs"])
    return step(base, epoch, spec["milestones"])
