"""Epoch data built once per run: each epoch's batches depend on (seed, epoch) alone, never on the number
of loader workers or on what the process drew before."""

from __future__ import annotations

import random

import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from goodtransfer.data.epochs import at_epoch, epoch_loader, loader_workers
from goodtransfer.io import InputError
from goodtransfer.pretrain.augment import RandomGaussianBlur, TwoViews

CPU = torch.device("cpu")


class Pictures:
    """Twelve small RGB images with labels, as a pretraining dataset built without a transform."""

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(0)
        self.images = [
            torch.randint(0, 256, (20, 20, 3), generator=generator, dtype=torch.uint8) for _ in range(12)
        ]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[index].numpy()), index % 3


# torch's generator (crop, flip) and Python's (the blur's sigma) both drawn per sample.
BLUR = T.RandomApply([RandomGaussianBlur([0.1, 2.0])], p=0.5)
AUGMENT = TwoViews(
    T.Compose([T.RandomResizedCrop(16, (0.2, 1.0)), BLUR, T.RandomHorizontalFlip(), T.PILToTensor()])
)


def _epoch(workers: int, epoch: int, seed: int = 5) -> list:
    loader = epoch_loader(Pictures(), AUGMENT, 4, seed, workers, CPU)
    return list(at_epoch(loader)(epoch))


def _same(a: list, b: list) -> bool:
    return all(
        torch.equal(va, vb) for (views_a, la), (views_b, lb) in zip(a, b, strict=True)
        for va, vb in zip([*views_a, la], [*views_b, lb], strict=True)
    )  # fmt: skip


def test_an_epochs_batches_do_not_depend_on_the_number_of_workers():
    alone, with_workers = _epoch(0, 2), _epoch(2, 2)
    assert len(alone) == 3 and _same(alone, with_workers)
    assert not _same(alone, _epoch(0, 3))  # another epoch: another order and other crops
    assert not _same(alone, _epoch(0, 2, seed=6))


def test_one_loader_serves_every_epoch_as_a_fresh_one_would():
    loader = epoch_loader(Pictures(), AUGMENT, 4, 5, 2, CPU)  # persistent workers across epochs
    batches = at_epoch(loader)
    first, second, again = list(batches(0)), list(batches(1)), list(batches(0))
    assert _same(first, _epoch(0, 0)) and _same(second, _epoch(0, 1)) and _same(again, first)


def test_loading_leaves_the_process_generators_alone():
    torch.manual_seed(1)
    random.seed(1)
    torch_state, python_state = torch.get_rng_state(), random.getstate()
    _epoch(0, 0)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert random.getstate() == python_state


def test_auto_workers_use_the_process_threads_on_a_gpu_only():
    threads = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        assert loader_workers("auto", torch.device("cuda")) == 3
        assert loader_workers("auto", CPU) == 0
        assert loader_workers(2, CPU) == 2
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(InputError, match="workers: 'many'"):
        loader_workers("many", CPU)
