"""The detectron2 hand-off without detectron2: weight names, the emitted config, metrics read back."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torchvision.models import resnet50

from goodtransfer.config import deep_merge, detection_spec
from goodtransfer.io import InputError
from goodtransfer.transfer.detectron2_backend import (
    detectron2_name,
    emit_config,
    parse_detectron2_metrics,
    to_detectron2,
    write_detectron2_checkpoint,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def backbone() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {k: v for k, v in resnet50().state_dict().items() if not k.startswith("fc.")}


@pytest.fixture(scope="module")
def paper_spec() -> dict:
    base = yaml.safe_load((ROOT / "config.yaml").read_text())
    paper = yaml.safe_load((ROOT / "presets/paper.yaml").read_text())
    return detection_spec(deep_merge(base, paper), "voc07", "run")


def test_every_resnet50_key_maps_without_collisions(backbone):
    converted = to_detectron2(backbone)
    kept = [k for k in backbone if not k.endswith("num_batches_tracked")]
    assert len(converted) == len(kept) == 265  # 318 keys less 53 BatchNorm counters
    assert all(name.startswith(("stem.", "res2.", "res3.", "res4.", "res5.")) for name in converted)
    assert not any("bn" in name or "downsample" in name or "layer" in name for name in converted)
    for key in kept:
        assert np.array_equal(converted[detectron2_name(key)], backbone[key].numpy())


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("conv1.weight", "stem.conv1.weight"),
        ("bn1.weight", "stem.conv1.norm.weight"),
        ("bn1.running_mean", "stem.conv1.norm.running_mean"),
        ("layer1.0.downsample.0.weight", "res2.0.shortcut.weight"),
        ("layer1.0.downsample.1.running_var", "res2.0.shortcut.norm.running_var"),
        ("layer2.3.bn2.bias", "res3.3.conv2.norm.bias"),
        ("layer3.5.conv1.weight", "res4.5.conv1.weight"),
        ("layer4.2.conv3.weight", "res5.2.conv3.weight"),
    ],
)
def test_hand_picked_names(key, name):
    assert detectron2_name(key) == name


def test_counters_kept_on_request_as_0d_arrays(backbone):
    converted = to_detectron2(backbone, keep_num_batches_tracked=True)
    assert len(converted) == len(backbone)
    assert converted["res2.0.shortcut.norm.num_batches_tracked"].shape == ()


@pytest.mark.parametrize("key", ["fc.weight", "layer5.0.conv1.weight", "encoder_q.conv1.weight"])
def test_foreign_keys_are_refused(key):
    with pytest.raises(InputError, match="torchvision ResNet key"):
        to_detectron2({key: torch.zeros(1)})


def test_checkpoint_pickle_round_trips(backbone, tmp_path):
    out = tmp_path / "weights.pkl"
    count = write_detectron2_checkpoint(backbone, out, keep_num_batches_tracked=True)
    raw = out.read_bytes()
    assert b"numpy._core" not in raw  # loadable by the numpy 1.x of a detectron2 environment
    with open(out, "rb") as handle:
        loaded = pickle.load(handle, encoding="latin1")  # as DetectionCheckpointer reads it
    assert (loaded["__author__"], loaded["matching_heuristics"], count) == ("goodtransfer", True, 318)
    expected = to_detectron2(backbone, keep_num_batches_tracked=True)
    assert loaded["model"].keys() == expected.keys()
    for name, value in expected.items():
        got = loaded["model"][name]
        assert (got.dtype, got.shape) == (value.dtype, value.shape) and np.array_equal(got, value)
    assert loaded["model"]["res5.2.conv3.weight"].flags.writeable  # torch.from_numpy without a warning
    with pytest.raises(InputError, match=r"\.pkl"):
        write_detectron2_checkpoint(backbone, tmp_path / "weights.pth")


def test_voc07_config_carries_the_paper_values(paper_spec):
    text = emit_config(paper_spec, "voc07", "/ckpt/model.pkl", "/out/voc07")
    cfg = yaml.safe_load(text)
    assert "_BASE_" not in cfg and cfg["VERSION"] == 2
    solver, model, inp = cfg["SOLVER"], cfg["MODEL"], cfg["INPUT"]
    assert (solver["MAX_ITER"], solver["STEPS"], solver["BASE_LR"]) == (9000, [6000, 8000], 0.02)
    assert (solver["IMS_PER_BATCH"], solver["WARMUP_ITERS"], solver["CHECKPOINT_PERIOD"]) == (16, 100, 1000)
    assert inp["MIN_SIZE_TRAIN"] == list(range(480, 801, 32))
    assert (inp["MIN_SIZE_TEST"], inp["MAX_SIZE_TRAIN"], inp["MAX_SIZE_TEST"], inp["FORMAT"]) == (
        800,
        1333,
        1333,
        "RGB",
    )
    assert model["PIXEL_MEAN"] == [123.675, 116.28, 103.53] and model["PIXEL_STD"] == [58.395, 57.12, 57.375]
    assert model["RESNETS"]["STRIDE_IN_1X1"] is False and model["RESNETS"]["NORM"] == "naiveSyncBN"
    assert model["BACKBONE"]["FREEZE_AT"] == 0 and model["MASK_ON"] is False
    assert model["ROI_HEADS"]["NAME"] == "Res5ROIHeadsExtraNorm" and model["ROI_HEADS"]["NUM_CLASSES"] == 20
    assert (model["RPN"]["PRE_NMS_TOPK_TEST"], model["RPN"]["POST_NMS_TOPK_TEST"]) == (6000, 1000)
    assert model["ANCHOR_GENERATOR"]["SIZES"] == [[32, 64, 128, 256, 512]]
    assert cfg["DATASETS"] == {"TRAIN": ["voc_2007_trainval"], "TEST": ["voc_2007_test"]}
    assert cfg["TEST"]["PRECISE_BN"]["ENABLED"] is True
    assert (model["WEIGHTS"], cfg["OUTPUT_DIR"], cfg["SEED"]) == ("/ckpt/model.pkl", "/out/voc07", 0)
    assert text == emit_config(paper_spec, "voc07", "/ckpt/model.pkl", "/out/voc07")  # stable


def test_voc0712_and_coco_differences(paper_spec):
    voc0712 = yaml.safe_load(emit_config(paper_spec, "voc0712", "w.pkl", "out"))
    assert voc0712["DATASETS"]["TRAIN"] == ["voc_2007_trainval", "voc_2012_trainval"]
    assert voc0712["DATASETS"]["TEST"] == ["voc_2007_test"] and voc0712["MODEL"]["MASK_ON"] is False
    coco_spec = {**paper_spec, "classes": [f"c{i}" for i in range(80)]}
    coco = yaml.safe_load(emit_config(coco_spec, "coco", "w.pkl", "out", norm="SyncBN"))
    assert coco["DATASETS"] == {"TRAIN": ["coco_2017_train"], "TEST": ["coco_2017_val"]}
    assert coco["MODEL"]["MASK_ON"] is True and coco["MODEL"]["ROI_HEADS"]["NUM_CLASSES"] == 80
    assert coco["MODEL"]["RESNETS"]["NORM"] == "SyncBN"


def test_config_input_errors(paper_spec):
    with pytest.raises(InputError, match="protocol"):
        emit_config(paper_spec, "voc2012", "w.pkl", "out")  # type: ignore[arg-type]
    broken = {**paper_spec, "rpn": {"batch_size_per_image": 256}}
    with pytest.raises(InputError, match="rpn.pre_nms_topk_train"):
        emit_config(broken, "voc07", "w.pkl", "out")
    with pytest.raises(InputError, match="voc_2007_test2"):
        emit_config({**paper_spec, "test_split": "test2"}, "voc07", "w.pkl", "out")


def test_metrics_json_lines_take_the_last_bbox_line(tmp_path):
    lines = [
        {"iteration": 19, "total_loss": 1.2, "lr": 0.02},
        {"iteration": 4999, "bbox/AP": 40.0, "bbox/AP50": 70.0, "bbox/AP75": 41.0},
        {"iteration": 8999, "total_loss": 0.4},
        {"iteration": 8999, "bbox/AP": 52.5, "bbox/AP50": 80.25, "bbox/AP75": 57, "segm/AP": 1.0},
        {"iteration": 8999, "time": 3.0},
    ]
    path = tmp_path / "metrics.json"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    assert parse_detectron2_metrics(path) == {"AP": 52.5, "AP50": 80.25, "AP75": 57.0}


def test_metrics_from_the_evaluator_dict():
    results = {"bbox": {"AP": 50.0, "AP50": 80.0, "AP75": 55.0}, "segm": {"AP": 1.0}}
    assert parse_detectron2_metrics(results) == {"AP": 50.0, "AP50": 80.0, "AP75": 55.0}


def test_metrics_errors(tmp_path):
    no_eval = tmp_path / "train_only.json"
    no_eval.write_text(json.dumps({"iteration": 19, "total_loss": 1.0}) + "\n")
    with pytest.raises(InputError, match="no line with bbox/AP"):
        parse_detectron2_metrics(no_eval)
    bad = tmp_path / "bad.json"
    bad.write_text('{"bbox/AP": 1.0, "bbox/AP50": 2.0, "bbox/AP75": 3.0}\n{"iteration": \n')
    with pytest.raises(InputError, match="line 2 is not JSON"):
        parse_detectron2_metrics(bad)
    with pytest.raises(InputError, match="AP75"):
        parse_detectron2_metrics({"bbox/AP": 1.0, "bbox/AP50": 2.0, "bbox/AP75": float("nan")})
    with pytest.raises(InputError, match="not found"):
        parse_detectron2_metrics(tmp_path / "missing.json")
