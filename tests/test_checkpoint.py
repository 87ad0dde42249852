"""Checkpoints: our format round-trips, loads with weights_only, and bad files fail naming themselves."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from goodtransfer.checkpoint import load_backbone, load_into, save_backbone, save_torch
from goodtransfer.io import InputError
from goodtransfer.models.backbone import backbone_state_dict, build_resnet
from goodtransfer.transfer.c4 import backbone_keys_loaded, build_c4_detector
from goodtransfer.transfer.voc_detection import build_from_checkpoint
from tests.workflow import protocol_spec

DETECTION = {
    "anchor_sizes": [16, 32],
    "aspect_ratios": [0.5, 1.0, 2.0],
    "min_size_train": [64],
    "max_size": 128,
    "resize_rounding": "nearest",
    "size_divisibility": 0,
    "rpn": {
        "pre_nms_topk_train": 50,
        "post_nms_topk_train": 20,
        "pre_nms_topk_test": 50,
        "post_nms_topk_test": 20,
        "nms_thresh": 0.7,
        "batch_size_per_image": 32,
        "positive_fraction": 0.5,
        "iou_thresholds": [0.3, 0.7],
        "bbox_reg_weights": [1.0, 1.0, 1.0, 1.0],
        "smooth_l1_beta": 0.0,
        "loss_normalizer": "batch_size_per_image",
    },
    "roi_heads": {
        "pooler_resolution": 14,
        "batch_size_per_image": 16,
        "positive_fraction": 0.25,
        "iou_thresholds": [0.5],
        "bbox_reg_weights": [10.0, 10.0, 5.0, 5.0],
        "smooth_l1_beta": 0.0,
        "score_thresh_test": 0.05,
        "nms_thresh_test": 0.5,
        "detections_per_image": 10,
    },
}


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = build_resnet("resnet10")
    path = tmp_path / "checkpoint.pt"
    save_backbone(
        path,
        backbone_state_dict(model),
        {"method": "moco", "run": "r", "config_hash": "h", "epoch": 1, "arch": "resnet10"},
    )
    return path, model


def test_backbone_checkpoint_round_trips_without_classifier(checkpoint):
    path, model = checkpoint
    state_dict, meta = load_backbone(path)
    assert meta["arch"] == "resnet10" and meta["epoch"] == 1
    assert not any(k.startswith("fc.") for k in state_dict)
    assert torch.equal(state_dict["layer1.0.conv1.weight"], model.layer1[0].conv1.weight)


def test_truncated_checkpoint_error_names_the_file(checkpoint):
    path, _ = checkpoint
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"checkpoint\.pt: not a readable PyTorch checkpoint"):
        load_backbone(path)


def test_truncated_checkpoint_makes_the_cli_fail_with_its_path(checkpoint, tmp_path):
    path, _ = checkpoint
    path.write_bytes(path.read_bytes()[:1000])
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "goodtransfer",
            "downstream",
            "--spec",
            json.dumps(protocol_spec("linear", device="cpu")),
            "--checkpoint",
            str(path),
            "--data",
            str(tmp_path),
            "--metrics",
            str(tmp_path / "m.json"),
            "--state-dir",
            str(tmp_path / "state"),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert f"{path}: not a readable PyTorch checkpoint" in done.stderr
    assert not (tmp_path / "m.json").exists()


def test_pickled_code_is_refused_by_weights_only_loading(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "meta": {"format": "goodtransfer-backbone/1"}, "x": print}, path)
    with pytest.raises(InputError, match="evil.pt"):
        load_backbone(path)


def test_foreign_dict_error_names_expected_format(tmp_path):
    path = tmp_path / "plain.pt"
    save_torch(path, {"conv1.weight": torch.zeros(1)})
    with pytest.raises(InputError, match="expected a dict with 'state_dict' and 'meta'"):
        load_backbone(path)


def test_missing_keys_are_named_not_skipped():
    model = build_resnet("resnet10")
    state = backbone_state_dict(model)
    del state["layer3.0.bn1.weight"]
    with pytest.raises(InputError, match=r"layer3\.0\.bn1\.weight"):
        load_into(build_resnet("resnet10"), state, "ckpt")


def test_c4_detector_holds_every_backbone_weight_of_the_checkpoint(checkpoint):
    path, _ = checkpoint
    detector = build_from_checkpoint(DETECTION, path, num_classes=3)
    state_dict, _ = load_backbone(path)
    detector_state = detector.state_dict()
    mapping = backbone_keys_loaded(detector)
    assert set(mapping) == set(state_dict)  # stem..res4 in the backbone, res5 in the box head
    for source, target in mapping.items():
        assert torch.equal(detector_state[target], state_dict[source]), source


def test_c4_structure_rpn_on_res4_res5_box_head_with_extra_norm():
    detector = build_c4_detector(build_resnet("resnet50"), 20, DETECTION)
    assert detector.backbone.out_channels == 1024
    head = detector.roi_heads.box_head
    assert head.out_channels == 2048 and isinstance(head.norm, torch.nn.BatchNorm2d)
    assert detector.roi_heads.box_predictor.cls_score.out_features == 21
    assert detector.roi_heads.box_predictor.bbox_pred.out_features == 80  # class-specific, as detectron2
    assert not any(
        isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and not m.training for m in detector.modules()
    )
    assert all(p.requires_grad for p in detector.parameters())  # FREEZE_AT 0


def test_c4_parameter_count_equals_detectron2_r50_c4_for_20_classes():
    # detectron2 R50-C4 + MoCo's extra norm, counted from its layer shapes (15 anchors per location):
    resnet50_without_fc = 25_557_032 - (2048 * 1000 + 1000)  # torchvision's published total minus fc
    rpn = (1024 * 1024 * 9 + 1024) + (1024 * 15 + 15) + (1024 * 60 + 60)  # 3x3 conv, objectness, deltas
    extra_norm = 2 * 2048  # BN weight and bias after res5
    predictor = (2048 * 21 + 21) + (2048 * 80 + 80)  # K+1 scores, 4K class-specific deltas
    expected = resnet50_without_fc + rpn + extra_norm + predictor
    assert expected == 33_234_160
    spec = dict(DETECTION, anchor_sizes=[32, 64, 128, 256, 512])
    detector = build_c4_detector(build_resnet("resnet50"), 20, spec)
    assert sum(p.numel() for p in detector.parameters()) == expected


def test_background_box_deltas_are_zero_and_class_deltas_come_from_the_layer():
    detector = build_c4_detector(build_resnet("resnet10"), 3, DETECTION)
    features = torch.randn(5, detector.roi_heads.box_head.out_channels)
    scores, deltas = detector.roi_heads.box_predictor(features)
    assert scores.shape == (5, 4) and deltas.shape == (5, 16)
    assert torch.equal(deltas[:, :4], torch.zeros(5, 4))
    torch.testing.assert_close(deltas[:, 4:], detector.roi_heads.box_predictor.bbox_pred(features))
