"""A result that cannot be right stops the job naming the cause: a diverged loss (run, step, lr), an
epoch of zero steps (images, batch), a NaN metric (file, key path); nothing that looks finished is left."""

from __future__ import annotations

import math
import re
import subprocess
from pathlib import Path

import pytest
import torch

from goodtransfer.checkpoint import save_backbone
from goodtransfer.data.synthetic.imagenet import generate_imagenet
from goodtransfer.data.synthetic.voc import generate_voc
from goodtransfer.finite import DivergedError, ZeroStepsError, null_if_nan
from goodtransfer.io import InputError, read_json, write_json
from goodtransfer.models.backbone import backbone_state_dict, build_resnet
from goodtransfer.pretrain.train import pretrain
from goodtransfer.report.tables import build_table
from tests.workflow import FP32_CPU, pretrain_command, protocol_spec, run_protocol, tiny_moco_spec

DIVERGED = re.compile(
    r"run (\S+): loss is (nan|inf|-inf) at (epoch \d+ step \d+|iteration \d+) \(lr ([^)]+)\)"
)


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet") / "imagenet"
    generate_imagenet(root, num_classes=2, train_per_class=6, val_per_class=2, image_size=36, seed=0)
    return root  # 12 training images


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _files(folder: Path) -> list[str]:
    """Files left behind, TensorBoard's events aside (the curve of a diverged run is worth keeping)."""
    files = (p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
    return sorted(str(p) for p in files if p.parts[0] != "tensorboard")


def test_pretraining_with_huge_lr_stops_naming_run_step_and_lr_and_writes_no_checkpoint(imagenet, tmp_path):
    spec = tiny_moco_spec(
        run="mocov2-f", lr=1e6, epochs=3, batch_size=4, lr_reference_batch=4, checkpoint_every=3
    )
    done = subprocess.run(pretrain_command(spec, imagenet, tmp_path), capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    match = DIVERGED.search(done.stderr)
    assert match and match.group(1) == "mocov2-f", done.stderr
    assert "Traceback" not in done.stderr
    assert "training diverged: lower the learning rate (pretrain.runs.mocov2-f.lr" in done.stderr
    # It diverges before the end (resume state every 3 epochs): no state, backbone or log exists.
    assert match.group(3) != "epoch 3 step 3", done.stderr
    assert _files(tmp_path) == [], _files(tmp_path)


def test_batch_larger_than_the_dataset_fails_naming_both_numbers(imagenet, tmp_path):
    spec = tiny_moco_spec(run="supervised-f", batch_size=16)
    with pytest.raises(
        ZeroStepsError, match=r"run supervised-f: 12 training images, batch_size 16 \(drop_last\)"
    ):
        pretrain(spec, imagenet, tmp_path / "checkpoint.pt", tmp_path / "state", tmp_path / "log.json")
    assert _files(tmp_path) == []


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    folder = tmp_path_factory.mktemp("voc")
    generate_voc(folder / "VOC2007", classes=["aeroplane", "bicycle"], trainval_images=4, test_images=2,
                 image_size=64, max_objects=2, seed=0)  # fmt: skip
    torch.manual_seed(0)
    meta = {"method": "random", "run": "r", "config_hash": "-", "epoch": 0, "arch": "resnet10"}
    save_backbone(folder / "random.pt", backbone_state_dict(build_resnet("resnet10")), meta)
    return folder


def _voc_spec(**overrides) -> dict:
    return protocol_spec("voc07", "mocov2-f", **{
        "max_iter": 4, "steps": [3], "warmup_iters": 1, "min_size_train": [64], "min_size_test": 64,
        "checkpoint_period": 2, "classes": ["aeroplane", "bicycle"], **FP32_CPU, **overrides})  # fmt: skip


def _finetune(spec: dict, voc: Path, out: Path) -> None:
    run_protocol(spec, voc / "random.pt", voc / "VOC2007", out)


def test_voc_finetune_with_huge_lr_stops_before_any_metrics_or_state(voc, tmp_path):
    with pytest.raises(DivergedError) as failure:
        _finetune(_voc_spec(base_lr=1e12, warmup_factor=1.0), voc, tmp_path)
    match = DIVERGED.search(str(failure.value))
    assert match and match.group(1) == "mocov2-f" and match.group(3) in ("iteration 1", "iteration 2")
    assert float(match.group(4)) == 1e12
    assert _files(tmp_path) == []  # diverged before the first checkpoint (period 2): nothing at all


def test_voc_with_an_empty_training_split_fails_naming_the_split_file_before_training(voc, tmp_path):
    root = tmp_path / "VOC2007"
    root.mkdir()
    for sub in ("Annotations", "JPEGImages"):
        (root / sub).symlink_to(voc / "VOC2007" / sub)
    (root / "ImageSets/Main").mkdir(parents=True)
    (root / "ImageSets/Main/trainval.txt").write_text("")
    (root / "ImageSets/Main/test.txt").write_text((voc / "VOC2007/ImageSets/Main/test.txt").read_text())
    with pytest.raises(InputError, match=r"ImageSets/Main/trainval.txt: lists no image ids"):
        run_protocol(_voc_spec(), voc / "random.pt", root, tmp_path)


def test_write_json_refuses_nan_naming_the_file_and_key_path(tmp_path):
    with pytest.raises(
        InputError, match=r"metrics.json: box.AP75 is nan is not finite; a metric must be finite"
    ):
        write_json(tmp_path / "metrics.json", {"box": {"AP": 1.0, "AP75": math.nan}})
    with pytest.raises(InputError, match=r"curve.1.AP is inf"):
        write_json(tmp_path / "metrics.json", {"curve": [{"AP": 1.0}, {"AP": math.inf}]})
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary


def test_read_json_rejects_nan_and_infinity_tokens_naming_the_file(tmp_path):
    for token in ("NaN", "Infinity", "-Infinity"):
        (tmp_path / "metrics.json").write_text(f'{{"AP": {token}}}')
        with pytest.raises(InputError, match=rf"metrics.json: holds {token} \(not valid JSON\)"):
            read_json(tmp_path / "metrics.json")


def test_undefined_metric_is_written_as_null_with_its_reason_and_shown_as_a_dash_with_a_note(tmp_path):
    metrics = null_if_nan(
        {"AP": math.nan, "per_class_AP50": {"cow": math.nan, "dog": 50.0}}, {"AP": "no cows"}
    )
    assert metrics["AP"] is None and metrics["per_class_AP50"] == {"cow": None, "dog": 50.0}
    assert metrics["undefined"]["AP"] == "no cows"
    write_json(tmp_path / "metrics.json", metrics)
    declaration = {
        "caption": "c", "row_header": "pretraining", "reference": "t",
        "columns": [{"key": "AP", "label": "VOC AP", "group": "VOC", "protocol": "voc07", "metric": "AP"}],
        "groups": [{"label": "g", "rows": [{"label": "MoCo", "run": "moco"}]}],
    }  # fmt: skip
    reference = {"t": {"columns": ["method", "AP"], "rows": [{"method": "MoCo", "AP": 50.0}]}}
    table = build_table("t", declaration, {"voc07/moco": str(tmp_path / "metrics.json")}, reference, [])
    cell = table["groups"][0]["rows"][0]["cells"]["AP"]
    assert cell["ours"] is None and cell["paper"] == 50.0
    assert any(note.startswith("-- MoCo, VOC AP: undefined, no cows") for note in table["notes"]), table[
        "notes"
    ]
