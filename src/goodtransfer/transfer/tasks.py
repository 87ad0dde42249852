"""Downstream tasks by name: each protocol of the config's ``downstream`` section names its ``task``.

A task module has ``run(job: DownstreamJob) -> metrics``: it builds its network from the backbone, trains
through ``goodtransfer.engine.Trainer`` with the job's resumable state (the few-shot task trains its episode
classifiers batched) and evaluates. ``run`` here does what every task shares: the spec checked against its
task's settings (``$defs/<task>`` of the config schema), the seed, and metrics.json written last with the
job's provenance; the state folder goes once it is written. Files a task writes beside the metrics
(``DownstreamJob.write_beside``) are listed in them with their SHA-256, so a reader can tell the pair that
one job made (the false-positive analysis checks its detections so).
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from goodtransfer.io import InputError, spec_hash, write_json

if TYPE_CHECKING:
    from goodtransfer.resume import ResumeState

# Only light modules at import: the config checker reads TASKS while Snakemake starts (torch would add
# seconds to every `snakemake` start); what runs jobs imports torch inside.


@dataclass(frozen=True)
class Task:
    module: str
    data_kind: str
    summary: str
    gives_backbone: bool = False  # a trained network's ResNet can be a pretraining run (method: task)


TASKS: dict[str, Task] = {
    "linear": Task("goodtransfer.transfer.linear", "imagefolder", "linear classifier on frozen features"),
    "voc_detection": Task("goodtransfer.transfer.voc_detection", "voc", "Faster R-CNN R50-C4 detection"),
    "coco_instance": Task(
        "goodtransfer.transfer.coco_instance", "coco", "Mask R-CNN R50-C4 boxes + instance masks", True
    ),
    "segmentation": Task("goodtransfer.transfer.deeplab", "cityscapes", "DeepLab-v3 segmentation", True),
    "fewshot": Task("goodtransfer.transfer.fewshot", "miniimagenet", "few-shot episodes on frozen features"),
    "landmarks": Task("goodtransfer.transfer.landmarks", "celeba", "MAFL facial landmark regression"),
}


@dataclass(frozen=True)
class DownstreamJob:
    """One run of a protocol: its resolved spec (``config.downstream_spec``), the backbone, the data and
    where its outputs and resumable state go."""

    spec: dict[str, Any]
    checkpoint: Path
    data: Path
    metrics: Path
    state_dir: Path
    extra_train: Sequence[tuple[Path, str]] = ()
    data_checks: Sequence[Path] = ()
    backbone_out: Path | None = None  # method task: the trained network's ResNet goes here
    where: str = ""  # the config key its settings come from (messages); default downstream.<protocol>

    @property
    def folder(self) -> Path:
        return Path(self.metrics).parent

    @property
    def log_dir(self) -> Path:
        """TensorBoard event files, beside the metrics."""
        return self.folder / "tensorboard"

    def resume_state(self) -> ResumeState:
        """The job's resumable state, keyed on the spec, the backbone's bytes and the data."""
        from goodtransfer.resume import ResumeState, downstream_key

        roots = ";".join(dict.fromkeys(str(root) for root in [self.data, *(r for r, _ in self.extra_train)]))
        key = downstream_key(self.spec, self.checkpoint, roots, self.data_checks)
        return ResumeState(self.state_dir, key)

    def write_beside(self, name: str, payload: Any) -> tuple[str, str]:
        """Write ``payload`` as JSON beside the metrics (atomically); (name, SHA-256) for the metrics."""
        from goodtransfer.resume import file_digest

        path = self.folder / name
        write_json(path, payload)
        return name, file_digest(path)


def task(name: str) -> Task:
    if name not in TASKS:
        raise InputError(f"downstream task {name!r} is unknown; expected one of {sorted(TASKS)}")
    return TASKS[name]


def check(spec: dict[str, Any], where: str, gives_backbone: bool = False) -> None:
    """Refuse a spec its task cannot run, naming ``where`` its settings come from: an unknown task, a
    dataset of another kind, a task that cannot give a backbone (``gives_backbone``), a setting the
    task's definition does not allow."""
    from goodtransfer.schema import check_task_entry, task_entry

    name = spec.get("task")
    expected = task(name).data_kind
    if spec.get("data_kind") != expected:
        raise InputError(
            f"config: {where}: dataset {spec.get('dataset')!r} is of kind {spec.get('data_kind')!r}; "
            f"task {name!r} expects a {expected!r} dataset"
        )
    if gives_backbone and not task(name).gives_backbone:
        able = [other for other, entry in TASKS.items() if entry.gives_backbone]
        raise InputError(f"config: {where}: task {name!r} cannot save a backbone; expected one of {able}")
    check_task_entry(where, name, task_entry(spec))


def run(job: DownstreamJob) -> dict[str, Any]:
    """Check the spec, run its task, write metrics.json (last), remove the state; returns the metrics."""
    from goodtransfer.resume import clear_state, seed_everything

    spec, began = job.spec, time.time()
    check(spec, job.where or f"downstream.{spec.get('protocol')}", job.backbone_out is not None)
    seed_everything(spec["seed"])
    metrics = importlib.import_module(task(spec["task"]).module).run(job)
    metrics.update(
        task=spec["task"], run=spec["run"], config_hash=spec_hash(spec), checkpoint=str(job.checkpoint)
    )
    write_json(job.metrics, {**metrics, "seconds": round(time.time() - began, 1)})
    clear_state(job.state_dir)
    return metrics


def file_beside(metrics: Path, name: str) -> Path:
    """The file ``name`` a job wrote beside ``metrics``, checked against the SHA-256 the metrics record:
    a file from another run of the job (or edited since) fails here instead of mixing two runs."""
    from goodtransfer.io import read_json
    from goodtransfer.resume import file_digest

    recorded = read_json(metrics).get("files", {})
    path = Path(metrics).parent / name
    if name not in recorded:
        raise InputError(f"{metrics}: lists no {name} among the files its job wrote ({sorted(recorded)})")
    if not path.is_file():
        raise InputError(f"{path}: missing; its job's metrics ({metrics}) say it wrote it: rerun that job")
    if file_digest(path) != recorded[name]:
        raise InputError(
            f"{path}: not the file its job wrote (SHA-256 differs from {metrics}'s record); rerun the job "
            f"(snakemake -f {metrics})"
        )
    return path
