"""The Mini-ImageNet stand-in, in Ravi & Larochelle's layout, from the shared shape renderer.

Class ``c`` (numbered over train, val, test in that order) is drawn as shape kind ``c % 24``. With more
classes than the 24 kinds, each class also gets a colour band: the hue circle is cut into
``ceil(classes / 24)`` bands and class ``c``'s dominant object is tinted with a hue from band ``c // 24``,
so two classes sharing a shape differ in object colour (and no class's colours overlap another's).
"""

from __future__ import annotations

import colorsys
import math
from pathlib import Path

import numpy as np
from PIL import Image

from goodtransfer.data.miniimagenet import PAPER_CLASSES_PER_SPLIT, SPLITS, image_filename
from goodtransfer.data.synthetic.common import (
    JPEG_QUALITY,
    MAX_IMAGE_SIDE,
    MIN_IMAGE_SIDE,
    Placement,
    Scene,
    background,
    random_placement,
)
from goodtransfer.data.synthetic.imagenet import imagenet_wnid
from goodtransfer.data.synthetic.kinds import KINDS
from goodtransfer.io import InputError, building_directory

_STREAM_IMAGES = 21  # fixed tag: an image's random stream never depends on how many other images exist


def _tint(scene: Scene, object_id: int, band: int, bands: int, rng: np.random.Generator) -> None:
    """Recolour one object with a hue from its band, keeping its pattern and shading as luminance."""
    mask = scene.ids == object_id
    luminance = scene.pixels[mask] @ np.array([0.299, 0.587, 0.114], dtype=np.float32) / 255.0
    # Hues stay off the band edges so that neighbouring bands never look alike.
    hue = rng.uniform((band + 0.15) / bands, (band + 0.85) / bands)
    rgb = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.6, 1.0), 1.0), dtype=np.float32)
    scene.pixels[mask] = (0.25 + 0.75 * luminance)[:, None] * rgb * 255.0


def render_class_image(rng: np.random.Generator, kind: int, band: int, bands: int, size: int) -> np.ndarray:
    """One dominant object of ``kind`` (tinted into colour ``band`` when ``bands`` > 1), maybe distractors."""
    scene = Scene(background(rng, size, size))
    others = [k for k in range(len(KINDS)) if k != kind]
    if rng.random() < 0.4:
        for _ in range(int(rng.integers(1, 3))):
            scene.add(
                rng, random_placement(rng, others[int(rng.integers(len(others)))], size, size, (0.06, 0.12))
            )
    # The dominant object goes last (on top) and must always be painted: retry, then fall back to centre.
    for _ in range(20):
        if scene.add(rng, random_placement(rng, kind, size, size, (0.24, 0.4), (0.38, 0.62))):
            break
    else:
        scene.add(rng, Placement(kind, size / 2.0, size / 2.0, 0.3 * size, 1.0, 0.0), min_pixels=1)
    if bands > 1:
        _tint(scene, len(scene.placements), band, bands, rng)
    return scene.to_uint8()


def _int_at_least(name: str, value: object, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{name}: expected an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        raise InputError(
            f"{name}: expected an integer >= {low}{f' and <= {high}' if high else ''}, got {value}"
        )
    return int(value)


def generate(
    root: str | Path,
    *,
    seed: int,
    classes_per_split: tuple[int, int, int] = PAPER_CLASSES_PER_SPLIT,
    images_per_class: int = 600,
    image_size: int = 84,
) -> None:
    """Write ``images/`` and ``{train,val,test}.csv`` for a generated stand-in; byte-identical for a seed."""
    if len(classes_per_split) != len(SPLITS):
        raise InputError(f"classes_per_split: got {classes_per_split!r}; expected (train, val, test) counts")
    counts = [_int_at_least(f"classes_per_split[{i}]", n, 1) for i, n in enumerate(classes_per_split)]
    per_class = _int_at_least("images_per_class", images_per_class, 2)
    size = _int_at_least("image_size", image_size, MIN_IMAGE_SIDE, MAX_IMAGE_SIDE)
    seed = _int_at_least("seed", seed, 0)
    bands = math.ceil(sum(counts) / len(KINDS))
    with building_directory(root) as tmp:
        (tmp / "images").mkdir()
        first = 0
        for split, count in zip(SPLITS, counts, strict=True):
            lines = ["filename,label\n"]
            for cls in range(first, first + count):
                wnid = imagenet_wnid(cls)
                for n in range(per_class):
                    rng = np.random.default_rng([seed, _STREAM_IMAGES, cls, n])
                    pixels = render_class_image(rng, cls % len(KINDS), cls // len(KINDS), bands, size)
                    name = image_filename(wnid, n + 1)
                    Image.fromarray(pixels).save(tmp / "images" / name, format="JPEG", quality=JPEG_QUALITY)
                    lines.append(f"{name},{wnid}\n")
            (tmp / f"{split}.csv").write_text("".join(lines), encoding="utf-8")
            first += count
