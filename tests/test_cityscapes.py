"""Cityscapes layout, id -> trainId mapping, generated stand-in, DeepLab-v3 model and protocol run."""

from __future__ import annotations

import contextlib
import io
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models.resnet import Bottleneck, ResNet

from goodtransfer.checkpoint import save_backbone
from goodtransfer.data.cityscapes import check, load_split, read_train_ids, to_train_ids
from goodtransfer.data.synthetic.cityscapes import generate
from goodtransfer.io import InputError
from goodtransfer.models.backbone import backbone_state_dict, build_resnet
from goodtransfer.transfer.deeplab import (
    CityscapesData,
    DeepLabV3,
    crop_origin,
    dilate_resnet,
    poly_lr,
    rescale_size,
)
from goodtransfer.transfer.tasks import DownstreamJob, run
from tests.workflow import run_protocol

TINY_SPEC = {
    "task": "segmentation", "dataset": "cityscapes", "data_kind": "cityscapes", "protocol": "cityscapes",
    "max_iter": 8, "ims_per_batch": 2, "base_lr": 0.01, "min_lr": 1e-4, "power": 0.9, "momentum": 0.9,
    "weight_decay": 5e-4, "crop_size": [64, 64], "scale": [128, 64], "ratio_range": [0.5, 2.0],
    "cat_max_ratio": 0.75, "aspp_dilations": [12, 24, 36], "head_channels": 64, "aux_channels": 32,
    "aux_weight": 0.4, "dropout": 0.1, "checkpoint_period": 4, "log_period": 2, "workers": 0, "seed": 0,
    "run": "tiny", "device": "cpu", "precision": "fp32", "channels_last": False,
}  # fmt: skip
IMAGE_NAME = re.compile(r"^[a-z]+_\d{6}_\d{6}_leftImg8bit\.png$")


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    root = tmp_path_factory.mktemp("cityscapes") / "data"
    generate(root, seed=3, train_images=6, val_images=3, image_size=(64, 128))
    return root


