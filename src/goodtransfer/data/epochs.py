"""Epoch-based training data, built once per run: one dataset scan, one DataLoader, workers kept alive.

Every epoch's order is a function of (seed, epoch), and every sample's random augmentation a function of
(seed, epoch, index): the images are the same whatever the number of loader workers, and a run resumed at
an epoch boundary sees the epochs it would have seen.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from goodtransfer.io import InputError


class EpochIndices(DistributedSampler):
    """This rank's ``(epoch, index)`` pairs of the epoch set by ``set_epoch``, shuffled by (seed, epoch)
    (a ``DistributedSampler``; one rank of one in a single process)."""

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        epoch = self.epoch
        return ((epoch, index) for index in super().__iter__())


class DecodedImages(Dataset):
    """``dataset``'s (image, label) pairs, each read and decoded once and then kept in memory: for the small
    stand-ins, whose epochs would otherwise decode every file again (each loader worker keeps its own)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset, self.decoded = dataset, {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        if index not in self.decoded:
            self.decoded[index] = self.dataset[index]
        return self.decoded[index]


class SeededSamples(Dataset):
    """``dataset``'s (image, label) ``index`` for an ``(epoch, index)`` key, the image through ``transform``
    with torch's and Python's generators seeded by (seed, epoch, index); the process's generators are left
    as they were."""

    def __init__(self, dataset: Any, transform: Callable[[Any], Any], seed: int) -> None:
        self.dataset, self.transform, self.seed = dataset, transform, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        seed = ((self.seed * 1_000_003 + epoch) * 10_000_019 + index) % 2**63
        python_state = random.getstate()
        with torch.random.fork_rng(devices=[]):  # the CPU generator only: the model's GPU draws are not ours
            torch.default_generator.manual_seed(seed)
            random.seed(seed)
            try:
                image, label = self.dataset[index]
                return self.transform(image), label
            finally:
                random.setstate(python_state)


def loader_workers(setting: int | str, device: torch.device) -> int:
    """Loader processes for ``workers``: a number, or ``auto``: on a GPU the process's threads (its share
    of the job's CPUs, ``--threads``) less one for the training loop; on the CPU none, since the training
    step's threads already take the job's CPUs."""
    if setting == "auto":
        return max(torch.get_num_threads() - 1, 0) if device.type == "cuda" else 0
    if isinstance(setting, int) and not isinstance(setting, bool) and setting >= 0:
        return setting
    raise InputError(f"workers: {setting!r}; expected a number of loader processes (0 or more) or 'auto'")


def epoch_loader(
    dataset: Any,
    transform: Callable[[Any], Any],
    batch_size: int,
    seed: int,
    workers: int,
    device: torch.device,
    *,
    rank: int = 0,
    world_size: int = 1,
    cache_images: bool = False,
) -> DataLoader:
    """Whole batches of this rank's share of ``dataset`` (built without a transform) through ``transform``,
    for the epoch set by ``at_epoch``. On a GPU the batches come in pinned memory; workers, if any, live for
    the whole run. ``cache_images`` keeps every decoded image in memory after its first read."""
    samples = SeededSamples(DecodedImages(dataset) if cache_images else dataset, transform, seed)
    sampler = EpochIndices(
        samples, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
    )
    return DataLoader(
        samples,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(seed),  # its seed draws leave the model's generator alone
    )


def at_epoch(loader: DataLoader) -> Callable[[int], DataLoader]:
    """``batches(epoch)`` for the ``Trainer``: the same loader, its sampler set to the epoch."""

    def batches(epoch: int) -> DataLoader:
        loader.sampler.set_epoch(epoch)
        return loader

    return batches
