"""A killed job leaves nothing behind: SIGTERM unwinds and deletes its temporary files, partial dataset
folders and LaTeX build folder; after SIGKILL the next run of the same job sweeps them (its own only)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from goodtransfer.data.synthetic.imagenet import generate_imagenet
from tests.workflow import pretrain_command, tiny_moco_spec

# `python -m goodtransfer ARGS` with one writer (module:attribute) slowed down: after it wrote its
# temporary file it touches MARKER and sleeps, so the test kills the job exactly mid-write.
SLOW_WRITER = """
import sys, time, pathlib
marker, target = pathlib.Path(sys.argv[1]), sys.argv[2]
module, _, attribute = target.partition(":")
owner = __import__(module, fromlist=["_"])
*path, name = attribute.split(".")
for part in path:
    owner = getattr(owner, part)
real = getattr(owner, name)
def slow(*args, **kwargs):
    result = real(*args, **kwargs)
    marker.touch()
    time.sleep(120)
    return result
setattr(owner, name, slow)
from goodtransfer.cli import main
sys.exit(main(sys.argv[3:]))
"""


def _start(marker: Path, slowed: str, args: list[str]) -> subprocess.Popen[str]:
    command = [sys.executable, "-c", SLOW_WRITER, str(marker), slowed, *args]
    return subprocess.Popen(command, stderr=subprocess.PIPE, text=True)


def _kill_mid_write(job: subprocess.Popen[str], marker: Path, sig: signal.Signals) -> str:
    deadline = time.time() + 120
    while not marker.exists() and job.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), (
        f"the job never reached the slowed write:\n{job.stderr.read() if job.stderr else ''}"
    )
    job.send_signal(sig)
    _, err = job.communicate(timeout=60)
    return err


def _leftovers(folder: Path) -> list[str]:
    return sorted(
        str(p) for p in folder.rglob(".*") if ".tmp" in p.name or "partial-" in p.name or "latex-" in p.name
    )


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet") / "imagenet"
    generate_imagenet(root, num_classes=2, train_per_class=4, val_per_class=1, image_size=36, seed=0)
    return root


SPEC = tiny_moco_spec(run="mocov2-kill", batch_size=4, lr_reference_batch=4, epochs=2)


def _pretrain_args(data: Path, out: Path) -> list[str]:
    return pretrain_command(SPEC, data, out)[3:]  # after `python -m goodtransfer`


def test_sigterm_mid_checkpoint_write_exits_143_and_leaves_no_temporary_file(imagenet, tmp_path):
    job = _start(tmp_path / "marker", "torch:save", _pretrain_args(imagenet, tmp_path / "run"))
    err = _kill_mid_write(job, tmp_path / "marker", signal.SIGTERM)
    assert job.returncode == 143, err
    assert "Traceback" not in err
    assert _leftovers(tmp_path) == []
    assert not (tmp_path / "run/checkpoint.pt").exists()


def test_sigterm_mid_dataset_generation_removes_the_partial_folder(tmp_path):
    options = {"num_classes": 2, "train_per_class": 3, "val_per_class": 1, "image_size": 36}
    args = ["generate", "--kind", "imagefolder", "--root", str(tmp_path / "imagenet"), "--seed", "0"]
    job = _start(tmp_path / "marker", "PIL.Image:Image.save", [*args, "--options", json.dumps(options)])
    err = _kill_mid_write(job, tmp_path / "marker", signal.SIGTERM)
    assert job.returncode == 143, err
    assert _leftovers(tmp_path) == [] and not (tmp_path / "imagenet").exists()


def test_sigterm_mid_latex_removes_its_build_folder_beside_the_pdf(tmp_path):
    tex = tmp_path / "report.tex"
    tex.write_text("\\documentclass{article}\\begin{document}x\\end{document}\n")
    code = f"""
import pathlib, sys, time
from goodtransfer.io import unwind_on_sigterm
from goodtransfer.report import latex
def slow(command, cwd, env, timeout_s):
    (cwd / "report.aux").write_text("partial")
    pathlib.Path({str(tmp_path / "marker")!r}).write_text(str(cwd))
    time.sleep(120)
latex._run_latexmk = slow
unwind_on_sigterm()  # as python -m goodtransfer.report.render does
latex.compile_pdf({str(tex)!r}, {str(tmp_path / "out/report.pdf")!r})
"""
    job = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    err = _kill_mid_write(job, tmp_path / "marker", signal.SIGTERM)
    assert job.returncode == 143, err
    assert Path((tmp_path / "marker").read_text()).name.startswith(".report.pdf.latex-")
    assert _leftovers(tmp_path) == [] and list((tmp_path / "out").iterdir()) == []


def test_sigkill_leaves_temporaries_that_the_next_run_of_the_same_job_sweeps(imagenet, tmp_path):
    run = tmp_path / "run"
    job = _start(tmp_path / "marker", "torch:save", _pretrain_args(imagenet, run))
    _kill_mid_write(job, tmp_path / "marker", signal.SIGKILL)
    left = _leftovers(run)
    assert left, "SIGKILL gives no chance to clean up: a temporary file stays"
    others = [run / ".log.json.x.json.abcd1234.tmp", run / ".other.pt.abcd1234.tmp"]  # not this job's
    for path in others:
        path.touch()
    done = subprocess.run(pretrain_command(SPEC, imagenet, run), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"removed {len(left)} leftover(s) of an interrupted run" in done.stderr
    assert _leftovers(run) == sorted(map(str, others))
    assert (run / "checkpoint.pt").is_file()


def test_sigkill_mid_generation_leaves_a_partial_folder_that_generating_again_sweeps(tmp_path):
    options = json.dumps({"num_classes": 2, "train_per_class": 3, "val_per_class": 1, "image_size": 36})
    args = ["generate", "--kind", "imagefolder", "--root", str(tmp_path / "imagenet"), "--seed", "0"]
    job = _start(tmp_path / "marker", "PIL.Image:Image.save", [*args, "--options", options])
    _kill_mid_write(job, tmp_path / "marker", signal.SIGKILL)
    assert [Path(p).name.startswith(".imagenet.partial-") for p in _leftovers(tmp_path)] == [True]
    foreign = tmp_path / ".imagenet2.partial-abcd1234"  # another dataset's: left alone
    foreign.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "goodtransfer", *args, "--options", options], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "removed 1 leftover(s) of an interrupted run" in done.stderr
    assert _leftovers(tmp_path) == [str(foreign)]
    assert (tmp_path / "imagenet/train").is_dir()
