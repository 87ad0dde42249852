"""Supervised pretraining by a downstream task (Table 2's COCO and Synthia rows): the trained detector's
or segmenter's ResNet, extracted key by key, becomes a pretraining checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from goodtransfer.checkpoint import load_backbone, load_into
from goodtransfer.checkpoint_import import resnet_from_checkpoint
from goodtransfer.data.synthetic import cityscapes, coco
from goodtransfer.io import InputError
from goodtransfer.models.backbone import build_resnet
from goodtransfer.pretrain.task_supervised import initial_checkpoint
from goodtransfer.pretrain.train import pretrain
from goodtransfer.transfer import coco_instance, deeplab, detection_training
from goodtransfer.transfer.c4 import backbone_keys_loaded

ARCH = "resnet10"
COCO_SETTINGS = {
    "train_splits": ["train2017"], "test_split": "val2017", "max_iter": 4, "ims_per_batch": 2,
    "base_lr": 0.02, "momentum": 0.9, "weight_decay": 1.0e-4, "weight_decay_norm": 0.0, "steps": [3],
    "warmup_iters": 1, "warmup_factor": 0.1, "min_size_train": [80], "min_size_test": 80,
    "max_size": 128, "anchor_sizes": [16, 32, 64], "aspect_ratios": [0.5, 1.0, 2.0],
    "aspect_ratio_grouping": True, "resize_rounding": "nearest", "size_divisibility": 0,
    "rpn": {"pre_nms_topk_train": 200, "post_nms_topk_train": 50, "pre_nms_topk_test": 100,
            "post_nms_topk_test": 30, "nms_thresh": 0.7, "batch_size_per_image": 64, "positive_fraction": 0.5,
            "iou_thresholds": [0.3, 0.7], "bbox_reg_weights": [1.0, 1.0, 1.0, 1.0], "smooth_l1_beta": 0.0,
            "loss_normalizer": "batch_size_per_image"},
    "roi_heads": {"pooler_resolution": 6, "batch_size_per_image": 16, "positive_fraction": 0.25,
                  "iou_thresholds": [0.5], "bbox_reg_weights": [10.0, 10.0, 5.0, 5.0], "smooth_l1_beta": 0.0,
                  "score_thresh_test": 0.0, "nms_thresh_test": 0.5, "detections_per_image": 20},
    "mask_resolution": 6, "mask_conv_dim": 16, "precise_bn_iters": 1, "test_batch": 2,
    "checkpoint_period": 2, "log_period": 2, "workers": 0,
}  # fmt: skip
SEGMENTATION_SETTINGS = {
    "max_iter": 4, "ims_per_batch": 2, "base_lr": 0.01, "min_lr": 1e-4, "power": 0.9, "momentum": 0.9,
    "weight_decay": 5e-4, "crop_size": [64, 64], "scale": [128, 64], "ratio_range": [0.5, 2.0],
    "cat_max_ratio": 0.75, "aspp_dilations": [12, 24, 36], "head_channels": 32, "aux_channels": 16,
    "aux_weight": 0.4, "dropout": 0.1, "checkpoint_period": 2, "log_period": 2, "workers": 0,
}  # fmt: skip
COMPUTE = {"device": "cpu", "precision": "fp32", "channels_last": False}
STAGES = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")


def _spec(run: str, task: str, settings: dict, data_kind: str) -> dict:
    return {"method": "task", "task": task, "task_settings": settings, "arch": ARCH, "seed": 0, "run": run,
            "dataset": data_kind, "data_kind": data_kind, **COMPUTE}  # fmt: skip


def _resnet_keys() -> set[str]:
    return {k for k in build_resnet(ARCH).state_dict() if not k.startswith("fc.")}


def _scramble(model: torch.nn.Module) -> None:
    """Every weight and BN buffer set to values no initialisation would give."""
    torch.manual_seed(1)
    with torch.no_grad():
        for value in model.state_dict().values():
            value.copy_(torch.randint_like(value, 1, 1000) if value.is_floating_point() else value + 7)


@pytest.fixture(scope="module")
def one_thread():
    # The pipeline runs one thread per job; two threads on a shared 2-core machine are several times slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_c4_extractor_inverts_backbone_keys_loaded_taking_res5_from_the_roi_head(one_thread):
    model = coco_instance.build_c4_mask_rcnn(build_resnet(ARCH), 3, COCO_SETTINGS)
    _scramble(model)
    weights = coco_instance.resnet_state_dict(model)
    assert set(weights) == _resnet_keys()
    inside = model.state_dict()
    for key, where in backbone_keys_loaded(model).items():
        assert torch.equal(weights[key], inside[where]), key
    res5 = model.roi_heads.box_head.res5[0]
    assert torch.equal(weights["layer4.0.conv1.weight"], res5.conv1.weight)
    assert torch.equal(weights["layer4.0.bn1.running_var"], res5.bn1.running_var)
    res5.bn1.running_var.add_(1)  # a copy, not a view of the detector
    assert not torch.equal(weights["layer4.0.bn1.running_var"], res5.bn1.running_var)
    load_into(build_resnet(ARCH), weights, "c4")  # every key, every shape


def test_deeplab_extractor_gives_the_dilated_backbone_under_resnet_keys(one_thread):
    model = deeplab.DeepLabV3(build_resnet(ARCH), 19, {**SEGMENTATION_SETTINGS, "dropout": 0.0})
    _scramble(model)
    weights = deeplab.resnet_state_dict(model)
    assert set(weights) == _resnet_keys()
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(weights[key], value), key
    model.backbone.layer4[0].bn2.running_mean.add_(1)
    assert not torch.equal(weights["layer4.0.bn2.running_mean"], model.backbone.layer4[0].bn2.running_mean)
    load_into(build_resnet(ARCH), weights, "deeplab")


def _check_trained(spec, out, state, log_json, method: str) -> dict:
    resnet, meta = resnet_from_checkpoint(out)  # loads as any pretraining checkpoint does
    assert meta["method"] == method and meta["arch"] == ARCH and meta["run"] == "tiny"
    trained, _ = load_backbone(out)
    start, start_meta = load_backbone(initial_checkpoint(spec, out.parent / "start"))
    assert start_meta["method"] == "random" and set(trained) == set(start) == _resnet_keys()
    for stage in STAGES:  # every stage trained, res5 of the C4 head included
        keys = [k for k in trained if k.startswith(stage) and trained[k].is_floating_point()]
        assert any(not torch.equal(trained[k], start[k]) for k in keys), stage
    log = json.loads(log_json.read_text())
    assert log["run"] == "tiny" and log["history"] == [] and log["task_metrics"]["run"] == "tiny"
    assert log["spec"] == spec
    assert not state.exists(), "the resumable state outlived the finished run"
    assert any((out.parent / "tensorboard").iterdir()), "the task's TensorBoard scalars were not kept"
    return log["task_metrics"]


def test_coco_task_run_trains_a_detector_saves_its_backbone_and_resumes(
    tmp_path, one_thread, capsys, monkeypatch
):
    root = tmp_path / "coco"
    coco.generate(root, seed=0, train_images=6, val_images=3, image_size=(80, 112), max_objects=2,
                  categories=3)  # fmt: skip
    out, state, log_json = tmp_path / "run/checkpoint.pt", tmp_path / "run/state", tmp_path / "run/log.json"
    spec = _spec("tiny", "coco_instance", COCO_SETTINGS, "coco")
    pretrain(spec, root, out, state, log_json)
    metrics = _check_trained(spec, out, state, log_json, "supervised-detection")
    assert metrics["iterations"] == 4 and "bbox_AP" in metrics and metrics["resumed_from"] == 0
    # Killed after the mid-run checkpoint (iteration 2): the rerun resumes the task and ends where it did.
    again, state = tmp_path / "again.pt", tmp_path / "again-state"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed after training")

    with monkeypatch.context() as patch:
        patch.setattr(detection_training, "_precise_bn_batches", killed)
        with pytest.raises(KeyboardInterrupt):
            pretrain(spec, root, again, state, tmp_path / "again.json")
    assert not again.exists()
    capsys.readouterr()
    pretrain(spec, root, again, state, tmp_path / "again.json")
    assert "resuming tiny from iteration 2" in capsys.readouterr().err
    first, second = load_backbone(out)[0], load_backbone(again)[0]
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_segmentation_task_run_trains_deeplab_and_saves_its_backbone(tmp_path, one_thread):
    root = tmp_path / "cityscapes"
    cityscapes.generate(root, seed=3, train_images=4, val_images=1, image_size=(64, 128))
    out, state, log_json = tmp_path / "run/checkpoint.pt", tmp_path / "run/state", tmp_path / "run/log.json"
    spec = _spec("tiny", "segmentation", SEGMENTATION_SETTINGS, "cityscapes")
    pretrain(spec, root, out, state, log_json)
    metrics = _check_trained(spec, out, state, log_json, "supervised-segmentation")
    assert metrics["iterations"] == 4 and 0 <= metrics["mIoU"] <= 100


def test_initial_checkpoint_is_reused_until_arch_seed_or_init_from_change(tmp_path):
    spec = _spec("t", "segmentation", SEGMENTATION_SETTINGS, "cityscapes")
    path = initial_checkpoint(spec, tmp_path)
    first = path.stat().st_mtime_ns
    assert initial_checkpoint(spec, tmp_path) == path and path.stat().st_mtime_ns == first
    weights, _ = load_backbone(path)
    other, _ = load_backbone(initial_checkpoint({**spec, "seed": 1}, tmp_path))
    assert not torch.equal(weights["conv1.weight"], other["conv1.weight"])
    source = tmp_path / "source.pt"
    source.write_bytes((tmp_path / "init.pt").read_bytes())
    imported, meta = load_backbone(initial_checkpoint({**spec, "init_from": str(source)}, tmp_path))
    assert meta["method"] == "imported" and torch.equal(imported["conv1.weight"], other["conv1.weight"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"task": "fewshot", "data_kind": "miniimagenet"}, r"task 'fewshot' cannot save a backbone.*coco"),
        (
            {"data_kind": "imagefolder"},
            r"kind 'imagefolder'; task 'segmentation' expects a 'cityscapes' dataset",
        ),
        ({"task": "nope"}, r"downstream task 'nope' is unknown"),
        ({"task_settings": None}, r"pretrain\.runs\.t: method task needs keys task .* and task_settings"),
    ],
)
def test_unusable_task_is_rejected_before_training(tmp_path, change, message):
    spec = {**_spec("t", "segmentation", SEGMENTATION_SETTINGS, "cityscapes"), **change}
    with pytest.raises(InputError, match=message):
        pretrain(spec, tmp_path, tmp_path / "out.pt", tmp_path / "state", tmp_path / "log.json")
    assert not (tmp_path / "state").exists()
