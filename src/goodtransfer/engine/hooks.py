"""Hooks of the training loop, each with one job: schedule, non-finite stop, progress, TensorBoard,
resumable state."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from goodtransfer.engine.trainer import Hook, Trainer
from goodtransfer.finite import check_finite_loss
from goodtransfer.progress import Progress
from goodtransfer.resume import ResumeState


class LrSchedule(Hook):
    """Sets every parameter group's lr before each step from a closed form of the trainer's position."""

    def __init__(self, lr_at: Callable[[Trainer], float]) -> None:
        self.lr_at = lr_at

    def before_step(self, trainer: Trainer) -> None:
        lr = self.lr_at(trainer)
        for group in trainer.optimizer.param_groups:
            group["lr"] = lr


class Reseed(Hook):
    """Seeds the global RNGs at each epoch's start from (seed, epoch): a resumed epoch draws what it
    would have drawn, and no RNG state needs saving."""

    def __init__(self, seed_of_epoch: Callable[[int], None]) -> None:
        self.seed_of_epoch = seed_of_epoch

    def before_epoch(self, trainer: Trainer) -> None:
        self.seed_of_epoch(trainer.epoch)


class FiniteLoss(Hook):
    """Stops the job at the first non-finite loss, naming the run, the step (``epoch e step s``, or the
    iteration for iteration-based jobs) and the lr, before any state, checkpoint or metrics file of that
    step is written (list it before the hooks that write)."""

    def __init__(self, run: str, fix: str, *, iterations: bool = False) -> None:
        self.run, self.fix, self.iterations = run, fix, iterations

    def after_step(self, trainer: Trainer) -> None:
        where = trainer.iter if self.iterations else f"epoch {trainer.epoch + 1} step {trainer.step_in_epoch}"
        check_finite_loss(trainer.loss, run=self.run, step=where, lr=trainer.lr, fix=self.fix)


class ProgressLog(Hook):
    """The job's ``Progress`` bar or log line after every step: the epoch's mean loss, or (``mean=False``)
    the step's loss and lr."""

    def __init__(self, progress: Progress, *, mean: bool = True) -> None:
        self.progress, self.mean = progress, mean

    def after_step(self, trainer: Trainer) -> None:
        if self.mean:
            self.progress.update(loss=trainer.epoch_loss)
        else:
            self.progress.update(loss=trainer.loss, lr=trainer.lr)


class TensorBoard(Hook):
    """Scalars (loss, its parts, lr) every ``every`` steps and per-epoch means to TensorBoard event files
    in ``log_dir``. A fresh run (not resumed) first removes the events of an earlier run there."""

    def __init__(self, log_dir: Path, *, every: int = 1, fresh: bool = True, enabled: bool = True) -> None:
        self.log_dir, self.every, self.fresh, self.enabled = Path(log_dir), max(every, 1), fresh, enabled
        self.writer: Any = None

    def before_train(self, trainer: Trainer) -> None:
        if not self.enabled:
            return
        from torch.utils.tensorboard import SummaryWriter  # imported here: it costs ~1 s at start-up

        if self.fresh:
            shutil.rmtree(self.log_dir, ignore_errors=True)
        self.writer = SummaryWriter(str(self.log_dir))

    def after_step(self, trainer: Trainer) -> None:
        if self.writer is None or trainer.iter % self.every:
            return
        self.writer.add_scalar("train/loss", trainer.loss, trainer.iter)
        for name, value in trainer.losses.items():
            self.writer.add_scalar(f"train/{name}", value, trainer.iter)
        self.writer.add_scalar("train/lr", trainer.lr, trainer.iter)

    def after_epoch(self, trainer: Trainer) -> None:
        if self.writer is not None:
            self.writer.add_scalar("epoch/loss", trainer.epoch_loss, trainer.epoch + 1)
            self.writer.flush()

    def after_train(self, trainer: Trainer) -> None:
        if self.writer is not None:
            self.writer.close()


class EpochCheckpoint(Hook):
    """Resumable state (model, optimizer, epoch and ``extra()``) every ``every`` epochs and after the last."""

    def __init__(
        self,
        resume: ResumeState,
        every: int,
        *,
        model: Callable[[], dict[str, Any]],
        extra: Callable[[], dict[str, Any]] = dict,
        enabled: bool = True,
    ) -> None:
        self.resume, self.every, self.model, self.extra, self.enabled = resume, every, model, extra, enabled

    def after_epoch(self, trainer: Trainer) -> None:
        done = trainer.epoch + 1
        if self.enabled and (done % self.every == 0 or done == trainer.epochs):
            self.resume.save(
                model=self.model(), optimizer=trainer.optimizer.state_dict(), epoch=done, **trainer.state(),
                **self.extra(),
            )  # fmt: skip


class History(Hook):
    """One summary per epoch in ``records``: epoch (1-based), lr, mean loss, items/s and seconds."""

    def __init__(self, records: list[dict[str, Any]], items_per_step: int) -> None:
        self.records, self.items_per_step = records, items_per_step

    def after_epoch(self, trainer: Trainer) -> None:
        seconds = trainer.epoch_seconds
        self.records.append(
            {
                "epoch": trainer.epoch + 1,
                "lr": trainer.lr,
                "loss": trainer.epoch_loss,
                "img_per_s": trainer.epoch_steps * self.items_per_step / max(seconds, 1e-9),
                "seconds": seconds,
            }
        )


class EpochEnd(Hook):
    """Calls ``action(trainer)`` after each epoch (an epoch's log line, a kept backbone, ...)."""

    def __init__(self, action: Callable[[Trainer], None]) -> None:
        self.action = action

    def after_epoch(self, trainer: Trainer) -> None:
        self.action(trainer)


class IterationCheckpoint(Hook):
    """Resumable state (model, optimizer, iteration, ``extra()``, the RNG) every ``period`` iterations
    before the last; the job's outputs follow the last one, so no state is needed there."""

    def __init__(
        self, resume: ResumeState, period: int, last: int, *, extra: Callable[[], dict[str, Any]] = dict
    ) -> None:
        self.resume, self.period, self.last, self.extra = resume, period, last, extra

    def after_step(self, trainer: Trainer) -> None:
        done = trainer.iter
        if self.period and done % self.period == 0 and done < self.last:
            self.resume.save(
                model=trainer.model.state_dict(), optimizer=trainer.optimizer.state_dict(), iteration=done,
                **trainer.state(), **self.extra(),
            )  # fmt: skip


class PeriodicEval(Hook):
    """``evaluate(iteration)`` every ``period`` iterations before the last (Figure 4's curves)."""

    def __init__(self, period: int, last: int, evaluate: Callable[[int], None]) -> None:
        self.period, self.last, self.evaluate = period, last, evaluate

    def after_step(self, trainer: Trainer) -> None:
        if self.period and trainer.iter % self.period == 0 and trainer.iter < self.last:
            self.evaluate(trainer.iter)
