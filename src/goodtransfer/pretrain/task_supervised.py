"""Supervised pretraining by a downstream task: Table 2's COCO and Synthia rows.

The paper's supervised COCO model is "a backbone taken from a supervised detection network" trained on
train2017 with box labels, and its Synthia model "a supervised segmentation network" trained with pixel
labels. A run with ``method: task`` trains the registered task ``task`` (``transfer.tasks.TASKS``) with
``task_settings`` on the run's own dataset, and its trained ResNet becomes the run's checkpoint.

The network starts from random initialisation: the paper does not say how its detection and segmentation
networks were initialised, and starting from an ImageNet model would leak ImageNet labels into a row
meant to show what COCO boxes or Synthia pixels teach. ``init_from`` (a checkpoint path, any layout
``checkpoint_import`` reads) starts from that backbone instead, for users who want otherwise.

Spec keys: ``task``, ``task_settings`` (the task's own spec keys, e.g. ``coco_instance``'s), ``arch``,
``seed``, ``run``, optional ``init_from``; ``device``, ``precision``, ``channels_last`` pass through.
Files under ``state_dir``: ``init.pt`` (the starting backbone, reused on resume), ``task/`` (the task's
resumable state) and ``task_metrics.json`` (what the task measured on its own test split).

Layering: this is the one place where ``pretrain`` uses ``transfer`` (it runs a downstream task), and the
dependency is one-way: ``transfer`` never imports ``pretrain`` (``tests/test_layering.py`` holds it).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from goodtransfer.checkpoint import load_backbone, save_backbone
from goodtransfer.checkpoint_import import load_any_backbone
from goodtransfer.io import InputError, spec_hash, write_json
from goodtransfer.models.backbone import backbone_state_dict, build_resnet
from goodtransfer.resume import clear_state, file_digest, seed_everything
from goodtransfer.transfer import tasks

COMPUTE_KEYS = ("device", "precision", "channels_last")


def task_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The task's spec: its settings, task and dataset plus the pretraining run's seed, name and compute."""
    if "task" not in spec or not isinstance(spec.get("task_settings"), Mapping):
        raise InputError(
            f"config: pretrain.runs.{spec.get('run')}: method task needs keys task (a task name) and "
            "task_settings"
        )
    compute = {key: spec[key] for key in COMPUTE_KEYS if key in spec}
    identity = {key: spec.get(key) for key in ("task", "dataset", "data_kind", "seed", "run")}
    return {**spec["task_settings"], **identity, **compute}


def initial_checkpoint(spec: Mapping[str, Any], state_dir: Path) -> Path:
    """``state_dir/init.pt``: random ``arch`` weights seeded with ``seed``, or ``init_from``'s backbone;
    written once (atomically) and reused on resume while arch, seed and init_from's bytes stay the same."""
    path = Path(state_dir) / "init.pt"
    init_from = spec.get("init_from")
    source = file_digest(init_from) if init_from and Path(init_from).is_file() else None
    key = spec_hash({**{name: spec.get(name) for name in ("arch", "seed", "init_from")}, "bytes": source})
    if path.is_file() and load_backbone(path)[1].get("init_key") == key:
        return path
    if spec.get("init_from"):
        weights, _ = load_any_backbone(spec["init_from"], arch=spec["arch"])
        method = "imported"
    else:
        seed_everything(spec["seed"])
        weights, method = backbone_state_dict(build_resnet(spec["arch"])), "random"
    meta = {"method": method, "run": spec["run"], "arch": spec["arch"], "epoch": 0, "init_key": key}
    save_backbone(path, weights, {**meta, "source": str(spec.get("init_from") or "")})
    return path


def train_task_backbone(
    spec: dict[str, Any],
    data_root: Path,
    out: Path,
    state_dir: Path,
    log_json: Path,
    data_checks: Sequence[Path] = (),
) -> None:
    """Train the task network from ``initial_checkpoint`` on ``data_root``; its ResNet goes to ``out``."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise InputError(
            f"config: pretrain.runs.{spec['run']}: method task runs in one process; "
            "give the job one GPU (the task itself is not data parallel)"
        )
    state_dir, settings, where = (
        Path(state_dir),
        task_spec(spec),
        f"pretrain.runs.{spec['run']}.task_settings",
    )
    tasks.check(settings, where, gives_backbone=True)  # before anything is written
    job = tasks.DownstreamJob(
        settings, initial_checkpoint(spec, state_dir), Path(data_root), state_dir / "task_metrics.json",
        state_dir / "task", data_checks=data_checks, backbone_out=Path(out), where=where,
    )  # fmt: skip
    task_metrics = tasks.run(job)
    write_json(
        log_json,
        {
            "run": spec["run"],
            "config_hash": spec_hash(spec),
            "spec": spec,
            "history": [],
            "task": spec["task"],
            "task_metrics": task_metrics,
        },
    )
    events, kept = state_dir / "tensorboard", Path(out).parent / "tensorboard"  # the task's scalars stay
    if events.is_dir():
        shutil.rmtree(kept, ignore_errors=True)
        shutil.move(events, kept)
    clear_state(state_dir)
