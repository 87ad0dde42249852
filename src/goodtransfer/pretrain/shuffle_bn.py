"""Single-process shuffle-BN: one process standing in for ``splits`` GPUs, each normalising its own chunk.

MoCo shuffles the key batch across GPUs so that a query and its key never share BatchNorm statistics. In
one process the batch is cut into ``splits`` equal chunks, and every BatchNorm normalises each chunk with
that chunk's own statistics. Convolutions are per-sample, so they run once on the whole batch; only the
normalisation is split (``SplitBatchNorm2d``). Running statistics take one update per step, from the
first chunk, as those of MoCo's GPU 0 (whose buffers DDP broadcasts every step and whose checkpoint is
kept).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from goodtransfer.engine.precise_bn import BN_TYPES


class SplitBatchNorm2d(nn.BatchNorm2d):
    """A ``BatchNorm2d`` (same parameters, buffers and state_dict keys) that, in training with
    ``splits`` > 1, normalises each of the batch's ``splits`` chunks with the chunk's own statistics."""

    splits: int = 1

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.splits == 1 or not self.training:
            return super().forward(input)
        first, *rest = input.chunk(self.splits)
        # The first chunk updates the running statistics (GPU 0's); the others normalise only. Per-chunk
        # native kernels inside one call measured faster on CPU than one vectorised normalisation over
        # an (S, N/S, C, H, W) view (bench/pretrain_throughput.py's notes), and are bitwise the kernels
        # of a chunk-by-chunk forward.
        outputs = [super().forward(first)]
        for chunk in rest:
            outputs.append(F.batch_norm(chunk, None, None, self.weight, self.bias, True, 0.0, self.eps))
        return torch.cat(outputs)


def split_batchnorms(module: nn.Module) -> nn.Module:
    """``module`` with every ``BatchNorm2d`` replaced, in place, by a ``SplitBatchNorm2d`` holding the same
    values (one split until ``batchnorm_splits`` says otherwise). Other BatchNorm types are refused: they
    would normalise over the whole batch."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            split = SplitBatchNorm2d(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            )
            split.load_state_dict(child.state_dict(), assign=True)  # the same tensors: device and dtype kept
            setattr(module, name, split.train(child.training))
        elif isinstance(child, BN_TYPES) and not isinstance(child, SplitBatchNorm2d):
            raise TypeError(
                f"shuffle-BN splits only BatchNorm2d layers; {name!r} is a {type(child).__name__}, which "
                "would normalise over the whole batch (set moco.shuffle_bn_splits: 1 for this architecture)"
            )
        else:
            split_batchnorms(child)
    return module


@contextmanager
def batchnorm_splits(module: nn.Module, splits: int) -> Iterator[None]:
    """Within the block, ``module``'s ``SplitBatchNorm2d`` layers normalise ``splits`` chunks apart."""
    layers = [m for m in module.modules() if isinstance(m, SplitBatchNorm2d)]
    for layer in layers:
        layer.splits = splits
    try:
        yield
    finally:
        for layer in layers:
            layer.splits = 1


@contextmanager
def running_stats_frozen(module: nn.Module) -> Iterator[None]:
    """BatchNorm layers of ``module`` normalise with batch statistics but leave their running statistics
    (and ``num_batches_tracked``) as they are."""
    layers = [m for m in module.modules() if isinstance(m, BN_TYPES) and m.track_running_stats]
    for layer in layers:
        layer.track_running_stats = False
    try:
        yield
    finally:
        for layer in layers:
            layer.track_running_stats = True


def chunked_forward(encoder: nn.Module, images: torch.Tensor, splits: int) -> torch.Tensor:
    """The reference for ``SplitBatchNorm2d`` (and shuffle-BN's earlier implementation): a whole encoder
    call per chunk, the first updating the running statistics; ``splits`` times the convolution calls."""
    first, *rest = images.chunk(splits)
    outputs = [encoder(first)]
    with running_stats_frozen(encoder):
        outputs += [encoder(chunk) for chunk in rest]
    return torch.cat(outputs)
