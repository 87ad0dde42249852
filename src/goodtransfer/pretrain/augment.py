"""The pretraining augmentations of Table 1, composed cumulatively in MoCo-v2's order.

A run names the transforms it uses (``flip``, ``crop``, ``color``, ``gray``, ``blur``); their
parameters come from the run's ``augmentations`` block. Without ``crop`` the image is resized and
centre-cropped to the input size, the likely choice for the paper's flip-only row.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image, ImageFilter
from torchvision import transforms as T

from goodtransfer.io import InputError

TRANSFORM_NAMES = ("flip", "crop", "color", "gray", "blur")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class RandomGaussianBlur:
    """PIL Gaussian blur with sigma drawn uniformly from ``sigma`` (MoCo-v2's blur)."""

    def __init__(self, sigma: Sequence[float]) -> None:
        self.sigma = (float(sigma[0]), float(sigma[1]))

    def __call__(self, image: Image.Image) -> Image.Image:
        return image.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))


def normalize() -> T.Compose:
    return T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def eval_transform(input_size: int, resize_ratio: float = 256 / 224) -> T.Compose:
    """Resize + centre crop, the ImageNet evaluation transform (Resize(256), CenterCrop(224))."""
    return T.Compose([T.Resize(round(input_size * resize_ratio)), T.CenterCrop(input_size), normalize()])


def pretrain_transform(names: Sequence[str], params: Mapping[str, Any], input_size: int) -> T.Compose:
    """Compose the named augmentations in MoCo-v2's order: crop, color, gray, blur, flip."""
    unknown = sorted(set(names) - set(TRANSFORM_NAMES))
    if unknown:
        raise InputError(f"augment: unknown transform(s) {unknown}; expected names from {TRANSFORM_NAMES}")
    steps: list[Any] = []
    if "crop" in names:
        scale = tuple(params["crop"]["scale"])
        steps.append(T.RandomResizedCrop(input_size, scale=scale))
    else:
        steps += [T.Resize(round(input_size * 256 / 224)), T.CenterCrop(input_size)]
    if "color" in names:
        jitter = T.ColorJitter(*params["color"]["strength"])
        steps.append(T.RandomApply([jitter], p=params["color"]["p"]))
    if "gray" in names:
        steps.append(T.RandomGrayscale(p=params["gray"]["p"]))
    if "blur" in names:
        steps.append(T.RandomApply([RandomGaussianBlur(params["blur"]["sigma"])], p=params["blur"]["p"]))
    if "flip" in names:
        steps.append(T.RandomHorizontalFlip(p=params["flip"]["p"]))
    steps.append(normalize())
    return T.Compose(steps)


class TwoViews:
    """Two independent augmentations of one image: MoCo's query and key."""

    def __init__(self, transform: T.Compose) -> None:
        self.transform = transform

    def __call__(self, image: Image.Image) -> list[Any]:
        return [self.transform(image), self.transform(image)]
