"""The warm fork server: a job run through it ends as a fresh process would (outputs, exit status, messages),
stops with its client, and is refused (run in the client's own process) whenever the server's code or
interpreter differs from the client's."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from goodtransfer.checkpoint import load_backbone
from goodtransfer.data.synthetic.imagenet import generate_imagenet
from goodtransfer.follow import ONE_THREAD
from tests.test_follow import _follow
from tests.workflow import FP32_CPU, copy_workflow, pretrain_command, protocol_spec, tiny_moco_spec

SRC = Path(__file__).resolve().parents[1] / "src"
TIMING = {"seconds", "img_per_s"}  # wall-clock fields: the only ones allowed to differ between two runs


def _env(address: Path | None = None, **extra: str) -> dict[str, str]:
    """A one-thread job's environment, as Snakemake gives it; ``address``: through that server."""
    env = {**os.environ, **ONE_THREAD, **extra}
    env.pop("GOODTRANSFER_WARM", None)
    return env if address is None else {**env, "GOODTRANSFER_WARM": str(address)}


def _wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _start_server(folder: Path) -> tuple[Path, Path, subprocess.Popen[str]]:
    address, log = folder / "socket", folder / "warm.log"
    command = [sys.executable, "-m", "goodtransfer.warm", "serve", str(address), "--log", str(log)]
    process = subprocess.Popen(command, env=_env(), stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: address.exists() or process.poll() is not None)
    assert address.exists(), process.communicate()[1]
    return address, log, process


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    address, log, process = _start_server(tmp_path_factory.mktemp("warm"))
    yield address, log, process
    process.terminate()
    assert process.wait(timeout=60) == 0
    assert not address.exists()


def _jobs(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("imagenet") / "imagenet"
    generate_imagenet(root, num_classes=2, train_per_class=12, val_per_class=4, image_size=36, seed=0)
    return root


def _without_timing(obj):
    if isinstance(obj, dict):
        return {k: _without_timing(v) for k, v in obj.items() if k not in TIMING}
    return [_without_timing(v) for v in obj] if isinstance(obj, list) else obj


def test_a_pretraining_and_a_readout_through_the_server_equal_fresh_runs(server, imagenet, tmp_path):
    address, log, _ = server
    spec = tiny_moco_spec(run="warm-pretrain", epochs=2)
    linear = protocol_spec("linear", "warm-readout", epochs=2, milestones=[1], batch_size=8, **FP32_CPU)
    for name, env in (("fresh", _env()), ("warm", _env(address))):
        out = tmp_path / name
        done = subprocess.run(pretrain_command(spec, imagenet, out), env=env, capture_output=True, text=True)
        assert done.returncode == 0 and "warm server" not in done.stderr, done.stderr[-2000:]
        readout = [
            sys.executable, "-m", "goodtransfer", "--threads", "1", "downstream",
            "--spec", json.dumps(linear), "--checkpoint", str(tmp_path / "fresh/checkpoint.pt"),
            "--data", str(imagenet),
            "--metrics", str(out / "linear/metrics.json"), "--state-dir", str(out / "linear/state"),
        ]  # fmt: skip
        done = subprocess.run(readout, env=env, capture_output=True, text=True)
        assert done.returncode == 0 and "warm server" not in done.stderr, done.stderr[-2000:]
    fresh, meta = load_backbone(tmp_path / "fresh/checkpoint.pt")
    warm, warm_meta = load_backbone(tmp_path / "warm/checkpoint.pt")
    assert meta == warm_meta and fresh.keys() == warm.keys()
    for key in fresh:
        assert torch.equal(fresh[key], warm[key]), key
    for output in ("log.json", "linear/metrics.json"):
        ours, reference = (json.loads((tmp_path / name / output).read_text()) for name in ("warm", "fresh"))
        assert _without_timing(ours) == _without_timing(reference), output
    jobs = [(job["command"], job["run"], job["status"]) for job in _jobs(log)]
    assert ("pretrain", "warm-pretrain", 0) in jobs and ("downstream linear", "warm-readout", 0) in jobs


BAD_INPUT = ["check-dataset", "--kind", "imagefolder", "--root", "/nonexistent-root", "--out", "x.json"]


def _bad_input_job(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "goodtransfer", *BAD_INPUT]
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_a_bad_input_exits_2_with_the_message_of_a_fresh_run(server, tmp_path):
    fresh, warm = _bad_input_job(_env(), tmp_path), _bad_input_job(_env(server[0]), tmp_path)
    assert fresh.returncode == warm.returncode == 2
    assert warm.stderr == fresh.stderr and "/nonexistent-root: dataset folder not found" in warm.stderr
    assert _jobs(server[1])[-1]["command"] == "check-dataset"


def _long_job(address: Path, data: Path, out: Path) -> subprocess.Popen[str]:
    spec = tiny_moco_spec(run="warm-stopped", epochs=2000)  # stopped long before its end
    job = subprocess.Popen(
        pretrain_command(spec, data, out), env=_env(address), stderr=subprocess.PIPE, text=True
    )
    _wait_for(lambda: (out / "state/last.pt").exists())  # running in the child, past its first epoch
    return job


def test_sigterm_to_the_client_stops_the_job_as_it_stops_a_fresh_one(server, imagenet, tmp_path):
    job = _long_job(server[0], imagenet, tmp_path)
    job.send_signal(signal.SIGTERM)
    _, stderr = job.communicate(timeout=60)
    assert job.returncode == 143, stderr[-2000:]
    assert "goodtransfer pretrain: stopped by SIGTERM" in stderr
    assert not (tmp_path / "checkpoint.pt").exists()
    last = _jobs(server[1])[-1]
    assert (last["run"], last["status"]) == ("warm-stopped", 143)


def test_a_killed_client_takes_its_job_with_it(server, imagenet, tmp_path):
    address, log, process = server
    job = _long_job(address, imagenet, tmp_path)
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    (child,) = map(int, children.read_text().split())
    logged = len(_jobs(log))
    job.kill()
    job.wait()
    _wait_for(lambda: not Path(f"/proc/{child}").exists(), timeout=5)
    # the server reaps the child (its /proc entry goes) just before it logs the status
    _wait_for(lambda: len(_jobs(log)) > logged, timeout=5)
    assert _jobs(log)[-1]["status"] == 128 + signal.SIGKILL
    assert not (tmp_path / "checkpoint.pt").exists()


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="OpenBLAS starts no thread pool on one core")
def test_a_server_whose_imports_started_threads_refuses_to_serve(tmp_path):
    env = {k: v for k, v in _env().items() if k not in ONE_THREAD}
    command = [sys.executable, "-m", "goodtransfer.warm", "serve", str(tmp_path / "socket")]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "threads after the imports" in done.stderr
    assert "forking them is unsafe" in done.stderr and not (tmp_path / "socket").exists()


