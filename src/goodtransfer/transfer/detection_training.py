"""Fine-tuning and inference shared by the C4 detectors (VOC Faster R-CNN, COCO Mask R-CNN): detectron2's
iteration schedule with warm-up, resume, PreciseBN and evaluation mid-training, as engine hooks."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from goodtransfer.data.samplers import detection_sampler
from goodtransfer.device import Compute
from goodtransfer.engine import Trainer
from goodtransfer.engine.hooks import (
    FiniteLoss,
    IterationCheckpoint,
    LrSchedule,
    PeriodicEval,
    ProgressLog,
    TensorBoard,
)
from goodtransfer.engine.optim import sgd
from goodtransfer.engine.precise_bn import PreciseBN
from goodtransfer.engine.trainer import LossFn
from goodtransfer.finite import task_key
from goodtransfer.progress import Progress
from goodtransfer.resume import ResumeState, rng_state, set_rng_state
from goodtransfer.schedule import linear_warmup, step

Evaluate = Callable[[], dict[str, Any]]


def collate(batch: list[Any]) -> tuple[list[Any], ...]:
    return tuple(zip(*batch, strict=True))


def iteration_lr(spec: dict[str, Any], iteration: int) -> float:
    warm = linear_warmup(iteration, spec["warmup_iters"], spec["warmup_factor"])
    return warm * step(spec["base_lr"], iteration, spec["steps"])


def _to(target: dict[str, Any], compute: Compute) -> dict[str, Any]:
    return {k: v.to(compute.device) if isinstance(v, torch.Tensor) else v for k, v in target.items()}


def detection_loss(compute: Compute) -> LossFn:
    def loss(model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        images, targets, _ = batch
        return model([compute.images(i) for i in images], [_to(t, compute) for t in targets])

    return loss


def _precise_bn_batches(data: Dataset, spec: dict[str, Any]) -> DataLoader:
    """``precise_bn_iters`` training batches other than the first ones (seed + 1), drawing no seed from
    the global RNG."""
    sampler = detection_sampler(data, spec, spec["seed"] + 1, 0, spec["precise_bn_iters"])
    generator = torch.Generator().manual_seed(spec["seed"] + 1)
    return DataLoader(data, batch_sampler=sampler, num_workers=spec["workers"], collate_fn=collate,
                      generator=generator)  # fmt: skip


def _evaluate_between(model: nn.Module, test: Evaluate) -> dict[str, Any]:
    """An evaluation mid-training that leaves training as it was: train mode, training sizes, RNG."""
    saved, sizes = rng_state(), model.transform.min_size
    metrics = test()
    set_rng_state(saved)  # the test loader draws a seed: without this, evaluating would change training
    model.transform.min_size = sizes
    model.train()
    return metrics


def train_detector(
    model: nn.Module,
    data: Dataset,
    spec: dict[str, Any],
    compute: Compute,
    resume: ResumeState,
    log_dir: Path,
    evaluate: Callable[[int, dict[str, Any]], dict[str, Any]] | None = None,
    test: Evaluate | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    """Train to ``max_iter``, then PreciseBN; every ``eval_period`` iterations ``test()`` and keep
    ``evaluate(iteration, metrics)``. Returns the iteration it started from and those points."""
    name = f"{spec['task']} {spec['run']}"
    optimizer, start, curve = sgd(model, spec), 0, []  # BatchNorm parameters get weight_decay_norm
    if (state := resume.load()) is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, curve = state["iteration"], state.get("curve", [])
        print(f"[{spec['task']}] resuming {spec['run']} from iteration {start}", file=sys.stderr)
    sampler = detection_sampler(data, spec, spec["seed"], start, spec["max_iter"])
    loader = DataLoader(data, batch_sampler=sampler, num_workers=spec["workers"], collate_fn=collate)
    batches = iter(loader)  # draws a seed from the global RNG: before restoring it, as the first run did
    if state is not None:
        set_rng_state(state["rng"])
    last, loss = spec["max_iter"], detection_loss(compute)
    progress = Progress(name, last, done=start, items_per_step=spec["ims_per_batch"], unit="img",
                        every=spec["log_period"])  # fmt: skip

    def evaluate_at(done: int) -> None:
        if evaluate is not None and test is not None:
            curve.append(evaluate(done, _evaluate_between(model, test)))

    Trainer(
        model, optimizer, compute, loss=loss, batches=lambda epoch: batches, epochs=1,
        hooks=[
            LrSchedule(lambda trainer: iteration_lr(spec, trainer.iter)),
            FiniteLoss(spec["run"], fix=task_key(spec, "base_lr"), iterations=True),
            ProgressLog(progress, mean=False),
            TensorBoard(log_dir, fresh=start == 0),
            PeriodicEval(spec.get("eval_period") or 0, last, evaluate_at),
            IterationCheckpoint(resume, spec["checkpoint_period"], last, extra=lambda: {"curve": curve}),
            PreciseBN(spec.get("precise_bn_iters", 0), lambda: _precise_bn_batches(data, spec), loss),
        ],
    ).train(start_iter=start, resumed=state)  # fmt: skip
    return start, curve


@torch.no_grad()
def detect(
    model: nn.Module, data: Dataset, spec: dict[str, Any], compute: Compute
) -> Iterator[tuple[Any, dict]]:
    """(image id, the model's output) for every image of ``data``, at the test size, unflipped, in order."""
    model.eval()
    model.transform.min_size = (spec["min_size_test"],)
    loader = DataLoader(data, batch_size=spec["test_batch"], sampler=[(i, False) for i in range(len(data))],
                        num_workers=spec["workers"], collate_fn=collate)  # fmt: skip
    for images, _, ids in loader:
        with compute.autocast():
            outputs = model([compute.images(i) for i in images])
        yield from zip(ids, outputs, strict=True)
