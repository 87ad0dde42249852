"""The workflow through a real one-node SLURM cluster (tests/slurm/start.sh) and
snakemake-executor-plugin-slurm: every job is an sbatch job that sacct records, and a job that fails
under SLURM fails the run with its logs named and shown."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.workflow import ROOT, copy_workflow, snakemake, write_config

pytestmark = pytest.mark.workflow

PROFILE = ROOT / "tests/slurm/profile"
TARGET = "results/linear/supervised-f/seed0/metrics.json"
LOCK = Path(tempfile.gettempdir()) / "goodtransfer-slurm-tests.lock"
STARTED_BY_TESTS = Path("/run/goodtransfer-slurm/started-by-tests")  # beside start.sh's pid files


def _cluster_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    states = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True).stdout.split()
    return any(state.startswith(("idle", "mix", "alloc")) for state in states)


@pytest.fixture(scope="module")
def cluster():
    """A running cluster: the one found, or one started here (needs root). Test sessions take turns under
    a file lock, and the last one out stops a cluster that a test started (never one it found running)."""
    lock = os.open(LOCK, os.O_RDONLY | os.O_CREAT, 0o666)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _cluster_up():
            if os.geteuid() != 0:
                pytest.skip("no SLURM cluster is running, and tests/slurm/start.sh needs root to start one")
            started = subprocess.run(["bash", ROOT / "tests/slurm/start.sh"], capture_output=True, text=True)
            assert started.returncode == 0, started.stdout + started.stderr
            STARTED_BY_TESTS.touch()
        fcntl.flock(lock, fcntl.LOCK_SH)
        yield
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # another session is using it and stops it when done
        if STARTED_BY_TESTS.exists():
            subprocess.run(["bash", ROOT / "tests/slurm/stop.sh"], check=True, capture_output=True)
            STARTED_BY_TESTS.unlink()
    finally:
        os.close(lock)


def _run_through_slurm(workdir, target, *configfiles):
    # A bounded wait: the plugin stops tracking jobs whose status sacct fails to report 5 times in a row.
    args = ("--profile", str(PROFILE), target, "--configfile", "tiny.yaml", *configfiles)
    return snakemake(workdir, *args, timeout=300, slurm_cluster=True)


def _accounting(stderr: str) -> list[dict[str, str]]:
    """sacct's record of every job of the run whose output is ``stderr`` (the run ID is the job name)."""
    run_id = re.search(r"SLURM run ID: (\S+)", stderr).group(1)
    fields = ["Comment", "State", "Partition", "AllocCPUS", "ReqMem", "SubmitLine"]  # SubmitLine may hold |
    listed = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-S", "now-1days", "--name", run_id, "-o", ",".join(fields)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rows = [line.split("|", len(fields) - 1) for line in listed.splitlines()]
    return [dict(zip(fields, row, strict=True)) for row in rows]


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("slurm"))
    done = _run_through_slurm(workdir, TARGET)
    assert done.returncode == 0, done.stderr[-4000:]
    return workdir, done


def test_readout_through_slurm_writes_its_metrics(slurm_run):
    workdir, _ = slurm_run
    metrics = json.loads((workdir / TARGET).read_text())
    assert {"run", "top1", "config_hash", "checkpoint"} <= metrics.keys()
    assert metrics["run"] == "supervised-f" and 0.0 <= metrics["top1"] <= 100.0
    log = json.loads((workdir / "results/pretrain/supervised-f/train_log.json").read_text())
    assert [entry["epoch"] for entry in log["history"]] == [1, 2]


def test_every_job_ran_as_a_completed_slurm_job_with_the_profile_resources(slurm_run):
    workdir, done = slurm_run
    jobs = _accounting(done.stderr)
    assert sorted(job["Comment"] for job in jobs) == [
        "rule_check_dataset_wildcards_imagenet",
        "rule_downstream_wildcards_linear_supervised-f_0",
        "rule_generate_imagenet",
        "rule_pretrain_wildcards_supervised-f",
    ]
    assert {(job["State"], job["Partition"], job["AllocCPUS"], job["ReqMem"]) for job in jobs} == {
        ("COMPLETED", "debug", "1", "1000M")
    }
    # The sbatch line SLURM recorded: pretraining asks for one node (the profile's `nodes: 1`), the others
    # leave it to SLURM.
    submitted = {job["Comment"]: job["SubmitLine"] for job in jobs}
    assert "--nodes=1" in submitted["rule_pretrain_wildcards_supervised-f"]
    assert "--nodes" not in submitted["rule_generate_imagenet"]
    assert len(list((workdir / ".snakemake/slurm_logs/rule_pretrain/supervised-f").glob("*.log"))) == 1


def test_job_failing_under_slurm_fails_the_run_and_names_and_shows_its_logs(cluster, tmp_path):
    workdir = copy_workflow(tmp_path)
    missing = tmp_path / "no-imagenet-here"
    broken = {"datasets": {"imagenet": {"root": str(missing), "generate": False}}}
    write_config(workdir / "broken.yaml", broken)
    done = _run_through_slurm(workdir, "results/datasets/imagenet.json", "broken.yaml")
    assert done.returncode != 0
    assert "SLURM status is: 'FAILED'" in done.stderr
    slurm_log = re.search(r"\S*\.snakemake/slurm_logs/rule_check_dataset/imagenet/\d+\.log", done.stderr)
    assert slurm_log and "logs/data/check_imagenet.log" in done.stderr
    # show-failed-logs prints both: the rule's own log and SLURM's output of the job.
    assert f"Logfile {slurm_log.group(0)}:" in done.stderr
    assert "Logfile logs/data/check_imagenet.log:" in done.stderr
    assert f"{missing}: dataset folder not found" in (workdir / "logs/data/check_imagenet.log").read_text()
    assert "Error in rule check_dataset" in (workdir / slurm_log.group(0)).read_text()
    assert [job["State"] for job in _accounting(done.stderr)] == ["FAILED"]
