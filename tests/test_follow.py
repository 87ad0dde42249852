"""`make demo`'s progress: one line per finished job with jobs done of the total, elapsed and time left, then
where the target is; Snakemake's full output kept in a log."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from goodtransfer.follow import progress_line
from tests.workflow import copy_workflow, no_slurm_cluster

pytestmark = pytest.mark.workflow


def _follow(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, **no_slurm_cluster(), "PATH": path}
    command = [sys.executable, "-m", "goodtransfer.follow", *args]
    return subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=300, env=env)


def test_estimate_spreads_the_mean_job_time_over_the_jobs_left():
    assert progress_line(3, 12, 90.0, "pretrain") == "[ 3/12] 1m30s elapsed, about 4m30s left: pretrain"


def test_a_followed_run_prints_a_line_per_job_and_where_its_target_is(tmp_path):
    workdir = copy_workflow(tmp_path)
    target = "results/datasets/imagenet.json"
    done = _follow(workdir, target, "--cores", "2", "--configfile", "tiny.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = re.findall(r"^\[(\d)/(\d)\] \S+ elapsed, about \S+ left: (\S+)$", done.stdout, re.MULTILINE)
    assert lines == [("1", "2", "generate_imagenet"), ("2", "2", "check_dataset")]
    assert done.stdout.rstrip().endswith(str(workdir / target))
    assert "Finished jobid" in (workdir / "logs/snakemake-follow.log").read_text()
    again = _follow(workdir, target, "--cores", "2", "--configfile", "tiny.yaml")
    assert "Nothing to be done" in again.stdout and again.returncode == 0


def test_a_failed_run_shows_the_log_tail_and_exits_nonzero(tmp_path):
    workdir = copy_workflow(tmp_path)
    (workdir / "broken.yaml").write_text("datasets: {imagenet: {root: /nonexistent-root, generate: false}}\n")
    failed = _follow(workdir, "results/datasets/imagenet.json", "--cores", "1", "--configfile", "tiny.yaml",
                     "broken.yaml")  # fmt: skip
    assert failed.returncode != 0
    assert "failed after" in failed.stderr and "logs/snakemake-follow.log" in failed.stderr
    assert "Error in rule check_dataset" in failed.stderr  # the tail of Snakemake's own output
