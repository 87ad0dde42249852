"""Cityscapes fine annotations: real on-disk layout, official id -> trainId table, a generated stand-in.

Images are ``leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png`` and labels the
matching ``gtFine/.../<city>_<seq>_<frame>_gtFine_labelIds.png`` (8-bit PNG of Cityscapes label ids).
Label ids become the 19 train ids through cityscapesScripts' ``labels.py`` table; every other id maps to
255 (ignored). mmsegmentation reads ``*_labelTrainIds.png`` made by cityscapesScripts from the polygons,
which skips license plates (id -1) exactly as ``*_labelIds.png`` does, so mapping labelIds in memory
gives the same train-id maps without a conversion step.

``generate`` writes street-like scenes from the shared shape renderer: sky, buildings, vegetation, road,
sidewalk and an ego-vehicle band as background regions, shape kinds standing for cars, persons, signs...,
and a few objects whose ids map to 255 (dynamic, caravan), as real PNGs under the real file names.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from goodtransfer.data.images import ImageCheck
from goodtransfer.data.synthetic import (
    MAX_IMAGE_SIDE,
    MIN_IMAGE_SIDE,
    Scene,
    background,
    building_directory,
    random_placement,
)
from goodtransfer.io import InputError

LAYOUT = (
    "<root>/leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png with "
    "<root>/gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png (Cityscapes fine)"
)
SPLITS = ("train", "val")
TRAIN_SPLIT = SPLITS[0]
IGNORE = 255
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"

# cityscapesScripts labels.py: (id, name, trainId); 255 = not one of the 19 evaluated classes.
LABELS: tuple[tuple[int, str, int], ...] = (
    (0, "unlabeled", 255), (1, "ego vehicle", 255), (2, "rectification border", 255),
    (3, "out of roi", 255), (4, "static", 255), (5, "dynamic", 255), (6, "ground", 255),
    (7, "road", 0), (8, "sidewalk", 1), (9, "parking", 255), (10, "rail track", 255),
    (11, "building", 2), (12, "wall", 3), (13, "fence", 4), (14, "guard rail", 255),
    (15, "bridge", 255), (16, "tunnel", 255), (17, "pole", 5), (18, "polegroup", 255),
    (19, "traffic light", 6), (20, "traffic sign", 7), (21, "vegetation", 8), (22, "terrain", 9),
    (23, "sky", 10), (24, "person", 11), (25, "rider", 12), (26, "car", 13), (27, "truck", 14),
    (28, "bus", 15), (29, "caravan", 255), (30, "trailer", 255), (31, "train", 16),
    (32, "motorcycle", 17), (33, "bicycle", 18), (-1, "license plate", 255),
)  # fmt: skip
ID_TO_TRAIN_ID: dict[int, int] = {label_id: train_id for label_id, _, train_id in LABELS}

# Lookup over uint8 values; a license plate (-1) stored in a uint8 PNG reads back as 255.
_LUT = np.full(256, IGNORE, dtype=np.uint8)
_KNOWN = np.zeros(256, dtype=bool)
for _id, _, _train in LABELS:
    _LUT[_id % 256], _KNOWN[_id % 256] = _train, True

TRAIN_CITIES = (
    "aachen", "bochum", "bremen", "cologne", "darmstadt", "dusseldorf", "erfurt", "hamburg", "hanover",
    "jena", "krefeld", "monchengladbach", "strasbourg", "stuttgart", "tubingen", "ulm", "weimar", "zurich",
)  # fmt: skip
VAL_CITIES = ("frankfurt", "lindau", "munster")


def to_train_ids(label_ids: np.ndarray, source: str = "label ids") -> np.ndarray:
    """Cityscapes label ids (-1..33) -> train ids 0..18, everything else 255; unknown ids raise."""
    ids = np.asarray(label_ids).astype(np.int64)
    known = (ids >= -1) & (ids <= 255)
    known[known] = _KNOWN[ids[known] % 256]
    if not known.all():
        raise InputError(
            f"{source}: value {int(ids[~known][0])} is not a Cityscapes label id; expected -1..33"
        )
    return _LUT[ids % 256]


def read_train_ids(path: str | os.PathLike[str]) -> np.ndarray:
    """A ``*_gtFine_labelIds.png`` file as an (H, W) uint8 map of train ids (255 = ignore)."""
    try:
        with Image.open(path) as image:
            ids = np.asarray(image)
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable PNG label map ({err}); expected {LAYOUT}") from None
    if ids.ndim != 2:
        raise InputError(f"{path}: label map has shape {ids.shape}; expected a single-channel label-id PNG")
    return to_train_ids(ids, str(path))


def label_path(root: Path, image_path: Path) -> Path:
    """The gtFine labelIds file that belongs to a leftImg8bit image."""
    stem = image_path.name[: -len(IMAGE_SUFFIX)]
    split, city = image_path.parent.parent.name, image_path.parent.name
    return root / "gtFine" / split / city / f"{stem}{LABEL_SUFFIX}"


def image_paths(root: str | Path, split: str = TRAIN_SPLIT) -> list[Path]:
    """The split's ``leftImg8bit`` images of every city, sorted by path; label files are not needed."""
    folder = Path(root) / "leftImg8bit" / split
    if not folder.is_dir():
        raise InputError(f"{folder}: split folder not found; expected {LAYOUT}")
    images = sorted(folder.glob(f"*/*{IMAGE_SUFFIX}"))
    if not images:
        raise InputError(f"{folder}: no *{IMAGE_SUFFIX} images in city folders; expected {LAYOUT}")
    return images


def load_split(root: str | Path, split: str) -> list[tuple[Path, Path]]:
    """(image, label) path pairs of one split, sorted by file name; a missing label file raises."""
    root = Path(root)
    pairs = []
    for image in image_paths(root, split):
        label = label_path(root, image)
        if not label.is_file():
            raise InputError(f"{label}: label file not found for {image.name}; expected {LAYOUT}")
        pairs.append((image, label))
    return pairs


def check(root: Path, images: ImageCheck | None = None) -> dict[str, Any]:
    """Verify both splits in place (every image and label readable, of the same size); counts per split."""
    root = Path(root)
    images = images or ImageCheck()
    if not root.is_dir():
        raise InputError(f"{root}: dataset folder not found; expected {LAYOUT}")
    summary: dict[str, Any] = {}
    for split in SPLITS:
        pairs = load_split(root, split)
        # The loaders ignore EXIF orientation here (PNG label maps have none), so the check does too.
        sizes = images.split([image for image, _ in pairs], exif_transpose=False)
        images.split(
            [label for _, label in pairs], sizes, [f"the image {image}" for image, _ in pairs],
            exif_transpose=False,
        )  # fmt: skip
        summary[split] = {"images": len(pairs), "cities": len({image.parent.name for image, _ in pairs})}
    return summary


# --------------------------------------------------------------------------------------------------------
# Generated stand-in
# --------------------------------------------------------------------------------------------------------

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
