"""Index samplers for iteration-based training (detectron2 style): batches are a function of the iteration."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class IterationSampler(Sampler):
    """Batches for iterations ``start..max_iter``: reshuffled each pass, flips drawn per iteration.

    Every batch is a function of (seed, iteration), so a resumed run sees the batches it would have seen.
    """

    def __init__(self, size: int, batch: int, seed: int, start: int, stop: int, flip: bool) -> None:
        self.size, self.batch, self.seed, self.start, self.stop, self.flip = (
            size,
            batch,
            seed,
            start,
            stop,
            flip,
        )

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self) -> Iterator[list[tuple[int, bool]]]:
        for iteration in range(self.start, self.stop):
            first = iteration * self.batch
            positions = [self._order(k // self.size)[k % self.size] for k in range(first, first + self.batch)]
            flips = torch.rand(
                self.batch, generator=torch.Generator().manual_seed(self.seed * 7919 + iteration)
            )
            yield [(p, bool(f < 0.5) and self.flip) for p, f in zip(positions, flips.tolist(), strict=True)]

    def _order(self, epoch: int) -> list[int]:
        return torch.randperm(
            self.size, generator=torch.Generator().manual_seed(self.seed * 104729 + epoch)
        ).tolist()
