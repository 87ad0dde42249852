"""The COCO 2017 instances stand-in: scenes from the shared renderer (category i drawn as kind i).

Each object's polygons are traced along the pixel edges of its visible mask (``data.coco.mask_to_polygons``),
so pycocotools rasterises them back to that mask exactly. Holes (rings, frames, occluders) are joined to
their outline by a segment drawn twice, which the even-odd fill of pycocotools cancels. Crowd regions are
written as uncompressed RLE, as COCO does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from goodtransfer.data.coco import COCO_CATEGORIES, SUPERCATEGORIES, mask_to_polygons
from goodtransfer.data.synthetic.common import Scene, background, random_placement
from goodtransfer.data.synthetic.kinds import KINDS
from goodtransfer.io import InputError, building_directory, write_json

_STREAM_IDS, _STREAM_IMAGE = 11, 12
MIN_VISIBLE_PIXELS = 6
CROWD_EVERY, EMPTY_EVERY = 5, 7  # image positions p % 5 == 1 get a crowd region, p % 7 == 3 (p >= K) nothing


def _int(name: str, value: Any, low: int, high: int | None = None) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | np.integer)
        or value < low
        or (high is not None and value > high)
    ):
        raise InputError(
            f"{name}: got {value!r}; expected an integer >= {low}" + (f", <= {high}" if high else "")
        )
    return int(value)


def _side_range(image_size: int | Sequence[int]) -> tuple[int, int]:
    sides = [image_size] if isinstance(image_size, int) else list(image_size)
    if len(sides) not in (1, 2):
        raise InputError(f"image_size: got {image_size!r}; expected a side or a (min, max) pair")
    low, high = (_int("image_size", s, 32, 4096) for s in (sides[0], sides[-1]))
    if low > high:
        raise InputError(f"image_size: got {image_size!r}; expected min <= max")
    return low, high


def _add(scene: Scene, rng: np.random.Generator, kind: int, radii: tuple[float, float], **where: Any) -> int:
    """Index of the painted object, or -1 if ten placements all failed."""
    h, w = scene.shape
    for _ in range(10):
        if scene.add(rng, random_placement(rng, kind, h, w, radii, **where), max_cover=0.45):
            return len(scene.rasters) - 1
    return -1


def _render(
    rng: np.random.Generator, h: int, w: int, num_categories: int, max_objects: int, position: int
) -> tuple[Scene, list[tuple[int, list[int], bool]]]:
    """A scene and its annotation groups (category, object indices, iscrowd)."""
    scene = Scene(background(rng, h, w))
    groups: list[tuple[int, list[int], bool]] = []
    if position >= num_categories and position % EMPTY_EVERY == 3:
        return scene, groups  # COCO has images without annotations; training drops them
    # The first K images of a split each start with a different category, so every split has all.
    first = position if position < num_categories else int(rng.integers(num_categories))
    for k in range(int(rng.integers(1, max_objects + 1))):
        category = first if k == 0 else int(rng.integers(num_categories))
        radii = (0.15, 0.3) if k == 0 else (0.08, 0.25)
        if (index := _add(scene, rng, category, radii)) >= 0:
            groups.append((category, [index], False))
    if position % CROWD_EVERY == 1:
        category, centre = int(rng.integers(num_categories)), float(rng.uniform(0.35, 0.65))
        members = [_add(scene, rng, category, (0.05, 0.09), centre_range=(centre - 0.15, centre + 0.15))]
        members += [_add(scene, rng, category, (0.05, 0.09), centre_range=(centre - 0.15, centre + 0.15))]
        groups.append((category, [m for m in members if m >= 0], True))
    return scene, groups


def _uncompressed_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO's crowd format: column-major run lengths starting with a run of zeros."""
    flat = mask.ravel(order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return {"counts": np.diff(np.concatenate([[0], changes])).tolist(), "size": list(mask.shape)}


def _annotations(scene: Scene, groups: list[tuple[int, list[int], bool]], ids: list[int]) -> list[dict]:
    out = []
    for category, members, crowd in groups:
        visible = np.isin(scene.ids, [m + 1 for m in members])
        if int(visible.sum()) < MIN_VISIBLE_PIXELS:
            continue
        rows, cols = np.flatnonzero(visible.any(axis=1)), np.flatnonzero(visible.any(axis=0))
        box = [float(cols[0]), float(rows[0]), float(cols[-1] + 1 - cols[0]), float(rows[-1] + 1 - rows[0])]
        segmentation = _uncompressed_rle(visible) if crowd else mask_to_polygons(visible)
        out.append({"category_id": ids[category], "bbox": box, "area": float(visible.sum()),
                    "iscrowd": int(crowd), "segmentation": segmentation})  # fmt: skip
    return out


def generate(
    root: str | Path,
    *,
    seed: int,
    train_images: int,
    val_images: int,
    image_size: int | Sequence[int],
    max_objects: int,
    categories: int,
) -> None:
    """Write ``LAYOUT`` with ``categories`` COCO categories (spread over the 80, so ids have gaps)."""
    seed = _int("seed", seed, 0)
    num = _int("categories", categories, 1, len(KINDS))
    counts = {
        "train2017": _int("train_images", train_images, num),
        "val2017": _int("val_images", val_images, num),
    }
    low, high = _side_range(image_size)
    max_objects = _int("max_objects", max_objects, 1, 50)
    chosen = [COCO_CATEGORIES[k * len(COCO_CATEGORIES) // num] for k in range(num)]
    category_list = [
        {"id": i, "name": name, "supercategory": [s for first, s in SUPERCATEGORIES if i >= first][-1]}
        for i, name in chosen
    ]
    total = sum(counts.values())
    image_ids = (
        np.random.default_rng([seed, _STREAM_IDS]).choice(999_999, total, replace=False) + 1
    ).tolist()
    annotation_id = 0
    with building_directory(root) as tmp:
        for s, (split, count) in enumerate(counts.items()):
            (tmp / split).mkdir(parents=True)
            split_ids = sorted(image_ids[:count]) if s == 0 else sorted(image_ids[total - count :])
            images, annotations = [], []
            for position, image_id in enumerate(split_ids):
                rng = np.random.default_rng([seed, _STREAM_IMAGE, s, position])
                w, h = (int(v) for v in rng.integers(low, high + 1, size=2))
                scene, groups = _render(rng, h, w, num, max_objects, position)
                file_name = f"{image_id:012d}.jpg"
                Image.fromarray(scene.to_uint8()).save(tmp / split / file_name, format="JPEG", quality=90)
                images.append({"id": image_id, "file_name": file_name, "height": h, "width": w})
                for ann in _annotations(scene, groups, [i for i, _ in chosen]):
                    annotation_id += 1
                    annotations.append({"id": annotation_id, "image_id": image_id, **ann})
            write_json(
                tmp / "annotations" / f"instances_{split}.json",
                {"info": {"description": "goodtransfer generated COCO-format stand-in", "seed": seed},
                 "licenses": [], "images": images, "annotations": annotations, "categories": category_list},
            )  # fmt: skip