@pytest.fixture(scope="module")
def finished_run(stand_in, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    checkpoint = out / "checkpoint.pt"
    meta = {"arch": "resnet10", "method": "random", "run": "t"}
    save_backbone(checkpoint, backbone_state_dict(build_resnet("resnet10")), meta)
    log = io.StringIO()
    with contextlib.redirect_stderr(log), pytest.MonkeyPatch.context() as patch:
        patch.setenv("GOODTRANSFER_KEEP_STATE", "1")  # as a run killed after its last checkpoint leaves it
        run_protocol(TINY_SPEC, checkpoint, stand_in, out)
    return out, checkpoint, json.loads((out / "metrics.json").read_text()), log.getvalue()


def _losses(log: str) -> dict[str, str]:
    """Iteration -> loss from the progress lines (``[cityscapes tiny] 6/8 loss 2.317 lr ...``)."""
    return dict(re.findall(r"\[cityscapes \S+\] (\d+)/\d+ loss (\S+)", log))


def test_label_ids_map_to_the_19_train_ids_and_the_rest_to_255():
    ids = np.array([[7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]])
    assert to_train_ids(ids).tolist() == [list(range(19))]
    ignored = np.array([0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30, -1, 255])
    assert (to_train_ids(ignored) == 255).all()
    assert to_train_ids(np.array([26, 0, 24], dtype=np.uint8)).dtype == np.uint8


def test_unknown_label_id_is_rejected_naming_the_file(tmp_path):
    path = tmp_path / "x_gtFine_labelIds.png"
    Image.fromarray(np.array([[7, 40]], dtype=np.uint8)).save(path)
    with pytest.raises(InputError, match=r"x_gtFine_labelIds\.png: value 40 is not a Cityscapes label id"):
        read_train_ids(path)


def test_generator_writes_real_file_names_byte_identically_for_a_seed(stand_in, tmp_path):
    again = tmp_path / "again"
    generate(again, seed=3, train_images=6, val_images=3, image_size=(64, 128))
    files = sorted(p.relative_to(stand_in) for p in stand_in.rglob("*.png"))
    assert files == sorted(p.relative_to(again) for p in again.rglob("*.png"))
    assert all((stand_in / f).read_bytes() == (again / f).read_bytes() for f in files)
    assert check(stand_in) == {"train": {"images": 6, "cities": 2}, "val": {"images": 3, "cities": 2}}
    image, label = load_split(stand_in, "val")[0]
    assert IMAGE_NAME.match(image.name) and image.parts[-4:-1] == ("leftImg8bit", "val", "frankfurt")
    assert label.name == image.name.replace("_leftImg8bit.png", "_gtFine_labelIds.png")
    assert label.parts[-4:-1] == ("gtFine", "val", "frankfurt")
    with Image.open(image) as rgb, Image.open(label) as ids:
        assert (rgb.mode, rgb.size, ids.mode, ids.size) == ("RGB", (128, 64), "L", (128, 64))
    raw = np.concatenate([np.asarray(Image.open(lab)).ravel() for _, lab in load_split(stand_in, "train")])
    assert {1, 7, 11, 23}.issubset(set(raw.tolist()))  # ego vehicle, road, building, sky
    assert (to_train_ids(raw) == 255).any() and len(np.unique(to_train_ids(raw))) > 5
    different = tmp_path / "other"
    generate(different, seed=4, train_images=6, val_images=3, image_size=(64, 128))
    assert (stand_in / files[0]).read_bytes() != (different / files[0]).read_bytes()


def test_check_names_a_removed_gtfine_file(stand_in, tmp_path):
    root = tmp_path / "broken"
    generate(root, seed=3, train_images=6, val_images=3, image_size=(64, 128))
    _, removed = load_split(root, "train")[2]
    removed.unlink()
    with pytest.raises(InputError, match=re.escape(str(removed)) + ": label file not found"):
        check(root)


@pytest.mark.parametrize("arch", ["resnet10", "resnet50"])
def test_dilation_keeps_every_weight_and_gives_output_stride_8(arch):
    resnet = build_resnet(arch)
    before = {k: v.clone() for k, v in resnet.state_dict().items()}
    dilate_resnet(resnet)
    after = resnet.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)
    model = DeepLabV3(resnet, 19, TINY_SPEC).eval()
    with torch.no_grad():
        c3, c4 = model.features(torch.zeros(1, 3, 64, 128))
        logits = model.predict(torch.zeros(1, 3, 64, 128))
    assert c3.shape[-2:] == c4.shape[-2:] == (8, 16)
    assert logits.shape == (1, 19, 64, 128)
    if arch == "resnet50":  # torchvision's own dilation (Bottleneck only) gives the same conv geometry
        reference = ResNet(Bottleneck, [3, 4, 6, 3], replace_stride_with_dilation=[False, True, True])
        ours = dict(model.backbone.named_modules())
        convs = [(n, m) for n, m in reference.named_modules() if isinstance(m, torch.nn.Conv2d)]
        assert len(convs) == 53 and all(
            (ours[n].stride, ours[n].dilation, ours[n].padding) == (m.stride, m.dilation, m.padding)
            for n, m in convs
        )
        assert ours["layer4.2.conv2"].dilation == (4, 4) and ours["layer4.0.conv2"].dilation == (2, 2)


def test_poly_lr_matches_hand_computed_values():
    assert poly_lr(0.01, 0, 40000, 0.9, 1e-4) == pytest.approx(0.01)
    # (0.01 - 1e-4) * 0.5 ** 0.9 + 1e-4, with 0.5 ** 0.9 = 0.535886731...
    assert poly_lr(0.01, 20000, 40000, 0.9, 1e-4) == pytest.approx(0.00540527864, rel=1e-9)
    # (1 - 39999 / 40000) ** 0.9 = 2.5e-5 ** 0.9 = 7.2135e-5 -> 0.0099 * 7.2135e-5 + 1e-4: near min_lr
    assert poly_lr(0.01, 39999, 40000, 0.9, 1e-4) == pytest.approx(1.0071414e-4, rel=1e-6)


