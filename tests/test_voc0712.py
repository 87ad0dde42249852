"""VOC07+12: the fine-tune trains on VOC2007 trainval plus VOC2012 trainval and tests on VOC2007 test."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from goodtransfer.checkpoint import save_backbone
from goodtransfer.data.synthetic.voc import generate_voc
from goodtransfer.models.backbone import backbone_state_dict, build_resnet
from tests.workflow import FP32_CPU, protocol_spec

CLASSES = ["aeroplane", "bicycle"]


def test_extra_training_set_is_added_to_the_training_images(tmp_path):
    voc07, voc12 = tmp_path / "VOC2007", tmp_path / "VOC2012"
    for root, seed, trainval in ((voc07, 0, 6), (voc12, 1, 4)):
        generate_voc(root, classes=CLASSES, trainval_images=trainval, test_images=4, image_size=64,
                     max_objects=1, seed=seed)  # fmt: skip
    torch.manual_seed(0)
    checkpoint = tmp_path / "checkpoint.pt"
    meta = {"method": "random", "run": "r", "config_hash": "-", "epoch": 0, "arch": "resnet10"}
    save_backbone(checkpoint, backbone_state_dict(build_resnet("resnet10")), meta)
    spec = protocol_spec("voc07", "r", max_iter=2, steps=[1], warmup_iters=1, min_size_train=[64],
                         min_size_test=64, classes=CLASSES, **FP32_CPU)  # fmt: skip
    out = tmp_path / "out"
    command = [sys.executable, "-m", "goodtransfer", "downstream", "--spec", json.dumps(spec), "--checkpoint",
               str(checkpoint), "--data", str(voc07), "--metrics", str(out / "metrics.json"),
               "--state-dir", str(out / "state"), "--extra-train", str(voc12), "trainval"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_images"] == 6 + 4 and metrics["test_images"] == 4
