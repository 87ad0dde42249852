"""Run the real Snakemake workflow in a fresh copy of the project's tracked workflow files."""

from __future__ import annotations

import atexit
import contextlib
import functools
import io
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = (
    "Snakefile",
    "config.yaml",
    "rules",
    "paper/reference",
    "paper/report",
    "paper/tables",
    "paper/report.tex.j2",
    "presets",
    "profiles",
    "envs",
    "containers",
    ".dvc/config",
    ".dvc/.gitignore",
    ".dvcignore",
    ".gitignore",
)


def copy_workflow(target: Path) -> Path:
    for name in WORKFLOW_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name)
        else:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    shutil.copy2(ROOT / "tests/configs/tiny.yaml", target / "tiny.yaml")
    return target


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def snakemake(
    workdir: Path,
    *args: str,
    timeout: int = 600,
    env: dict[str, str] | None = None,
    slurm_cluster: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Targets must come before ``--configfile``, which takes every following word as a file; ``env``
    adds variables. Only ``slurm_cluster=True`` (a run through a real cluster) lets it look for SLURM."""
    command = [sys.executable, "-m", "snakemake", "--cores", "2", *args]
    # The rules call `python`: make it this interpreter, whatever PATH the tests were started with.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    slurm = {} if slurm_cluster else no_slurm_cluster()
    env = {**os.environ, **slurm, **(env or {}), "PATH": path}
    return subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=timeout, env=env)


@contextlib.contextmanager
def warm_jobs(workdir: Path) -> Iterator[dict[str, str]]:
    """The variables that send a workflow's jobs to a warm server, as `make demo` runs them (the big report
    builds: ~5 CPU-seconds of imports saved per job); the server logs to ``workdir``/logs/warm-server.log.
    Fails if the server did not start, rather than letting the jobs quietly start fresh."""
    from goodtransfer.follow import warm_server

    with contextlib.redirect_stdout(io.StringIO()), warm_server(workdir / "logs/warm-server.log") as env:
        assert env, (workdir / "logs/warm-server.log").read_text()[-2000:]
        yield env
    # A job the server refused says why in its log and ran fresh: none may have.
    logs = (workdir / "logs").rglob("*.log")
    refused = [p for p in logs if "goodtransfer: warm server:" in p.read_text(errors="replace")]
    assert not refused, [p.read_text()[-500:] for p in refused]


@functools.cache
def no_slurm_cluster() -> dict[str, str]:
    """Variables for a process that must not look for a SLURM cluster: where SLURM's client tools are
    installed but no controller runs (after the SLURM tests), the SLURM executor plugin asks
    `scontrol show config` when imported, by every `snakemake`, and waits 9 s; an empty SLURM_CONF makes
    that fail at once. The file lives in a temporary folder of this test session, removed at exit."""
    folder = Path(tempfile.mkdtemp(prefix="goodtransfer-no-slurm-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    conf = folder / "slurm.conf"
    conf.write_text("")
    return {"SLURM_CONF": str(conf)}


def planned_jobs(output: str) -> list[tuple[str, str]]:
    """(rule, wildcards) of every job a dry run lists."""
    jobs: list[tuple[str, str]] = []
    rule = None
    for line in output.splitlines():
        stripped = line.strip()
        if stripped.startswith(("rule ", "localrule ")) and stripped.endswith(":"):
            rule = stripped.split()[1].rstrip(":")
            jobs.append((rule, ""))
        elif stripped.startswith("wildcards:") and jobs:
            jobs[-1] = (jobs[-1][0], stripped.removeprefix("wildcards:").strip())
    return jobs


def pretrain_command(spec: dict, data: Path, out: Path, launcher: tuple[str, ...] = ()) -> list[str]:
    """``goodtransfer pretrain`` for ``spec`` on one thread; outputs under ``out``; optional launcher
    (e.g. torchrun) in front of ``-m goodtransfer``."""
    import json

    return [
        *(launcher or (sys.executable,)), "-m", "goodtransfer", "--threads", "1", "pretrain",
        "--spec", json.dumps(spec), "--data", str(data), "--out", str(out / "checkpoint.pt"),
        "--state-dir", str(out / "state"), "--train-log", str(out / "log.json"),
    ]  # fmt: skip


def tiny_moco_spec(**overrides) -> dict:
    """A resolved MoCo pretraining spec small enough for a test: ResNet-10 at 32 px, fp32 on the CPU."""
    spec = {
        "run": "test", "recipe": "test", "method": "moco", "dataset": "imagenet", "arch": "resnet10",
        "input_size": 32, "epochs": 1, "batch_size": 8, "lr": 0.03, "lr_reference_batch": 8, "momentum": 0.9,
        "weight_decay": 1e-4, "schedule": "cosine", "milestones": [], "workers": 0, "checkpoint_every": 1,
        "cache_images": False, "augment": ["flip", "crop"],
        "augmentations": {"flip": {"p": 0.5}, "crop": {"scale": [0.2, 1.0]}},
        "moco": {"dim": 8, "K": 32, "m": 0.99, "T": 0.2, "mlp": True, "shuffle_bn_splits": 2},
        "device": "cpu", "precision": "fp32", "channels_last": False, "seed": 0,
    }  # fmt: skip
    return {**spec, **overrides}


FP32_CPU = {"device": "cpu", "precision": "fp32", "channels_last": False}  # compute for exactness tests


def protocol_spec(protocol: str, run: str = "run", **overrides) -> dict:
    """config.yaml's resolved spec of a downstream ``protocol``, as the workflow passes it, with
    ``overrides`` on top (tests shrink the protocols)."""
    from goodtransfer import config as gtc

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    return {**gtc.downstream_spec(config, protocol, run), **overrides}


def run_protocol(spec: dict, checkpoint: Path, data: Path, folder: Path, **fields) -> dict:
    """One downstream job through the task registry, as `goodtransfer downstream` runs it: metrics.json and
    the task's other outputs in ``folder``, its state in ``folder/state``; returns the metrics."""
    from goodtransfer.transfer.tasks import DownstreamJob, run

    job = DownstreamJob(
        spec, Path(checkpoint), Path(data), folder / "metrics.json", folder / "state", **fields
    )
    return run(job)
