"""(image, label) pairs from lists, for pretraining on datasets that are not class folders."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from goodtransfer.data.images import open_rgb


class LabelledImages(Dataset):
    """(image, label) pairs from lists, for pretraining on datasets that are not class folders."""

    def __init__(self, paths: Sequence[Path], labels: Sequence[int], transform: Callable | None) -> None:
        self.paths, self.targets, self.transform = list(paths), list(labels), transform
        self.classes = sorted(set(self.targets))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = open_rgb(self.paths[index])
        return (self.transform(image) if self.transform else image), self.targets[index]
