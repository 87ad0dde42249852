"""Share finished pretraining runs through DVC: ``dvc add`` + ``dvc push`` of each run's checkpoint and
training log, so another machine gets them with ``git pull && dvc pull`` instead of retraining.

DVC writes ``<file>.dvc`` beside each file (commit those to git) and a ``.gitignore`` that keeps the
file itself out of git. The remote is DVC's default one (``.dvc/config``; ``dvc remote add -d`` changes it).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from goodtransfer.io import InputError, read_json, read_yaml

# What a finished run consists of: both are outputs of the `pretrain` rule.
RUN_FILES = ("checkpoint.pt", "train_log.json")


def run_files(run_dir: Path) -> list[Path]:
    """The files of a finished run, or an InputError naming what is missing."""
    files = [run_dir / name for name in RUN_FILES]
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        raise InputError(f"{run_dir}: not a finished pretraining run; missing {missing}")
    return files


def _dvc(*args: str, cwd: Path) -> str:
    if shutil.which("dvc") is None:
        raise InputError("dvc: command not found; install the project (`make install`) or `pip install dvc`")
    result = subprocess.run(["dvc", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise InputError(
            f"dvc {' '.join(args)} failed in {cwd}:\n{result.stderr.strip() or result.stdout.strip()}"
        )
    return result.stdout


def publish(run_dirs: Sequence[Path], repo: Path = Path(".")) -> list[Path]:
    """``dvc add`` and ``dvc push`` every finished run; returns the ``.dvc`` files to commit."""
    files = [path for run_dir in run_dirs for path in run_files(Path(run_dir))]
    if not files:
        raise InputError("publish: no finished pretraining runs to publish")
    relative = [str(path) for path in files]
    pointers = [f"{path}.dvc" for path in relative]
    # `dvc add` puts a fresh copy back in the workspace: restore each file's times, or Snakemake would
    # take the published checkpoint for a new one and rerun everything downstream of it.
    times = {path: (os.stat(repo / path).st_atime_ns, os.stat(repo / path).st_mtime_ns) for path in relative}
    _dvc("add", "--quiet", *relative, cwd=repo)
    for path, stamp in times.items():
        os.utime(repo / path, ns=stamp)
    _dvc("push", *pointers, cwd=repo)
    return [Path(path) for path in pointers]


def track(root: Path, repo: Path = Path(".")) -> Path:
    """``dvc add`` a dataset folder (inside the repository); returns the ``.dvc`` pointer to commit."""
    root = Path(root)
    if not root.exists():
        raise InputError(f"{root}: dataset folder not found")
    _dvc("add", "--quiet", str(root), cwd=repo)
    return Path(f"{root}.dvc")


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# torchvision (resnet50-19c8e357.pth) and OpenMMLab (..._20220825-a67c5440.pth) end a published file's name
# with the first 8 hex digits of its SHA-256. Only a group with a letter counts: "-20220825" is a date.
_NAMED_DIGEST = re.compile(r"-(?=[0-9]*[a-f])([0-9a-f]{8})$")


def verify_named_digest(path: Path) -> str | None:
    """A file whose name carries its digest (``name-<8 hex>.pth``, the convention torchvision and OpenMMLab
    publish with) must have it, however it arrived (fetched, ``dvc import-url``, copied by hand): returns
    the digits verified, None for a name without them; a mismatch is an InputError."""
    match = _NAMED_DIGEST.search(Path(path).stem)
    if match is None:
        return None
    actual = _sha256(Path(path))
    if not actual.startswith(match.group(1)):
        raise InputError(
            f"{path}: its name ends with -{match.group(1)}, the start of the SHA-256 it was published with, "
            f"but the file's SHA-256 is {actual}: not the published file (changed, truncated or another "
            "model under its name); fetch it again"
        )
    return match.group(1)


def verify_recorded_checksum(path: Path) -> str | None:
    """Compare ``path`` with the checksum recorded when it was first imported: ``<path>.json`` (sha256,
    written by ``goodtransfer fetch``) or ``<path>.dvc`` (md5, by ``dvc import-url``/``dvc add``).
    Returns what was verified, None when nothing was recorded; a mismatch is an InputError."""
    path = Path(path)
    fetched, tracked = path.with_name(path.name + ".json"), path.with_name(path.name + ".dvc")
    if fetched.is_file():
        recorded = read_json(fetched).get("sha256")
        if recorded and _sha256(path) != recorded:
            raise InputError(f"{path}: SHA-256 differs from {recorded} recorded in {fetched}; fetch it again")
        return f"sha256 {recorded}"
    if tracked.is_file():
        outs = (read_yaml(tracked) or {}).get("outs") or [{}]
        recorded = outs[0].get("md5")
        if recorded and _md5(path) != recorded:
            raise InputError(
                f"{path}: MD5 differs from {recorded} recorded in {tracked}; run `dvc pull {path}`"
            )
        return f"md5 {recorded}"
    return None
