"""Index samplers for iteration-based training (detectron2 style): batches are a function of the iteration."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Sampler


def orientation_groups(sizes: Iterable[tuple[int, int]]) -> list[int]:
    """Each (width, height)'s group in detectron2's AspectRatioGroupedDataset: 0 if wider than high, else 1
    (square images go with the tall ones)."""
    return [0 if width > height else 1 for width, height in sizes]


class IterationSampler(Sampler):
    """Batches for iterations ``start..max_iter``: reshuffled each pass, flips drawn per iteration.

    The sampled stream is one seeded permutation of the data after another. Without ``groups`` a batch is
    the stream's next ``batch`` positions. With ``groups`` (one group id per position, e.g.
    ``orientation_groups``) it is formed as detectron2's ``DATALOADER.ASPECT_RATIO_GROUPING`` does: the
    stream fills one bucket per group, and a bucket is a batch when full. Every batch is a function of
    (seed, iteration), so a resumed run sees the batches it would have seen: grouping replays the stream
    from its start (positions only, no data is read).
    """

    def __init__(
        self,
        size: int,
        batch: int,
        seed: int,
        start: int,
        stop: int,
        flip: bool,
        groups: Sequence[int] | None = None,
    ) -> None:
        if groups is not None and len(groups) != size:
            raise ValueError(f"groups: {len(groups)} group ids for {size} positions")
        self.size, self.batch, self.seed = size, batch, seed
        self.start, self.stop, self.flip, self.groups = start, stop, flip, groups
        self._epoch, self._permutation = -1, []

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self) -> Iterator[list[tuple[int, bool]]]:
        for iteration, positions in self._positions():
            flips = torch.rand(
                self.batch, generator=torch.Generator().manual_seed(self.seed * 7919 + iteration)
            )
            yield [(p, bool(f < 0.5) and self.flip) for p, f in zip(positions, flips.tolist(), strict=True)]

    def _positions(self) -> Iterator[tuple[int, list[int]]]:
        """(iteration, its batch's positions) for ``start..stop``."""
        if self.groups is None:
            for iteration in range(self.start, self.stop):
                first = iteration * self.batch
                yield iteration, [self._at(k) for k in range(first, first + self.batch)]
            return
        buckets: dict[int, list[int]] = {}
        iteration, k = 0, 0
        while iteration < self.stop:
            position = self._at(k)
            bucket = buckets.setdefault(self.groups[position], [])
            bucket.append(position)
            k += 1
            if len(bucket) == self.batch:
                if iteration >= self.start:
                    yield iteration, bucket[:]
                bucket.clear()
                iteration += 1

    def _at(self, k: int) -> int:
        """The stream's ``k``-th position."""
        epoch = k // self.size
        if epoch != self._epoch:
            self._epoch, self._permutation = epoch, self._order(epoch)
        return self._permutation[k % self.size]

    def _order(self, epoch: int) -> list[int]:
        return torch.randperm(
            self.size, generator=torch.Generator().manual_seed(self.seed * 104729 + epoch)
        ).tolist()


def detection_sampler(data: Any, spec: dict[str, Any], seed: int, start: int, stop: int) -> IterationSampler:
    """A detection protocol's training batches for iterations start..stop (``data.records`` carry width and
    height): each of one orientation with ``aspect_ratio_grouping``, flips drawn per iteration."""
    sizes = [(r.width, r.height) for r in data.records]
    groups = orientation_groups(sizes) if spec["aspect_ratio_grouping"] else None
    return IterationSampler(len(data), spec["ims_per_batch"], seed, start, stop, True, groups)
