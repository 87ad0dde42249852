"""Sharing pretrained runs with real DVC and git: publish, clone, pull, and Snakemake does not retrain."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.workflow import copy_workflow, planned_jobs, snakemake

RUNS = ("supervised-f", "mocov2-f")
DOWNSTREAM = ("results/linear/supervised-f/seed0/metrics.json", "results/voc07/mocov2-f/seed0/metrics.json")


# git identity for the commits; dvc (installed beside this interpreter) on PATH.
ENV = {
    **os.environ,
    **{
        f"GIT_{who}_{what}": value
        for who in ("AUTHOR", "COMMITTER")
        for what, value in (("NAME", "t"), ("EMAIL", "t@t"))
    },
    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
}


def _run(*command: str, cwd: Path) -> str:
    env = ENV
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A lab repository whose two pretraining runs are pushed to a directory remote, and a fresh clone."""
    base = tmp_path_factory.mktemp("dvc")
    lab = copy_workflow(base / "lab")
    _run("git", "init", "-q", cwd=lab)
    _run("dvc", "remote", "modify", "local", "url", str(base / "remote"), cwd=lab)
    _run("git", "add", "-A", cwd=lab)
    _run("git", "commit", "-qm", "workflow", cwd=lab)
    trained = snakemake(
        lab,
        *(f"results/pretrain/{run}/checkpoint.pt" for run in RUNS),
        DOWNSTREAM[0],
        "--configfile",
        "tiny.yaml",
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    shared = snakemake(lab, "publish", "--configfile", "tiny.yaml")
    assert shared.returncode == 0, shared.stderr[-3000:]
    _run("git", "add", "-A", cwd=lab)
    committed = _run("git", "commit", "-m", "publish pretraining runs", cwd=lab)
    clone = base / "clone"
    _run("git", "clone", "-q", str(lab), str(clone), cwd=base)
    pulled = _run("dvc", "pull", cwd=clone)
    return lab, clone, committed, pulled


def test_publish_commits_only_dvc_pointers_and_pushes_the_files(published):
    lab, _, _, _ = published
    tracked = _run("git", "ls-files", "results", cwd=lab).split()
    names = ("checkpoint.pt.dvc", "train_log.json.dvc")  # the files themselves are git-ignored already
    expected = {f"results/pretrain/{run}/{name}" for run in RUNS for name in names}
    assert set(tracked) == expected
    assert any((lab.parent / "remote").rglob("*")), "nothing reached the remote"


def test_lab_workspace_after_publish_plans_nothing_and_dvc_status_is_clean(published):
    lab, _, _, _ = published
    stamps = {path: path.stat().st_mtime_ns for path in (lab / "results").rglob("*") if path.is_file()}
    # The readout reads a published checkpoint: were its time changed by `dvc add`, it would be planned.
    targets = [*(f"results/pretrain/{run}/checkpoint.pt" for run in RUNS), DOWNSTREAM[0]]
    plan = snakemake(lab, *targets, "-n", "--configfile", "tiny.yaml")
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert planned_jobs(plan.stdout) == [], plan.stdout[-3000:]
    assert "Nothing to be done" in plan.stdout + plan.stderr
    status = _run("dvc", "status", cwd=lab)
    assert "up to date" in status, status
    assert {path: path.stat().st_mtime_ns for path in stamps} == stamps


def test_clone_with_a_changed_setting_of_a_published_run_fails_naming_the_keys_and_the_ways_out(published):
    _, clone, _, _ = published
    overlay = clone / "changed.yaml"
    overlay.write_text("pretrain:\n  runs:\n    supervised-f: {epochs: 7, lr: 0.5}\n")
    plan = snakemake(clone, DOWNSTREAM[0], "-n", "--configfile", "tiny.yaml", "changed.yaml")
    assert plan.returncode != 0
    output = plan.stdout + plan.stderr
    checkpoint = "results/pretrain/supervised-f/checkpoint.pt"
    assert f"pretrain.runs.supervised-f: {checkpoint} is published with DVC ({checkpoint}.dvc)" in output
    assert "epochs (published 2, config 7)" in output and "lr (published" in output
    assert f"delete {checkpoint}.dvc" in output and "restore the published settings" in output
    assert "downstream" not in [rule for rule, _ in planned_jobs(plan.stdout)]


def test_clone_with_pulled_runs_schedules_downstream_jobs_but_no_pretraining(published):
    _, clone, _, _ = published
    for run in RUNS:
        assert (clone / f"results/pretrain/{run}/checkpoint.pt").is_file()
    plan = snakemake(clone, *DOWNSTREAM, "-n", "--configfile", "tiny.yaml")
    assert plan.returncode == 0, plan.stderr[-3000:]
    rules = [rule for rule, _ in planned_jobs(plan.stdout)]
    assert "pretrain" not in rules
    assert rules.count("downstream") == 2  # the readout and the VOC07 fine-tune


def test_corrupted_pulled_checkpoint_fails_naming_it_instead_of_training_on_it(published):
    _, clone, _, _ = published
    checkpoint = clone / "results/pretrain/supervised-f/checkpoint.pt"
    data = bytearray(checkpoint.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the tensor data
    checkpoint.write_bytes(bytes(data))
    plan = snakemake(clone, DOWNSTREAM[0], "-n", "--configfile", "tiny.yaml")
    assert "pretrain" not in [rule for rule, _ in planned_jobs(plan.stdout)]
    done = snakemake(clone, DOWNSTREAM[0], "--configfile", "tiny.yaml")
    assert done.returncode != 0
    log = (clone / "logs/linear/supervised-f/seed0.log").read_text()
    assert f"{checkpoint.relative_to(clone)}: the weights do not match meta.weights_sha256" in log
    assert not (clone / DOWNSTREAM[0]).exists()


def test_published_run_missing_from_the_workspace_asks_for_dvc_pull_instead_of_retraining(published):
    _, clone, _, _ = published
    (clone / "results/pretrain/mocov2-f/checkpoint.pt").unlink()
    plan = snakemake(clone, DOWNSTREAM[1], "-n", "--configfile", "tiny.yaml")
    assert plan.returncode != 0
    assert "run `dvc pull results/pretrain/mocov2-f/checkpoint.pt.dvc`" in plan.stdout + plan.stderr
