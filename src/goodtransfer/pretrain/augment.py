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

from goodtransfer.data.transforms import normalize
from goodtransfer.io import InputError

TRANSFORM_NAMES = ("flip", "crop", "color", "gray", "blur")


class RandomGaussianBlur:
    """PIL Gaussian blur with sigma drawn uniformly from ``sigma`` (MoCo-v2's blur)."""

    def __init__(self, sigma: Sequence[float]) -> None:
        self.sigma = (float(sigma[0]), float(sigma[1]))

    def __call__(self, image: Image.Image) -> Image.Image:
        return image.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))


MOCO_V2_ORDER = ("crop", "color", "gray", "blur", "flip")


def _transform(name: str, params: Mapping[str, Any], input_size: int) -> Any:
    p = params[name]
    if name == "crop":
        return T.RandomResizedCrop(input_size, scale=tuple(p["scale"]))
    if name == "color":
        return T.RandomApply([T.ColorJitter(*p["strength"])], p=p["p"])
    if name == "gray":
        return T.RandomGrayscale(p=p["p"])
    if name == "blur":
        return T.RandomApply([RandomGaussianBlur(p["sigma"])], p=p["p"])
    return T.RandomHorizontalFlip(p=p["p"])


def pretrain_transform(
    names: Sequence[str], params: Mapping[str, Any], input_size: int, order: Sequence[str] = MOCO_V2_ORDER
) -> T.Compose:
    """Compose the named augmentations in ``order`` (MoCo-v2's by default; MoCo-v1 puts gray before color)."""
    unknown = sorted(set(names) - set(TRANSFORM_NAMES))
    if unknown:
        raise InputError(f"augment: unknown transform(s) {unknown}; expected names from {TRANSFORM_NAMES}")
    unordered = sorted(set(names) - set(order))
    if unordered:
        raise InputError(f"augment_order: {list(order)} does not place {unordered}")
    steps: list[Any] = []
    if "crop" not in names:
        steps += [T.Resize(round(input_size * 256 / 224)), T.CenterCrop(input_size)]
    steps += [_transform(name, params, input_size) for name in order if name in names]
    steps.append(normalize())
    return T.Compose(steps)


class TwoViews:
    """Two independent augmentations of one image: MoCo's query and key."""

    def __init__(self, transform: T.Compose) -> None:
        self.transform = transform

    def __call__(self, image: Image.Image) -> list[Any]:
        return [self.transform(image), self.transform(image)]
