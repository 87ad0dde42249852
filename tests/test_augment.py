"""The five cumulative augmentation levels of Table 1 build the transforms they name, in MoCo-v2's order."""

from __future__ import annotations

import pytest
from torchvision import transforms as T

from goodtransfer.io import InputError
from goodtransfer.pretrain.augment import RandomGaussianBlur, pretrain_transform

PARAMS = {
    "flip": {"p": 0.5},
    "crop": {"scale": [0.2, 1.0]},
    "color": {"strength": [0.4, 0.4, 0.4, 0.1], "p": 0.8},
    "gray": {"p": 0.2},
    "blur": {"sigma": [0.1, 2.0], "p": 0.5},
}


def _kinds(names):
    kinds = []
    for step in pretrain_transform(names, PARAMS, 32).transforms:
        inner = step.transforms[0] if isinstance(step, T.RandomApply) else step
        kinds.append(type(inner).__name__)
    return kinds


def test_flip_only_level_resizes_and_centre_crops():
    assert _kinds(["flip"])[:3] == ["Resize", "CenterCrop", "RandomHorizontalFlip"]


def test_full_level_is_moco_v2_aug_plus_in_order():
    assert _kinds(["flip", "crop", "color", "gray", "blur"])[:5] == [
        "RandomResizedCrop",
        "ColorJitter",
        "RandomGrayscale",
        "RandomGaussianBlur",
        "RandomHorizontalFlip",
    ]


def test_crop_scale_comes_from_the_run_parameters():
    params = dict(PARAMS, crop={"scale": [0.08, 1.0]})
    crop = pretrain_transform(["crop"], params, 32).transforms[0]
    assert crop.scale == (0.08, 1.0)


def test_blur_and_color_probabilities_are_the_configured_ones():
    steps = pretrain_transform(["color", "blur"], PARAMS, 32).transforms
    applied = [s for s in steps if isinstance(s, T.RandomApply)]
    assert [s.p for s in applied] == [0.8, 0.5]
    assert isinstance(applied[1].transforms[0], RandomGaussianBlur)


def test_unknown_transform_name_is_rejected():
    with pytest.raises(InputError, match="solarize"):
        pretrain_transform(["flip", "solarize"], PARAMS, 32)


def test_moco_v1_order_puts_grayscale_before_colour_jitter():
    order = ("crop", "gray", "color", "flip")
    steps = pretrain_transform(["flip", "crop", "color", "gray"], PARAMS, 32, order).transforms
    names = [type(s.transforms[0] if isinstance(s, T.RandomApply) else s).__name__ for s in steps]
    assert names[:4] == ["RandomResizedCrop", "RandomGrayscale", "ColorJitter", "RandomHorizontalFlip"]


def test_order_that_omits_a_requested_transform_is_rejected():
    with pytest.raises(InputError, match="blur"):
        pretrain_transform(["flip", "blur"], PARAMS, 32, ("crop", "flip"))
