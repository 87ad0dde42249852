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
from torch import nn

from goodtransfer.engine.precise_bn import BN_TYPES

aten = torch.ops.aten


class _ChunkNorm(torch.autograd.Function):
    """Batch normalisation of each of ``splits`` chunks of the batch with the chunk's own statistics,
    each chunk written in place into one output (no concatenation, forward or backward); the first chunk
    alone updates the running statistics. The kernels are ``F.batch_norm``'s native ones on each chunk.

    Why per-chunk kernels written in place (ResNet-50 on one CPU thread): one vectorised normalisation
    over an (S, N/S, C, H, W) view took 2.5-3x a BatchNorm's forward+backward; per-chunk ``F.batch_norm``
    with concatenation cost 6-8% of the MoCo step; in place the layer is on par with an unsplit one."""

    @staticmethod
    def forward(ctx, input, weight, bias, running_mean, running_var, factor, eps, splits):  # noqa: ANN001
        output = torch.empty_like(input)
        stats = input.new_empty(
            2, splits, input.shape[1], dtype=torch.promote_types(input.dtype, torch.float)
        )
        for i, (chunk, out) in enumerate(zip(input.chunk(splits), output.chunk(splits), strict=True)):
            mean, var = (running_mean, running_var) if i == 0 else (None, None)
            aten.native_batch_norm.out(
                chunk, weight, bias, mean, var, True, factor, eps, out=out, save_mean=stats[0, i],
                save_invstd=stats[1, i],
            )  # fmt: skip
        ctx.save_for_backward(input, weight, stats)
        ctx.eps, ctx.splits = eps, splits
        return output

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        input, weight, stats = ctx.saved_tensors
        grad = grad.contiguous(memory_format=_format(input))
        grad_input, affine = torch.empty_like(input), weight is not None
        sums = stats.new_zeros(2, input.shape[1])  # d weight, d bias
        parts = stats.new_empty(2, input.shape[1])
        chunks = zip(
            input.chunk(ctx.splits), grad.chunk(ctx.splits), grad_input.chunk(ctx.splits), strict=True
        )
        for i, (chunk, grad_out, out) in enumerate(chunks):
            aten.native_batch_norm_backward.out(
                grad_out, chunk, weight, None, None, stats[0, i], stats[1, i], True, ctx.eps,
                [True, affine, affine], out0=out, out1=parts[0], out2=parts[1],
            )  # fmt: skip
            if affine:
                sums += parts
        if not affine:
            return grad_input, None, None, None, None, None, None, None
        grad_weight, grad_bias = sums.to(weight.dtype)
        return grad_input, grad_weight, grad_bias, None, None, None, None, None


def _format(tensor: torch.Tensor) -> torch.memory_format:
    channels_last = tensor.is_contiguous(memory_format=torch.channels_last) and not tensor.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format


class SplitBatchNorm2d(nn.BatchNorm2d):
    """A ``BatchNorm2d`` (same parameters, buffers and state_dict keys) that, in training with
    ``splits`` > 1, normalises each of the batch's ``splits`` chunks with the chunk's own statistics."""

    splits: int = 1

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.splits == 1 or not self.training:
            return super().forward(input)
        factor = 0.0
        if self.track_running_stats:  # the first chunk's update, as BatchNorm2d.forward makes it
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        input = input.contiguous(memory_format=_format(input))
        return _ChunkNorm.apply(
            input, self.weight, self.bias, self.running_mean, self.running_var, factor, self.eps, self.splits
        )


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
