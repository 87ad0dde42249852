"""Resumable training state, bound to content: a job resumes only state made from the same resolved spec
and the same bytes of every input it reads (backbone weights, dataset check record, init files).

The state lives at ``<state_dir>/last.pt`` with its key; a job whose key differs starts fresh and says which
input changed. Once the job's outputs are in place the state folder is removed (``clear``), so forcing a
job again (``snakemake -f``) or rerunning it after an upstream change can never pick up old state.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from goodtransfer.checkpoint import load_torch, save_torch
from goodtransfer.io import spec_hash


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "python": random.getstate()}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (a checkpoint, a check record, an init file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def listing_digest(root: str | os.PathLike[str]) -> str:
    """SHA-256 over (relative path, size, mtime) of every file under ``root``, links followed: the
    dataset's identity when no check record is given (a direct call rather than a workflow job)."""
    root = Path(root)
    digest = hashlib.sha256()
    entries = []
    for folder, _, files in os.walk(root, followlinks=True):
        for name in files:
            path = Path(folder) / name
            stat = path.stat()
            entries.append(f"{path.relative_to(root)}|{stat.st_size}|{stat.st_mtime_ns}")
    for entry in sorted(entries):
        digest.update(entry.encode() + b"\n")
    return digest.hexdigest()


def dataset_digest(root: str | os.PathLike[str], checks: Iterable[str | os.PathLike[str]] = ()) -> str:
    """The dataset's content identity: its root and the bytes of its check records (written by
    ``goodtransfer check-dataset``, they hold the files' digest), else a listing of the files."""
    checks = [Path(path) for path in checks]
    parts = [str(root)] + ([file_digest(path) for path in checks] if checks else [listing_digest(root)])
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


# What a saved state means, beyond its inputs: raise it when the code changes how training draws its batches
# or random numbers, so that a state saved by the old code is not continued by the new one (the run would
# mix two streams). 2: pretraining augmentations seeded per sample (data/epochs.py); COCO's loader and
# PreciseBN batches drawn as VOC's (transfer/detection_training.py).
STATE_FORMAT = "2"


def job_key(spec: Mapping[str, Any], **inputs: str | None) -> dict[str, str]:
    """What a job's state was made from: the state format, the spec's hash and one digest per input
    (None: not used)."""
    used = {name: value for name, value in inputs.items() if value is not None}
    return {"format": STATE_FORMAT, "spec": spec_hash(spec), **used}


class ResumeState:
    """The newest training state of one job, at ``<state_dir>/last.pt``, valid only for ``key``."""

    def __init__(self, state_dir: str | Path, key: Mapping[str, str]) -> None:
        # One file for all ranks: data-parallel replicas are identical, and rank 0 writes it.
        self.folder = Path(state_dir)
        self.path = self.folder / "last.pt"
        self.key = dict(key)

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None if there is none or it was made from other inputs (said in the log)."""
        if not self.path.is_file():
            return None
        state = load_torch(self.path)
        recorded = state.get("key")
        if recorded != self.key:
            names = sorted(set(self.key) | set(recorded or {}))
            changed = [name for name in names if (recorded or {}).get(name) != self.key.get(name)]
            print(
                f"[resume] {self.path}: not resuming, the state was made from other inputs "
                f"({', '.join(changed) or 'no key recorded'} changed); starting fresh",
                file=sys.stderr,
            )
            return None
        return state

    def save(self, **state: Any) -> None:
        save_torch(self.path, {"key": self.key, "rng": rng_state(), **state})

    def clear(self) -> None:
        """Remove the state folder: called once the job's outputs are in place."""
        clear_state(self.folder)


# Set to 1 to keep the state of finished jobs for inspection (tests, debugging); safe, as it is keyed.
KEEP_STATE = "GOODTRANSFER_KEEP_STATE"


def clear_state(state_dir: str | os.PathLike[str]) -> None:
    if os.environ.get(KEEP_STATE) != "1":
        shutil.rmtree(state_dir, ignore_errors=True)


def downstream_key(
    spec: Mapping[str, Any],
    checkpoint: str | os.PathLike[str],
    data_root: str | os.PathLike[str],
    data_checks: Iterable[str | os.PathLike[str]] = (),
) -> dict[str, str]:
    """The key of a job that fine-tunes or reads out a backbone: spec, the backbone file's bytes, the data."""
    return job_key(spec, backbone=file_digest(checkpoint), data=dataset_digest(data_root, data_checks))
