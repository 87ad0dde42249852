"""profiles/slurm without a cluster: what each paper-scale job asks SLURM for, the torchrun launch of
multi-GPU pretraining, and the resume after SIGTERM that its `retries: 1` relies on."""

from __future__ import annotations

import signal
import subprocess
import time
from types import SimpleNamespace

import pytest
import yaml

from goodtransfer.checkpoint import load_backbone, load_torch
from goodtransfer.data.synthetic.imagenet import generate_imagenet
from goodtransfer.launch import launcher, threads_per_process
from tests.workflow import ROOT, copy_workflow, no_slurm_cluster, pretrain_command, snakemake, tiny_moco_spec

PROFILE = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())


def _jobs(output: str) -> dict[str, dict]:
    """rule -> {threads, resources, shell} of the last job of each rule a ``-n -p`` run lists."""
    jobs: dict[str, dict] = {}
    job: dict = {}
    for line in output.splitlines():
        stripped = line.strip()
        if stripped.startswith(("rule ", "localrule ")) and stripped.endswith(":"):
            job = jobs[stripped.split()[1].rstrip(":")] = {"threads": 1, "resources": {}, "shell": ""}
        elif stripped.startswith("threads:") and job:
            job["threads"] = int(stripped.removeprefix("threads:"))
        elif stripped.startswith("resources:") and job:
            pairs = (item.split("=", 1) for item in stripped.removeprefix("resources:").split(", "))
            job["resources"] = {key.strip(): value for key, value in pairs}
        elif line.startswith("Shell command:") and job:
            job["shell"] = line.removeprefix("Shell command:").strip()
    return jobs


