"""Results that cannot be right stop the job: a non-finite loss, an epoch of zero steps, a NaN metric.

The training loop (``engine.Trainer``) reads each step's loss once and its ``FiniteLoss`` hook checks it
here, before any checkpoint, metrics or log of that step is written.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from goodtransfer.io import InputError


class DivergedError(InputError):
    """The loss became NaN or infinite: the numbers that would follow mean nothing."""


class ZeroStepsError(InputError):
    """A training job would run no optimisation step at all and save its initialisation as trained."""


def task_key(spec: Mapping[str, Any], name: str) -> str:
    """The config key of a downstream task's setting ``name``: its protocol's, or, when the task pretrains
    (``method: task``), the pretraining run's ``task_settings``."""
    if spec.get("protocol"):
        return f"downstream.{spec['protocol']}.{name}"
    return f"pretrain.runs.{spec.get('run')}.task_settings.{name}"


def check_finite_loss(loss: float | torch.Tensor, *, run: str, step: int | str, lr: float, fix: str) -> None:
    """Raise ``DivergedError`` if ``loss`` is NaN or infinite. Pass the float the loop already read
    (a tensor is read here: one sync). ``step``: an iteration number or text such as 'epoch 1 step 3';
    ``fix``: the config key(s) to lower."""
    value = float(loss)
    if not math.isfinite(value):
        where = f"iteration {step}" if isinstance(step, int) else step
        raise DivergedError(
            f"run {run}: loss is {value} at {where} (lr {lr:g}); training diverged: lower the learning "
            f"rate ({fix}) or check the inputs"
        )


def require_steps(steps: int, *, run: str, images: int, batch: int, drop_last: bool, fix: str) -> None:
    """Fail when an epoch (or the whole job) would have no batch at all; ``fix`` says what to change."""
    if steps <= 0:
        dropped = " (drop_last)" if drop_last else ""
        raise ZeroStepsError(
            f"run {run}: {images} training images, batch_size {batch}{dropped}: zero steps per epoch; {fix}"
        )


def null_if_nan(
    metrics: dict[str, Any], reasons: Mapping[str, str], default: str = "undefined (0/0) for this data"
) -> dict[str, Any]:
    """``metrics`` with every NaN (nested too) replaced by null, and an ``undefined`` map from each such
    key path to why it has no value (``reasons`` by path, top-level or last key, else ``default``); the report
    prints these as a dash with the reason as a note."""
    undefined: dict[str, str] = dict(metrics.get("undefined", {}))

    def clean(value: Any, path: str) -> Any:
        if isinstance(value, dict):
            return {k: clean(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v, f"{path}.{i}") for i, v in enumerate(value)]
        if isinstance(value, float) and math.isnan(value):
            parts = path.split(".")
            known = [reasons[k] for k in (path, parts[0], parts[-1]) if k in reasons]
            undefined[path] = known[0] if known else default
            return None
        return value

    cleaned = clean({k: v for k, v in metrics.items() if k != "undefined"}, "")
    return {**cleaned, "undefined": undefined} if undefined else cleaned
