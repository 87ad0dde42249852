"""Bad inputs of training jobs: diverging and zero-step training, NaN metrics, bad checkpoints, kills.
Every case runs the real ``python -m goodtransfer ...``; the data is built once per test process."""

from __future__ import annotations

import functools
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from goodtransfer.checkpoint import save_backbone
from goodtransfer.models.backbone import backbone_state_dict, build_resnet
from tests.bad_inputs.common import Case, Outcome, goodtransfer
from tests.workflow import pretrain_command, protocol_spec, tiny_moco_spec


@functools.cache
def _shared() -> Path:
    """12 ImageNet-style images (2 classes), a VOC2007 of 4 + 2 images, a random ResNet-10 checkpoint."""
    from goodtransfer.data.synthetic.imagenet import generate_imagenet
    from goodtransfer.data.synthetic.voc import generate_voc

    folder = Path(tempfile.mkdtemp(prefix="goodtransfer-bad-training-"))
    generate_imagenet(
        folder / "imagenet", num_classes=2, train_per_class=6, val_per_class=2, image_size=36, seed=0
    )
    generate_voc(folder / "VOC2007", classes=["aeroplane", "bicycle"], trainval_images=4, test_images=2,
                 image_size=64, max_objects=2, seed=0)  # fmt: skip
    torch.manual_seed(0)
    meta = {"method": "random", "run": "r", "config_hash": "-", "epoch": 0, "arch": "resnet10"}
    save_backbone(folder / "random.pt", backbone_state_dict(build_resnet("resnet10")), meta)
    return folder


COMPUTE = {"device": "cpu", "precision": "fp32", "channels_last": False}


def _pretrain(tmp: Path, **overrides) -> Outcome:
    spec = tiny_moco_spec(**{"run": "mocov2-f", "batch_size": 4, "lr_reference_batch": 4, **overrides})
    done = subprocess.run(pretrain_command(spec, _shared() / "imagenet", tmp), capture_output=True, text=True)
    return Outcome(done.returncode, done.stderr, [tmp / "checkpoint.pt", tmp / "log.json"])


def _linear(tmp: Path, checkpoint: Path, **overrides) -> Outcome:
    spec = protocol_spec("linear", "mocov2-f", **{**COMPUTE, "epochs": 2, "batch_size": 4, **overrides})
    outcome = goodtransfer(
        "downstream", "--spec", json.dumps(spec), "--checkpoint", str(checkpoint),
        "--data", str(_shared() / "imagenet"), "--metrics", str(tmp / "metrics.json"),
        "--state-dir", str(tmp / "state"),
    )  # fmt: skip
    outcome.outputs = [tmp / "metrics.json"]
    return outcome


def _voc(tmp: Path, data: Path | None = None, **overrides) -> Outcome:
    spec = protocol_spec("voc07", "mocov2-f", **{
        **COMPUTE, "max_iter": 4, "steps": [3], "warmup_iters": 1, "min_size_train": [64],
        "min_size_test": 64, "checkpoint_period": 10, "classes": ["aeroplane", "bicycle"],
        **overrides})  # fmt: skip
    outcome = goodtransfer(
        "downstream", "--spec", json.dumps(spec), "--checkpoint", str(_shared() / "random.pt"),
        "--data", str(data or _shared() / "VOC2007"), "--metrics", str(tmp / "metrics.json"),
        "--state-dir", str(tmp / "state"),
    )  # fmt: skip
    outcome.outputs = [tmp / "metrics.json", tmp / "detections.json"]
    return outcome


def voc_empty_training_split(tmp: Path) -> Outcome:
    root = tmp / "VOC2007"
    (root / "ImageSets/Main").mkdir(parents=True)
    for sub in ("Annotations", "JPEGImages"):
        (root / sub).symlink_to(_shared() / "VOC2007" / sub)
    (root / "ImageSets/Main/trainval.txt").write_text("")
    (root / "ImageSets/Main/test.txt").write_text((_shared() / "VOC2007/ImageSets/Main/test.txt").read_text())
    return _voc(tmp, root)


def _table(tmp: Path, metrics_text: str, *extra: str) -> Outcome:
    (tmp / "metrics.json").write_text(metrics_text)
    declaration = {
        "caption": "c", "row_header": "pretraining", "reference": "t",
        "columns": [{"key": "AP", "label": "VOC AP", "group": "VOC", "protocol": "voc07", "metric": "AP"}],
        "groups": [{"label": "g", "rows": [{"label": "MoCo", "run": "moco"}]}],
    }  # fmt: skip
    (tmp / "reference.yaml").write_text(json.dumps({"t": {"rows": [{"method": "MoCo", "AP": 50.0}]}}))
    outcome = goodtransfer(
        "table", "--name", "t", "--declaration", json.dumps(declaration),
        "--metrics", json.dumps({"voc07/moco": str(tmp / "metrics.json")}),
        "--reference", str(tmp / "reference.yaml"), "--out", str(tmp / "table.json"), *extra,
    )  # fmt: skip
    outcome.outputs = [tmp / "table.json"]
    return outcome


def _checkpoint(tmp: Path, make) -> Outcome:
    path = tmp / "checkpoint.pt"
    make(path)
    return _linear(tmp, path)


