"""A pretraining run with ``import_from`` turns a checkpoint from the wild into ours, training nothing."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from goodtransfer.checkpoint import load_backbone
from goodtransfer.models.backbone import build_resnet


def test_import_run_converts_a_moco_checkpoint_without_training(tmp_path):
    torch.manual_seed(0)
    encoder = build_resnet("resnet10")
    released = tmp_path / "moco_v2_imagenet.pth"
    weights = {f"module.encoder_q.{k}": v for k, v in encoder.state_dict().items() if not k.startswith("fc.")}
    torch.save({"epoch": 200, "arch": "resnet10", "state_dict": weights}, released)
    spec = {"run": "released-mocov2", "method": "moco", "arch": "resnet10", "import_from": str(released)}
    out = tmp_path / "run"
    command = [sys.executable, "-m", "goodtransfer", "pretrain", "--spec", json.dumps(spec)]
    command += [
        "--data",
        str(tmp_path),
        "--out",
        str(out / "checkpoint.pt"),
        "--state-dir",
        str(out / "state"),
    ]
    subprocess.run([*command, "--train-log", str(out / "train_log.json")], check=True, capture_output=True)
    state_dict, meta = load_backbone(out / "checkpoint.pt")
    assert meta["method"] == "imported:moco" and meta["epoch"] == 200 and meta["source"] == str(released)
    for key, value in encoder.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(state_dict[key], value), key
    assert not (out / "state").exists()
