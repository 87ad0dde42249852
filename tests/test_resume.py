"""A pretraining job killed mid-run resumes from its last checkpoint and ends where an uninterrupted
run ends (fp32, one thread: bitwise on the CPU)."""

from __future__ import annotations

import subprocess
import time

import pytest
import torch

from goodtransfer.checkpoint import load_backbone, load_torch
from goodtransfer.data.synthetic.imagenet import generate_imagenet
from tests.workflow import pretrain_command, tiny_moco_spec

SPEC = tiny_moco_spec(
    run="mocov2-test",
    epochs=12,
    keep_every=4,
    log_every=2,
    augment=["flip", "crop", "blur"],
    augmentations={
        "flip": {"p": 0.5},
        "crop": {"scale": [0.2, 1.0]},
        "blur": {"sigma": [0.1, 2.0], "p": 0.5},
    },
    seed=3,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet") / "imagenet"
    generate_imagenet(root, num_classes=2, train_per_class=12, val_per_class=2, image_size=36, seed=0)
    return root


def _command(data, out, spec=SPEC):
    return pretrain_command(spec, data, out)


def test_killed_pretraining_resumes_from_last_checkpoint_and_matches_uninterrupted_run(data, tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    subprocess.run(_command(data, straight), check=True, capture_output=True)

    job = subprocess.Popen(_command(data, interrupted), stderr=subprocess.PIPE, text=True)
    state = interrupted / "state/last.pt"
    deadline = time.time() + 120
    while time.time() < deadline and not (state.exists() and load_torch(state)["epoch"] >= 3):
        time.sleep(0.05)
    job.kill()  # SIGKILL: no chance to clean up, as after a node failure
    job.wait()
    killed_at = load_torch(state)["epoch"]
    assert 3 <= killed_at < SPEC["epochs"], "the job finished before it could be killed"
    assert not (interrupted / "checkpoint.pt").exists()  # nothing that looks finished

    resumed = subprocess.run(_command(data, interrupted), check=True, capture_output=True, text=True)
    assert f"resuming mocov2-test from epoch {killed_at}" in resumed.stderr
    # Progress counts whole-run steps (3 per epoch) from where it resumed, a line every 2 (log_every).
    first_line = f"[pretrain mocov2-test] {killed_at * 3 + 2 - (killed_at * 3) % 2}/36 loss"
    assert first_line in resumed.stderr and "img/s ETA" in resumed.stderr
    ours, meta = load_backbone(interrupted / "checkpoint.pt")
    reference, _ = load_backbone(straight / "checkpoint.pt")
    assert meta["epoch"] == SPEC["epochs"]
    kept = sorted(p.name for p in (straight / "epochs").iterdir())
    assert kept == ["epoch_0004.pt", "epoch_0008.pt", "epoch_0012.pt"]  # keep_every: 4 (Figure 4 uses 10)
    assert load_backbone(straight / "epochs/epoch_0008.pt")[1]["epoch"] == 8
    for key in reference:
        assert torch.equal(ours[key], reference[key]), key


def test_state_of_another_configuration_is_not_resumed(data, tmp_path):
    subprocess.run(_command(data, tmp_path), check=True, capture_output=True)
    shorter = dict(SPEC, epochs=2)
    rerun = subprocess.run(_command(data, tmp_path, shorter), check=True, capture_output=True, text=True)
    assert "resuming" not in rerun.stderr
    assert load_backbone(tmp_path / "checkpoint.pt")[1]["epoch"] == 2