def test_crop_is_redrawn_while_one_class_covers_too_much():
    label = np.zeros((20, 100), dtype=np.uint8)
    label[:, 70:] = 1
    label[:, :10] = 255  # ignored pixels never count towards a class's share

    def balanced(ratio: float, seed: int) -> bool:
        y, x = crop_origin(label, (20, 20), ratio, np.random.default_rng(seed))
        counts = np.bincount(label[y : y + 20, x : x + 20].ravel(), minlength=256)[:255]
        return (counts > 0).sum() > 1 and counts.max() / counts.sum() < 0.75

    assert sum(balanced(1.0, s) for s in range(200)) < 40  # plain random crops: ~11% balanced
    assert sum(balanced(0.75, s) for s in range(200)) > 120  # with 10 retries: ~72%


def test_train_sample_is_a_function_of_its_key_and_padded_to_the_crop(stand_in):
    spec = {**TINY_SPEC, "ratio_range": [0.5, 0.5], "crop_size": [48, 96]}  # image 32x64 < crop
    data = CityscapesData(load_split(stand_in, "train"), spec)
    image, target = data[(1, (0, 5, 1))]
    again, target_again = data[(1, (0, 5, 1))]
    assert torch.equal(image, again) and torch.equal(target, target_again)
    assert image.shape == (3, 48, 96) and target.shape == (48, 96)
    assert (target[32:] == 255).all() and (target[:, 64:] == 255).all() and (image[:, 32:] == 0).all()
    assert (target[:32, :64] != 255).any()
    assert not torch.equal(image, data[(1, (0, 6, 1))][0])


def test_test_images_are_rescaled_into_the_scale_keeping_the_aspect():
    assert rescale_size(2048, 1024, (2048, 1024)) == (2048, 1024)
    assert rescale_size(128, 64, (64, 32)) == (64, 32)
    assert rescale_size(100, 100, (2048, 1024)) == (1024, 1024)


def test_run_writes_metrics_in_range(finished_run):
    out, checkpoint, metrics, _ = finished_run
    for key in ("mIoU", "mAcc", "aAcc"):
        assert 0.0 <= metrics[key] <= 100.0
    assert metrics["aAcc"] > 0.0  # some labelled pixel is right after 8 iterations
    assert set(metrics["per_class_IoU"]) >= {"road", "car", "sky"} and len(metrics["per_class_IoU"]) == 19
    assert metrics["run"] == "tiny" and metrics["checkpoint"] == str(checkpoint)
    assert (metrics["iterations"], metrics["resumed_from"]) == (8, 0)
    assert (metrics["train_images"], metrics["val_images"]) == (6, 3)


def test_rerun_resumes_from_the_mid_run_checkpoint_with_the_same_result(finished_run, stand_in):
    out, checkpoint, first, first_log = finished_run
    log = io.StringIO()
    with contextlib.redirect_stderr(log):
        run(DownstreamJob(TINY_SPEC, checkpoint, stand_in, out / "metrics-resumed.json", out / "state"))
    resumed = json.loads((out / "metrics-resumed.json").read_text())
    assert resumed["resumed_from"] == 4 and "resuming tiny from iteration 4" in log.getvalue()
    # the same batches, augmentations and dropout masks: iterations 5..8 repeat the same losses
    assert set(_losses(log.getvalue())) == {"6", "8"}
    assert _losses(log.getvalue()) == {k: v for k, v in _losses(first_log).items() if int(k) > 4}
    for key in ("mIoU", "mAcc", "aAcc", "per_class_IoU"):
        assert resumed[key] == pytest.approx(first[key], nan_ok=True)


def test_missing_spec_key_is_named(stand_in, tmp_path):
    spec = {k: v for k, v in TINY_SPEC.items() if k != "cat_max_ratio"}
    with pytest.raises(InputError, match="downstream.cityscapes: 'cat_max_ratio' is a required property"):
        run_protocol(spec, tmp_path / "none.pt", stand_in, tmp_path)