def test_a_job_dies_with_its_server(imagenet, tmp_path):
    address, _, process = _start_server(tmp_path)
    job = _long_job(address, imagenet, tmp_path / "out")
    (child,) = map(int, Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split())
    process.kill()  # SIGKILL: no chance to stop its jobs
    process.wait()
    _, stderr = job.communicate(timeout=60)
    assert job.returncode == 1 and "the server closed the connection before the job ended" in stderr
    _wait_for(
        lambda: (
            not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]
        ),
        timeout=5,
    )
    assert not (tmp_path / "out/checkpoint.pt").exists()


def test_without_a_server_the_job_runs_in_its_own_process_and_says_why(tmp_path):
    done = _bad_input_job(_env(tmp_path / "no-socket"), tmp_path)
    assert done.returncode == 2 and "dataset folder not found" in done.stderr
    assert (
        f"warm server: {tmp_path / 'no-socket'}: No such file or directory; running the job in this process"
        in done.stderr
    )


def test_another_copy_of_the_package_or_other_thread_settings_run_in_the_clients_process(server, tmp_path):
    shutil.copytree(
        SRC / "goodtransfer", tmp_path / "src/goodtransfer", ignore=shutil.ignore_patterns("__pycache__")
    )
    served = len(_jobs(server[1]))
    copy = _bad_input_job(_env(server[0], PYTHONPATH=str(tmp_path / "src")), tmp_path)
    assert copy.returncode == 2 and "dataset folder not found" in copy.stderr
    assert "the goodtransfer package differs from the server's" in copy.stderr
    threads = _bad_input_job(_env(server[0], OMP_NUM_THREADS="2"), tmp_path)
    assert "read at start-up differ from the server's: OMP_NUM_THREADS;" in threads.stderr
    assert threads.returncode == 2 and len(_jobs(server[1])) == served  # neither ran in the server


def test_the_source_digest_changes_with_any_file_of_the_package(tmp_path):
    shutil.copytree(
        SRC / "goodtransfer", tmp_path / "goodtransfer", ignore=shutil.ignore_patterns("__pycache__")
    )
    digest = [sys.executable, "-c", "from goodtransfer.warm import package_digest; print(package_digest())"]

    def run() -> str:
        return subprocess.run(
            digest, env=_env(PYTHONPATH=str(tmp_path)), check=True, capture_output=True, text=True
        ).stdout

    before = run()
    assert run() == before
    with (tmp_path / "goodtransfer/engine/optim.py").open("a") as source:
        source.write("# edited during a run\n")
    assert run() != before


@pytest.mark.workflow
def test_follow_warm_runs_the_jobs_in_a_server_and_stops_it(tmp_path):
    workdir = copy_workflow(tmp_path)
    done = _follow(
        workdir, "results/datasets/imagenet.json", "--warm", "--cores", "2", "--configfile", "tiny.yaml"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    log = (workdir / "logs/warm-server.log").read_text()
    assert [(job["command"], job["status"]) for job in _jobs(workdir / "logs/warm-server.log")] == [
        ("generate", 0),
        ("check-dataset", 0),
    ]
    socket = Path(log.split("ready on ")[1].split()[0])
    assert not socket.parent.exists()  # stopped, its private folder removed
    assert "warm server:" not in (workdir / "logs/snakemake-follow.log").read_text()  # no job ran fresh