@pytest.fixture(scope="module")
def paper_dry_run(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("paper"))
    # A dry run caps threads at --cores (1 if not given); a real SLURM run does not cap them.
    done = snakemake(
        workdir, "-n", "-p", "--profile", "profiles/slurm", "--cores", "1024",
        "results/voc07/mocov2-frcgb/seed0/metrics.json", "--configfile", "presets/paper.yaml",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return _jobs(done.stdout)


def test_launcher_is_python_up_to_one_gpu_and_torchrun_with_a_rank_per_gpu_beyond():
    assert launcher(0) == launcher(1) == "python"
    assert launcher(8) == "torchrun --standalone --nproc_per_node 8"
    assert threads_per_process(32, 8) == 4 and threads_per_process(4, 8) == 1
    assert threads_per_process(3, 1) == 3


def test_paper_pretraining_asks_for_eight_gpus_and_runs_torchrun_with_eight_ranks(paper_dry_run):
    job = paper_dry_run["pretrain"]
    resources = job["resources"]
    assert resources["slurm_partition"] == "gpu"  # the placeholder users edit
    assert (resources["gpu"], resources["tasks"], resources["cpus_per_task"]) == ("8", "0", "32")
    assert resources["runtime"] == "4320"  # 72 h, then `retries: 1` resubmits and it resumes
    assert job["threads"] == 32
    torchrun = "torchrun --standalone --nproc_per_node 8 -m goodtransfer --threads 4 pretrain"  # 32 / 8
    assert job["shell"].startswith(torchrun)


def test_paper_voc_fine_tune_asks_for_one_gpu_and_runs_one_process(paper_dry_run):
    job = paper_dry_run["downstream"]
    resources = job["resources"]
    assert (resources["slurm_partition"], resources["gpu"], resources["cpus_per_task"]) == ("gpu", "1", "16")
    assert resources["runtime"] == "2880"  # the longest protocol's 48 h (COCO, the readout)
    assert job["shell"].startswith("python -m goodtransfer --threads 8 downstream")
    assert "gpu" not in paper_dry_run["check_dataset"]["resources"]


class _Resources(dict):
    __getattr__ = dict.__getitem__


def test_plugin_submits_paper_pretraining_as_one_task_holding_all_eight_gpus(monkeypatch):
    """Without `tasks: 0` an explicit task count becomes --ntasks-per-gpu and runs the job once per GPU."""
    monkeypatch.setenv("SLURM_CONF", no_slurm_cluster()["SLURM_CONF"])  # the import asks `scontrol`
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string
    from snakemake_executor_plugin_slurm_jobstep import get_gpu_setting

    resources = _Resources(PROFILE["default-resources"], **PROFILE["set-resources"]["pretrain"])
    job = SimpleNamespace(resources=resources, threads=PROFILE["set-threads"]["pretrain"])
    params = {
        "run_uuid": "run", "slurm_logfile": "log", "comment_str": "rule_pretrain", "account": "",
        "partition": f" -p {resources['slurm_partition']}", "workdir": "/work",
    }  # fmt: skip
    sbatch = get_submit_command(job, params) + set_gres_string(job)
    assert "--nodes=1" in sbatch and "--gpus=8" in sbatch  # torchrun --standalone: all ranks on one node
    assert "--cpus-per-task=32" in sbatch and "-t 4320" in sbatch
    assert "--ntasks" not in sbatch  # one task (SLURM's default), no --ntasks-per-gpu
    assert get_gpu_setting(job) == "--gpus=8"  # the srun inside the job step sees all eight


@pytest.mark.workflow
def test_pretrain_rule_runs_torchrun_when_the_job_has_two_gpus(tmp_path):
    """The launch path for real, on the CPU: two gloo ranks stand in for two GPUs."""
    workdir = copy_workflow(tmp_path)
    done = snakemake(
        workdir, "-p", "results/pretrain/supervised-f/checkpoint.pt", "--set-resources", "pretrain:gpu=2",
        "--configfile", "tiny.yaml",
    )  # fmt: skip
    log = workdir / "logs/pretrain/supervised-f.log"
    assert done.returncode == 0, done.stderr[-3000:] + (log.read_text()[-3000:] if log.exists() else "")
    assert "torchrun --standalone --nproc_per_node 2 -m goodtransfer --threads 1 pretrain" in done.stderr
    assert load_backbone(workdir / "results/pretrain/supervised-f/checkpoint.pt")[1]["epoch"] == 2


def test_pretraining_stopped_by_sigterm_leaves_no_output_and_resumes_from_its_last_epoch(tmp_path):
    """SLURM sends SIGTERM at the time limit; the resubmitted job (retries: 1) must pick up from there."""
    data = tmp_path / "imagenet"
    generate_imagenet(data, num_classes=2, train_per_class=12, val_per_class=2, image_size=36, seed=0)
    spec = tiny_moco_spec(run="sigterm-test", epochs=10)
    out = tmp_path / "run"
    job = subprocess.Popen(pretrain_command(spec, data, out), stderr=subprocess.PIPE, text=True)
    state = out / "state/last.pt"
    deadline = time.time() + 120
    while time.time() < deadline and not (state.exists() and load_torch(state)["epoch"] >= 2):
        time.sleep(0.05)
    job.send_signal(signal.SIGTERM)
    job.communicate()
    # The CLI turns SIGTERM into SystemExit(143): it unwinds, so atomic writes remove their temporary files.
    assert job.returncode == 128 + signal.SIGTERM, "the job finished before SIGTERM reached it"
    assert not list(out.rglob("*.tmp")), "a temporary file survived the SIGTERM"
    stopped_at = load_torch(state)["epoch"]  # the state file is whole: written to a temporary, then renamed
    assert 2 <= stopped_at < spec["epochs"]
    assert not (out / "checkpoint.pt").exists() and not (out / "log.json").exists()

    resumed = subprocess.run(pretrain_command(spec, data, out), capture_output=True, text=True, check=True)
    assert f"resuming sigterm-test from epoch {stopped_at}" in resumed.stderr
    assert load_backbone(out / "checkpoint.pt")[1]["epoch"] == spec["epochs"]
