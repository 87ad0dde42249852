"""detectron2's PreciseBN (MoCo's ``TEST.PRECISE_BN``): after training, every BatchNorm's running statistics
become the mean of its batch statistics over a number of training batches, instead of the momentum average
that lags behind the last weights."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from goodtransfer.engine.trainer import Hook, Trainer

BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@torch.no_grad()
def update_bn_stats(
    model: nn.Module, batches: Iterable[Any], forward: Callable[[nn.Module, Any], Any]
) -> int:
    """Average each BatchNorm's batch statistics over ``batches``; returns how many batches ran."""
    norms = [m for m in model.modules() if isinstance(m, BN_TYPES) and m.track_running_stats]
    if not norms:
        return 0
    momenta = [bn.momentum for bn in norms]
    sums = [(torch.zeros_like(bn.running_mean), torch.zeros_like(bn.running_var)) for bn in norms]
    for bn in norms:
        bn.momentum = 1.0  # running stats := this batch's stats
    model.train()
    count = 0
    for count, batch in enumerate(batches, start=1):
        forward(model, batch)
        for bn, (mean, var) in zip(norms, sums, strict=True):
            mean += (bn.running_mean - mean) / count
            var += (bn.running_var - var) / count
    for bn, (mean, var), momentum in zip(norms, sums, momenta, strict=True):
        if count:
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
        bn.momentum = momentum
    return count


class PreciseBN(Hook):
    """``update_bn_stats`` after training, over ``batches()`` (``iterations`` of them; 0 turns it off)."""

    def __init__(
        self, iterations: int, batches: Callable[[], Iterable[Any]], forward: Callable[[nn.Module, Any], Any]
    ) -> None:
        self.iterations, self.batches, self.forward = iterations, batches, forward

    def after_train(self, trainer: Trainer) -> None:
        if self.iterations > 0:
            with trainer.compute.autocast():  # the statistics of the forward pass that trained
                update_bn_stats(trainer.model, self.batches(), self.forward)
