"""The report's provenance: git commit, config hash, package versions, hardware, wall time per step."""

from __future__ import annotations

import platform
import subprocess
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from goodtransfer.io import read_json, spec_hash

PACKAGES = ("torch", "torchvision", "snakemake", "numpy", "pillow", "jinja2")


def git_commit() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return done.stdout.strip() + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _hardware() -> str:
    import os

    cpu = platform.processor() or platform.machine()
    text = f"{cpu}, {os.cpu_count()} CPU cores"
    try:
        import torch

        if torch.cuda.is_available():
            text += f", GPU {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return text


def _run_times(cells: list[dict[str, Any]]) -> str:
    """'pretrain 19.3 s, linear 1.1 s, voc07 48.4 s + 47.9 s' (one time per seed) for one run, from its
    training log and metrics files."""
    parts: dict[str, str] = {}
    for provenance in (cell["provenance"] for cell in cells if cell.get("provenance")):
        log = Path(provenance["checkpoint"]).with_name("train_log.json")
        if "pretrain" not in parts and log.is_file():
            parts["pretrain"] = f"{sum(epoch['seconds'] for epoch in read_json(log)['history']):.1f} s"
        paths = provenance["metrics"]
        protocol = Path(paths[0]).parents[2].name  # results/<protocol>/<run>/seed<N>/metrics.json
        if protocol not in parts:
            parts[protocol] = " + ".join(f"{read_json(path).get('seconds', '?')} s" for path in paths)
    return ", ".join(f"{name} {value}" for name, value in parts.items())


def _step_times(tables: Sequence[Path]) -> list[dict[str, str]]:
    """Wall time of each run's steps (pretraining and every downstream job), one line per run."""
    cells: dict[str, list[dict[str, Any]]] = {}
    for table_path in tables:
        for group in read_json(table_path)["groups"]:
            for row in group["rows"]:
                if row["run"]:  # a quoted row ran nothing
                    cells.setdefault(row["run"], []).extend(row["cells"].values())
    return [{"key": f"wall time {run}", "value": _run_times(run_cells)} for run, run_cells in cells.items()]


def build_context(tables: Sequence[Path], config: dict[str, Any], scale_note: str) -> dict[str, Any]:
    provenance = [
        {"key": "git commit", "value": git_commit()},
        {"key": "config hash", "value": spec_hash(config)},
        {"key": "python", "value": platform.python_version()},
        *({"key": name, "value": _version(name)} for name in PACKAGES),
        {"key": "hardware", "value": _hardware()},
        *_step_times(tables),
    ]
    context = {"scale_note": scale_note, "provenance": provenance}
    if config["report"].get("deviations"):
        from goodtransfer.report import deviations

        entry = config["report"]["deviations"]
        registry = deviations.load_registry(entry["registry"])
        context["deviations"] = deviations.appendix(registry, entry["scale"], config)
        context["deviations_scale"] = entry["scale"]
    return context
