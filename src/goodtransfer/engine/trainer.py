"""The training loop, written once: epochs of batches, a step that sums a loss dict, hooks around it.

As in detectron2's ``TrainerBase``, what varies between jobs is not the loop but what happens around each
step: the learning-rate schedule, non-finite checks, progress lines, TensorBoard scalars, resumable state,
kept backbones. Each is a ``Hook``; a job builds its model, data and loss and lists its hooks.

An iteration-based job (detectron2's ``max_iter``) is one epoch whose batches run from the resumed
iteration to the last; an epoch-based job (pretraining, readouts) gets each epoch's batches from
``batches(epoch)`` (pretraining: one loader built per run, set to the epoch, ``data.epochs``) so that each
epoch's order depends on (seed, epoch) alone and a resumed run repeats it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from goodtransfer.device import Compute

# loss(model, batch) -> {name: scalar tensor}; their sum is what is minimised.
LossFn = Callable[[nn.Module, Any], Mapping[str, torch.Tensor]]


class Hook:
    """Called by ``Trainer.train`` around the loop; override what the hook needs."""

    def before_train(self, trainer: Trainer) -> None: ...

    def before_epoch(self, trainer: Trainer) -> None: ...

    def before_step(self, trainer: Trainer) -> None: ...

    def after_step(self, trainer: Trainer) -> None: ...

    def after_epoch(self, trainer: Trainer) -> None: ...

    def after_train(self, trainer: Trainer) -> None: ...


class Trainer:
    """Trains ``model`` with ``optimizer`` over ``epochs`` epochs of ``batches(epoch)``; ``autocast``: run
    the loss under the job's ``Compute.autocast`` (bf16/fp16 where configured).

    State a hook may read: ``epoch`` (0-based, current), ``iter`` (steps done over the whole run, resumed
    ones included), ``step_in_epoch`` (1-based, after a step), ``loss`` (the summed loss of the last
    step, a float), ``losses`` (its parts), ``epoch_loss`` (mean of this epoch's steps so far),
    ``epoch_steps`` and ``epoch_seconds``."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        compute: Compute,
        *,
        loss: LossFn,
        batches: Callable[[int], Iterable[Any]],
        epochs: int,
        hooks: Sequence[Hook] = (),
        autocast: bool = True,
    ) -> None:
        self.model, self.optimizer, self.compute, self.autocast = model, optimizer, compute, autocast
        self.loss_fn, self.batches, self.epochs = loss, batches, epochs
        self.hooks = list(hooks)
        # fp16 autocast needs loss scaling (bf16 has fp32's range and does not); off, it is a pass-through.
        self.scaler = torch.amp.GradScaler(compute.device.type, enabled=compute.precision == "fp16")
        self.epoch, self.iter, self.step_in_epoch = 0, 0, 0
        self.loss, self.losses = float("nan"), {}
        self.epoch_loss, self.epoch_steps, self.epoch_seconds = float("nan"), 0, 0.0

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def train(
        self, start_epoch: int = 0, start_iter: int = 0, resumed: Mapping[str, Any] | None = None
    ) -> None:
        """Run epochs ``start_epoch..epochs-1``; ``start_iter`` is the step count already done; ``resumed``:
        the saved state the job resumed from (the loss scale of an fp16 run continues from it)."""
        if resumed and "scaler" in resumed:
            self.scaler.load_state_dict(resumed["scaler"])
        self.iter = start_iter
        self._call("before_train")
        for epoch in range(start_epoch, self.epochs):
            self.epoch, self.step_in_epoch = epoch, 0
            self._call("before_epoch")
            total, began = 0.0, time.time()
            self.model.train()
            for batch in self.batches(epoch):
                self._call("before_step")
                self.run_step(batch)
                self.iter += 1
                self.step_in_epoch += 1
                total += self.loss
                self.epoch_loss, self.epoch_steps = total / self.step_in_epoch, self.step_in_epoch
                self._call("after_step")
            self.epoch_seconds = time.time() - began
            self._call("after_epoch")
        self._call("after_train")

    def run_step(self, batch: Any) -> None:
        """Forward under the job's autocast, sum the loss dict, backward, step. The loss is read back once
        (one device sync per step, as every loop of this project already paid for its log line)."""
        if self.autocast:
            with self.compute.autocast():
                losses = self.loss_fn(self.model, batch)
        else:  # the loss function autocasts what it wants (a frozen backbone, not the classifier)
            losses = self.loss_fn(self.model, batch)
        total = sum(value.float() for value in losses.values())  # parts may be bf16 under autocast
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.step(self.optimizer)  # fp16: unscales the gradients, skips the step if one is not finite
        self.scaler.update()
        self.loss = float(total.detach())
        self.losses = (
            {name: float(value.detach()) for name, value in losses.items()} if len(losses) > 1 else {}
        )

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps of the loop besides model and optimizer: the fp16 loss scale."""
        return {"scaler": self.scaler.state_dict()} if self.scaler.is_enabled() else {}

    def _call(self, stage: str) -> None:
        for hook in self.hooks:
            getattr(hook, stage)(self)
