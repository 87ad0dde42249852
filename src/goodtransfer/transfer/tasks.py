"""Downstream tasks by name: a protocol in the config's ``transfer`` section names its ``task``.

Each task module has ``run(spec, checkpoint, data_root, metrics_out, state_dir)`` and reads datasets of
one kind. VOC detection and the linear readout predate this registry and keep their own rules.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from goodtransfer.io import InputError


@dataclass(frozen=True)
class Task:
    module: str
    data_kind: str
    summary: str


TASKS: dict[str, Task] = {
    "coco_instance": Task(
        "goodtransfer.transfer.coco_instance", "coco", "Mask R-CNN R50-C4 detection + instance segmentation"
    ),
    "segmentation": Task("goodtransfer.transfer.deeplab", "cityscapes", "DeepLab-v3 semantic segmentation"),
    "fewshot": Task("goodtransfer.transfer.fewshot", "miniimagenet", "few-shot episodes on frozen features"),
    "landmarks": Task("goodtransfer.transfer.landmarks", "celeba", "MAFL facial landmark regression"),
}


def task(name: str) -> Task:
    if name not in TASKS:
        raise InputError(f"transfer task {name!r} is unknown; expected one of {sorted(TASKS)}")
    return TASKS[name]


def runner(name: str) -> Callable[[dict[str, Any], Path, Path, Path, Path], None]:
    return importlib.import_module(task(name).module).run
