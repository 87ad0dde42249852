"""The four stale scenarios of the integrity issue: after an input changed, a job whose old state or cache
is still on disk gives exactly what a fresh run gives (and says why it did not resume)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import torch

from goodtransfer.checkpoint import load_backbone, load_torch, save_backbone
from goodtransfer.data.synthetic.imagenet import generate_imagenet
from goodtransfer.data.synthetic.voc import generate_voc
from goodtransfer.evaluate import inversion
from goodtransfer.models.backbone import backbone_state_dict, build_resnet
from goodtransfer.transfer import voc_detection
from tests.test_engine import _scalars
from tests.workflow import (
    FP32_CPU,
    copy_workflow,
    pretrain_command,
    protocol_spec,
    run_protocol,
    snakemake,
    tiny_moco_spec,
)

CLASSES = ["aeroplane", "bicycle"]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _backbone(path: Path, seed: int) -> Path:
    """A ResNet-10 'pretrained' with ``seed``: retraining = the same path with other weights."""
    torch.manual_seed(seed)
    meta = {"method": "random", "run": "r", "config_hash": "-", "epoch": 0, "arch": "resnet10"}
    save_backbone(path, backbone_state_dict(build_resnet("resnet10")), meta)
    return path


def _voc_spec() -> dict:
    return protocol_spec("voc07", "r", max_iter=6, base_lr=0.005, steps=[4], warmup_iters=1,
                         min_size_train=[64], min_size_test=64, checkpoint_period=3, classes=CLASSES,
                         **FP32_CPU)  # fmt: skip


def _finetune(checkpoint: Path, voc_root: Path, out: Path) -> dict:
    return run_protocol(_voc_spec(), checkpoint, voc_root, out)


def _killed(*args, **kwargs):
    raise KeyboardInterrupt("killed")


def test_finetune_after_the_backbone_was_retrained_equals_a_fresh_finetune(tmp_path, monkeypatch, capsys):
    voc_root = tmp_path / "VOC2007"
    generate_voc(voc_root, classes=CLASSES, trainval_images=6, test_images=4, image_size=64, max_objects=2,
                 seed=0)  # fmt: skip
    checkpoint, job = _backbone(tmp_path / "checkpoint.pt", seed=0), tmp_path / "job"
    with monkeypatch.context() as patch:  # killed after the state of iteration 3 was saved
        patch.setattr(voc_detection, "evaluate", _killed)
        with pytest.raises(KeyboardInterrupt):
            _finetune(checkpoint, voc_root, job)
    assert load_torch(job / "state/last.pt")["iteration"] == 3
    _backbone(checkpoint, seed=1)  # the backbone is retrained (a config change upstream)
    capsys.readouterr()
    after = _finetune(checkpoint, voc_root, job)
    log = capsys.readouterr().err
    assert "not resuming" in log and "(backbone changed)" in log and "resuming r" not in log
    fresh = _finetune(_backbone(tmp_path / "fresh.pt", seed=1), voc_root, tmp_path / "fresh")
    assert after["resumed_from"] == 0
    assert {k: after[k] for k in ("AP", "AP50", "AP75")} == {k: fresh[k] for k in ("AP", "AP50", "AP75")}
    assert (job / "detections.json").read_bytes() == (tmp_path / "fresh/detections.json").read_bytes()
    assert not (job / "state").exists(), "the state outlived the finished job"
    # TensorBoard holds this run's scalars only (the killed run's were removed at the fresh start).
    scalars = _scalars(job / "tensorboard")
    assert [step for step, _ in scalars["train/loss"]] == [1, 2, 3, 4, 5, 6]
    assert {"train/loss_classifier", "train/loss_box_reg", "train/loss_objectness"} <= set(scalars)
    lrs = [value for _, value in scalars["train/lr"]]
    assert lrs[-1] == pytest.approx(_voc_spec()["base_lr"] * 0.1) and lrs[0] < lrs[1]  # warmup, then the step


def _kill_when_state_reaches(command: list[str], state: Path, epoch: int) -> int:
    job = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and not (state.exists() and load_torch(state)["epoch"] >= epoch):
        time.sleep(0.05)
    job.kill()  # SIGKILL, as after a node failure: the state stays
    job.wait()
    return load_torch(state)["epoch"]


def _check_record(path: Path, root: Path) -> Path:
    from goodtransfer.data.registry import check

    path.write_text(json.dumps(check("imagefolder", root)))
    return path


def test_pretraining_after_the_dataset_root_changed_equals_a_fresh_run(tmp_path):
    spec = tiny_moco_spec(run="r", epochs=6)
    first, second = tmp_path / "first/imagenet", tmp_path / "second/imagenet"
    generate_imagenet(first, num_classes=2, train_per_class=12, val_per_class=2, image_size=36, seed=0)
    generate_imagenet(second, num_classes=2, train_per_class=12, val_per_class=2, image_size=36, seed=1)
    checks = [_check_record(tmp_path / f"{name}.json", root) for name, root in (("a", first), ("b", second))]
    job = tmp_path / "job"
    done = subprocess.run([*pretrain_command(spec, first, job), "--data-check", str(checks[0])],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert not (job / "state").exists(), "the state outlived the finished run"
    (job / "checkpoint.pt").unlink()
    killed_at = _kill_when_state_reaches(
        [*pretrain_command(spec, first, job), "--data-check", str(checks[0])], job / "state/last.pt", 2
    )
    assert 2 <= killed_at < spec["epochs"], "the job finished before it could be killed"
    moved = subprocess.run([*pretrain_command(spec, second, job), "--data-check", str(checks[1])],
                           capture_output=True, text=True)  # fmt: skip
    assert moved.returncode == 0, moved.stderr[-2000:]
    assert "not resuming" in moved.stderr and "(data changed)" in moved.stderr
    assert "resuming r from epoch" not in moved.stderr
    fresh = tmp_path / "fresh"
    subprocess.run([*pretrain_command(spec, second, fresh), "--data-check", str(checks[1])], check=True,
                   capture_output=True)  # fmt: skip
    ours, reference = load_backbone(job / "checkpoint.pt")[0], load_backbone(fresh / "checkpoint.pt")[0]
    assert all(torch.equal(ours[key], reference[key]) for key in reference)


def test_forcing_a_finished_pretraining_with_snakemake_f_trains_fresh(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    target = "results/pretrain/mocov2-f/checkpoint.pt"
    done = snakemake(workdir, target, "--configfile", "tiny.yaml")
    assert done.returncode == 0, done.stderr[-3000:]
    first = load_backbone(workdir / target)[0]
    assert not (workdir / "results/pretrain/mocov2-f/state").exists()
    forced = snakemake(workdir, target, "-f", "--configfile", "tiny.yaml")
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert "resuming" not in (workdir / "logs/pretrain/mocov2-f.log").read_text()
    again = load_backbone(workdir / target)[0]
    assert all(torch.equal(first[key], again[key]) for key in first)  # a fresh run is deterministic


def test_inversion_figure_after_the_backbone_was_retrained_equals_a_fresh_one(tmp_path):
    from goodtransfer.evaluate.perceptual import write_random_network
    from tests.test_inversion import TINY

    lpips = tmp_path / "squeeze.pth"
    write_random_network("squeeze", 0, lpips)
    spec = {**TINY, "iterations": 3, "lpips_weights": str(lpips), "lpips_linear": None}
    images = []
    for index, color in enumerate(((200, 30, 30), (20, 90, 220))):
        images.append(tmp_path / f"img{index}.png")
        from PIL import Image

        Image.new("RGB", (48, 40), color).save(images[-1])
    checkpoint = _backbone(tmp_path / "moco.pt", seed=0)
    work = tmp_path / "figure2"
    inversion.run_inversion(spec, {"moco": checkpoint}, images, work, work / "metrics.json")
    _backbone(checkpoint, seed=1)  # retrained at the same path
    inversion.run_inversion(spec, {"moco": checkpoint}, images, work, work / "metrics.json")
    fresh = tmp_path / "fresh"
    retrained = _backbone(tmp_path / "retrained.pt", seed=1)
    inversion.run_inversion(spec, {"moco": retrained}, images, fresh, fresh / "metrics.json")
    ours, reference = (json.loads((d / "metrics.json").read_text())["moco"] for d in (work, fresh))
    assert ours["lpips_per_image"] == reference["lpips_per_image"]
    assert ours["feature_mse_per_image"] == reference["feature_mse_per_image"]


def test_state_saved_by_code_that_drew_batches_otherwise_is_not_continued(tmp_path, capsys):
    """Same spec and inputs, but a state of an older format (before per-sample seeding): starts fresh."""
    from goodtransfer import resume

    key = resume.job_key({"run": "r"}, data="d")
    older = {name: value for name, value in key.items() if name != "format"}
    resume.ResumeState(tmp_path, older).save(epoch=3)
    assert resume.ResumeState(tmp_path, key).load() is None
    assert "(format changed); starting fresh" in capsys.readouterr().err
    resume.ResumeState(tmp_path, key).save(epoch=4)
    assert resume.ResumeState(tmp_path, key).load()["epoch"] == 4