def truncated(path: Path) -> None:
    data = (_shared() / "random.pt").read_bytes()
    path.write_bytes(data[: len(data) // 2])


def not_a_checkpoint(path: Path) -> None:
    path.write_text("epoch,loss\n1,0.5\n")


def wrong_keys(path: Path) -> None:
    torch.save({"encoder.weight": torch.zeros(2, 2), "head.bias": torch.zeros(2)}, path)


def tampered(path: Path) -> None:
    checkpoint = torch.load(_shared() / "random.pt", weights_only=True)
    checkpoint["state_dict"]["conv1.weight"][0, 0, 0, 0] += 1.0  # meta.weights_sha256 kept: now a lie
    torch.save(checkpoint, path)


def sigterm_pretraining(tmp: Path) -> Outcome:
    spec = tiny_moco_spec(run="mocov2-f", batch_size=4, lr_reference_batch=4, epochs=200)
    job = subprocess.Popen(
        pretrain_command(spec, _shared() / "imagenet", tmp), stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    while not (tmp / "state/last.pt").exists() and job.poll() is None and time.time() < deadline:
        time.sleep(0.05)  # mid-training: at least one epoch saved, many to go
    job.send_signal(signal.SIGTERM)
    _, err = job.communicate(timeout=120)
    leftovers = [p for p in tmp.rglob(".*") if p.name.endswith(".tmp")]
    return Outcome(job.returncode, err, [tmp / "checkpoint.pt", tmp / "log.json", *leftovers])


def sigterm_generation(tmp: Path) -> Outcome:
    options = {"num_classes": 2, "train_per_class": 400, "val_per_class": 1, "image_size": 36}
    command = [sys.executable, "-m", "goodtransfer", "generate", "--kind", "imagefolder", "--root",
               str(tmp / "imagenet"), "--seed", "0", "--options", json.dumps(options)]  # fmt: skip
    job = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while (
        not list(tmp.glob(".imagenet.partial-*/train/*/*")) and job.poll() is None and time.time() < deadline
    ):
        time.sleep(0.02)  # mid-write: the partial folder holds images
    job.send_signal(signal.SIGTERM)
    _, err = job.communicate(timeout=120)
    return Outcome(job.returncode, err, [tmp / "imagenet", *tmp.glob(".imagenet.partial-*")])


STOPPED = ("stopped by SIGTERM", "temporary files are removed", "run the job again to resume")
DIVERGED = ("run mocov2-f: loss is", "training diverged: lower the learning rate")

CASES: list[Case] = [
    Case("train-pretrain-diverged", lambda t: _pretrain(t, lr=1e6, epochs=3, checkpoint_every=3),
         (*DIVERGED, "(lr ", "pretrain.runs.mocov2-f.lr"), 2),
    Case("train-pretrain-batch-larger-than-dataset", lambda t: _pretrain(t, batch_size=16),
         ("run mocov2-f: 12 training images, batch_size 16 (drop_last): zero steps",
          "batch_size or add images"), 2),
    Case("train-linear-diverged", lambda t: _linear(t, _shared() / "random.pt", lr=1e38),
         (*DIVERGED, "at epoch 1 step", "downstream.linear.lr"), 2),
    Case("train-voc-diverged", lambda t: _voc(t, base_lr=1e12, warmup_factor=1.0),
         (*DIVERGED, "at iteration", "(lr 1e+12)", "downstream.voc07.base_lr"), 2),
    Case("train-voc-empty-training-split", voc_empty_training_split,
         ("ImageSets/Main/trainval.txt: lists no image ids", "expected one image id per line"), 2),
    Case("train-table-nan-in-metrics", lambda t: _table(t, '{"AP": NaN, "run": "moco"}'),
         ("metrics.json: holds NaN (not valid JSON)", "rerun that job"), 2),
    Case("train-table-infinity-in-metrics", lambda t: _table(t, '{"AP": -Infinity, "run": "moco"}'),
         ("metrics.json: holds -Infinity",), 2),
    Case("train-table-tolerance-nan",
         lambda t: _table(t, '{"AP": 40.0}', "--tolerance", '{"paper_std": {"AP": NaN}}'),
         ("tolerance.paper_std.AP: got nan; expected a finite number >= 0",), 2),
    Case("ckpt-missing", lambda t: _linear(t, t / "absent.pt"), ("absent.pt: checkpoint file not found",), 2),
    Case("ckpt-truncated", lambda t: _checkpoint(t, truncated),
         ("checkpoint.pt: not a readable PyTorch checkpoint (truncated or corrupt?)",), 2),
    Case("ckpt-not-a-checkpoint", lambda t: _checkpoint(t, not_a_checkpoint),
         ("checkpoint.pt: not a readable PyTorch checkpoint",), 2),
    Case("ckpt-state-dict-wrong-keys", lambda t: _checkpoint(t, wrong_keys),
         ("checkpoint.pt:", "encoder.weight"), 2),
    Case("ckpt-weights-sha256-mismatch", lambda t: _checkpoint(t, tampered),
         ("checkpoint.pt: the weights do not match meta.weights_sha256", "fetch it again"), 2),
    Case("kill-pretrain-sigterm", sigterm_pretraining, STOPPED, 143),
    Case("kill-generate-sigterm", sigterm_generation, STOPPED, 143),
]  # fmt: skip
