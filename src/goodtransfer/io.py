"""Atomic file output and safe input: an interrupted job never leaves a file that looks finished."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml


class InputError(ValueError):
    """Bad input: the message names the file, the field and what was expected."""


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.is_file():  # mkstemp makes 0600 files; give the output the usual umask mode
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextmanager
def building_directory(root: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty hidden sibling of ``root``; on success swap it in place of ``root``."""
    target = Path(root)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        yield tmp
        if target.exists() or target.is_symlink():
            # A directory cannot be os.replace'd onto a non-empty one: move the old tree aside first.
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / "tree")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# mkstemp/mkdtemp add 8 characters of [a-z0-9_]; matching them exactly keeps the sweep to one target's
# own leftovers (".a.json.x1y2z3w4.tmp" is a.json's, never a.json.x.json's).
_RANDOM = r"[a-z0-9_]{8}"


def leftover_pattern(name: str) -> re.Pattern[str]:
    """Hidden siblings a killed job leaves beside output ``name``: ``.<name>.XXXXXXXX.tmp`` (atomic_path),
    ``.<name>.partial-XXXXXXXX`` / ``.old-XXXXXXXX`` (a dataset being built) and ``.latex-XXXXXXXX``."""
    return re.compile(rf"\.{re.escape(name)}\.(?:{_RANDOM}\.tmp|(?:partial|old|latex)-{_RANDOM})")


def sweep_leftovers(outputs: Iterable[str | os.PathLike[str]], owned_dirs: Iterable[Path] = ()) -> list[Path]:
    """Delete what an earlier, killed run of the same job left beside its ``outputs`` (SIGKILL gives no
    chance to clean up), and every ``.*.XXXXXXXX.tmp`` under ``owned_dirs`` (folders only this job
    writes, e.g. its resume state); print one line if anything went. Returns what was removed."""
    removed: list[Path] = []
    for output in map(Path, outputs):
        if output.parent.is_dir():
            pattern = leftover_pattern(output.name)
            removed += [p for p in output.parent.iterdir() if pattern.fullmatch(p.name)]
    tmp = re.compile(rf"\..+\.{_RANDOM}\.tmp")
    for folder in owned_dirs:
        if folder.is_dir():
            removed += [p for p in folder.rglob(".*.tmp") if tmp.fullmatch(p.name) and p.is_file()]
    for path in removed:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    if removed:
        names = ", ".join(str(p) for p in removed[:4]) + (
            f" and {len(removed) - 4} more" if len(removed) > 4 else ""
        )
        print(
            f"[goodtransfer] removed {len(removed)} leftover(s) of an interrupted run: {names}",
            file=sys.stderr,
        )
    return removed


def unwind_on_sigterm() -> None:
    """Turn SIGTERM into ``SystemExit(143)``: SLURM and Snakemake send it to stop a job, and unwinding runs
    the ``finally`` blocks that delete temporary files and folders; the next attempt resumes."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_with(path: str | os.PathLike[str], writer: Callable[[Path], Any]) -> None:
    """Call ``writer(tmp_path)`` and atomically move the result to ``path``."""
    with atomic_path(path) as tmp:
        writer(tmp)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Strict JSON: a NaN or infinity fails naming the file and the value's key path (no ``NaN`` token
    that other readers reject and that would print as a number in the report)."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False)
    except ValueError:
        where = _non_finite_path(obj) or "a value"
        raise InputError(
            f"{path}: {where} is not finite; a metric must be finite (write null and say why instead)"
        ) from None
    write_text(path, text + "\n")


def _non_finite_path(obj: Any, prefix: str = "") -> str | None:
    """'box.AP75 is nan' style: the dotted key path (list items by index) of the first NaN/infinity."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return f"{prefix or '(top level)'} is {obj}"
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list | tuple) else ()
    for key, value in items:
        found = _non_finite_path(value, f"{prefix}.{key}" if prefix else str(key))
        if found:
            return found
    return None


def _reject_constant(token: str) -> Any:
    raise ValueError(token)


def is_finite_number(value: Any) -> bool:
    """A finite int or float (a bool is not a number here; NaN and infinities are not finite)."""
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def read_json(path: str | os.PathLike[str]) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"), parse_constant=_reject_constant)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None
    except ValueError as err:  # parse_constant: NaN, Infinity, -Infinity
        raise InputError(
            f"{path}: holds {err} (not valid JSON); the job that wrote it produced a non-finite number: "
            "delete the file and rerun that job"
        ) from None


def read_yaml(path: str | os.PathLike[str]) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.safe_load(handle)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except yaml.YAMLError as err:
        raise InputError(f"{path}: not valid YAML ({err})") from None


def spec_hash(spec: Any) -> str:
    """Short content hash of a JSON-serialisable run specification (the 'config hash')."""
    import hashlib

    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]
