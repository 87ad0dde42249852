"""The Cityscapes-layout stand-in: street-like scenes from the shared shape renderer.

Sky, buildings, vegetation, road, sidewalk and an ego-vehicle band are background regions, shape kinds
stand for cars, persons, signs..., and a few objects have ids that map to 255 (dynamic, caravan); written
as real PNGs under the real file names.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from goodtransfer.data.cityscapes import IMAGE_SUFFIX, LABEL_SUFFIX, TRAIN_CITIES, VAL_CITIES
from goodtransfer.data.synthetic.common import (
    MAX_IMAGE_SIDE,
    MIN_IMAGE_SIDE,
    Scene,
    background,
    random_placement,
)
from goodtransfer.io import InputError, building_directory

# Cityscapes' own palette for the background regions, so each region has a typical colour.
_STUFF_COLOURS = {
    1: (20, 20, 20), 7: (128, 64, 128), 8: (244, 35, 232), 11: (70, 70, 70), 21: (107, 142, 35),
    23: (70, 130, 180),
}  # fmt: skip
# Shape kind (index into synthetic.KINDS) -> the label id it stands for; 5 and 29 map to 255.
THING_KINDS: tuple[tuple[int, int], ...] = (
    (0, 26), (1, 24), (2, 20), (3, 19), (4, 33), (5, 17), (6, 27), (7, 28), (8, 29), (9, 5),
)  # fmt: skip
_STREAMS = {"train": 1, "val": 2}
_FRAME = 19  # real Cityscapes fine annotations are the 20th frame of each snippet


def _street_layout(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Label ids of the background: sky, a skyline of buildings and trees, road, sidewalks, ego vehicle."""
    ids = np.full((h, w), 23, dtype=np.uint8)
    horizon = int(h * rng.uniform(0.4, 0.55))
    x = 0
    while x < w:
        width = int(rng.integers(max(2, w // 10), max(3, w // 4) + 1))
        top = int(horizon * rng.uniform(0.05, 0.85))
        ids[top:horizon, x : x + width] = 11 if rng.random() < 0.65 else 21
        x += width
    rows, cols = np.mgrid[0:h, 0:w]
    depth = (rows - horizon) / max(h - horizon, 1)  # 0 at the horizon, 1 at the bottom row
    ids[horizon:] = 7
    left, right = rng.uniform(0.1, 0.35, size=2) * w
    ids[(rows >= horizon) & ((cols < left * depth) | (cols >= w - right * depth))] = 8
    ids[h - max(1, int(h * rng.uniform(0.05, 0.1))) :] = 1
    return ids


def _stuff_pixels(rng: np.random.Generator, ids: np.ndarray) -> np.ndarray:
    """Each region in its palette colour (jittered per image) mixed with a random texture."""
    h, w = ids.shape
    pixels = 0.4 * background(rng, h, w)
    for label_id, colour in _STUFF_COLOURS.items():
        jitter = np.clip(np.asarray(colour, dtype=np.float32) + rng.uniform(-25.0, 25.0, size=3), 0.0, 255.0)
        pixels[ids == label_id] += 0.6 * jitter.astype(np.float32)
    return pixels


def render_street(
    rng: np.random.Generator, h: int, w: int, max_objects: int
) -> tuple[np.ndarray, np.ndarray]:
    """An (h, w, 3) uint8 street-like image and its (h, w) uint8 Cityscapes label-id map."""
    ids = _street_layout(rng, h, w)
    scene = Scene(_stuff_pixels(rng, ids))
    label_of = dict(THING_KINDS)
    for _ in range(int(rng.integers(1, max_objects + 1))):
        kind = THING_KINDS[int(rng.integers(len(THING_KINDS)))][0]
        for _ in range(10):
            if scene.add(rng, random_placement(rng, kind, h, w, (0.08, 0.2), (0.1, 0.9)), max_cover=0.5):
                break
    for index, placement in enumerate(scene.placements):
        ids[scene.ids == index + 1] = label_of[placement.kind]
    return scene.to_uint8(), ids


def _check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise InputError(f"{name}: expected an integer >= {low}, got {value!r}")
    if high is not None and value > high:
        raise InputError(f"{name}: expected an integer <= {high}, got {value!r}")
    return int(value)


def _write_png(pixels: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="PNG")


def generate(
    root: str | os.PathLike[str],
    *,
    seed: int,
    train_images: int,
    val_images: int,
    image_size: Sequence[int] = (64, 128),
    cities: int = 2,
    max_objects: int = 5,
    variant: int = 0,
) -> None:
    """Write a Cityscapes-layout tree of ``image_size`` = (h, w) scenes, spread round-robin over the
    first ``cities`` real city names of each split; byte-identical for a seed.

    Scene n of a split is drawn from (seed, split, n) whatever ``cities`` and ``image_size`` are, so a
    second dataset under the same seed (the Synthia stand-in beside the Cityscapes one) needs another
    ``variant`` to get other scenes; 0 keeps the original draws."""
    seed = _check_int("seed", seed, 0)
    counts = {
        "train": _check_int("train_images", train_images, 1),
        "val": _check_int("val_images", val_images, 1),
    }
    if isinstance(image_size, str) or not isinstance(image_size, Sequence) or len(image_size) != 2:
        raise InputError(f"image_size: expected (height, width), got {image_size!r}")
    h, w = (
        _check_int(f"image_size[{i}]", s, MIN_IMAGE_SIDE, MAX_IMAGE_SIDE) for i, s in enumerate(image_size)
    )
    cities = _check_int("cities", cities, 1)
    max_objects = _check_int("max_objects", max_objects, 1, 20)
    stream = [seed] if _check_int("variant", variant, 0) == 0 else [seed, variant]
    with building_directory(root) as tmp:
        for split, names in (("train", TRAIN_CITIES), ("val", VAL_CITIES)):
            names = names[:cities]
            for number in range(counts[split]):
                city, seq = names[number % len(names)], number // len(names)
                stem = f"{city}_{seq:06d}_{_FRAME:06d}"
                pixels, ids = render_street(
                    np.random.default_rng([*stream, _STREAMS[split], number]), h, w, max_objects
                )
                _write_png(pixels, tmp / "leftImg8bit" / split / city / f"{stem}{IMAGE_SUFFIX}")
                _write_png(ids, tmp / "gtFine" / split / city / f"{stem}{LABEL_SUFFIX}")
