"""The PASCAL VOC2007-style stand-in: JPEGImages/, Annotations/ and ImageSets/Main/{trainval,test}.txt."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from goodtransfer.data.synthetic.common import (
    MAX_IMAGE_SIDE,
    MAX_OBJECTS_LIMIT,
    MIN_IMAGE_SIDE,
    Placement,
    Scene,
    _check_int,
    _save_jpeg,
    background,
    random_placement,
)
from goodtransfer.data.voc import VOC_CLASSES, VocObject, VocRecord, write_annotation, write_split
from goodtransfer.io import InputError, building_directory

# Fixed stream tags so that the random stream of one image never depends on how many other images exist.
_STREAM_VOC_IMAGE = 3
_STREAM_VOC_SPLIT = 4


# Objects whose box is shorter than this fraction of the image's short side, or which are hidden by more
# than DIFFICULT_HIDDEN of their drawn pixels, are marked difficult (as VOC does for tiny/occluded ones).
DIFFICULT_SIDE = 0.15
DIFFICULT_HIDDEN = 0.4
SMALL_OBJECT_PROB = 0.12


def _voc_objects(scene: Scene, classes: Sequence[str]) -> list[VocObject]:
    """Tight 1-based inclusive boxes around each object's *visible* pixels, with VOC flags."""
    h, w = scene.shape
    counts = scene.visible_counts()
    objects = []
    for index, (p, raster) in enumerate(zip(scene.placements, scene.rasters, strict=True)):
        mh, mw = raster.mask.shape
        visible = scene.ids[raster.y0 : raster.y0 + mh, raster.x0 : raster.x0 + mw] == index + 1
        rows, cols = np.flatnonzero(visible.any(axis=1)), np.flatnonzero(visible.any(axis=0))
        if rows.size == 0:
            continue
        box = (
            raster.x0 + int(cols[0]) + 1,
            raster.y0 + int(rows[0]) + 1,
            raster.x0 + int(cols[-1]) + 1,
            raster.y0 + int(rows[-1]) + 1,
        )
        longest = max(box[2] - box[0] + 1, box[3] - box[1] + 1)
        hidden = 1.0 - counts[index] / raster.mask.sum()
        difficult = longest < DIFFICULT_SIDE * min(h, w) or hidden > DIFFICULT_HIDDEN
        objects.append(
            VocObject(name=classes[p.kind], bbox=box, difficult=bool(difficult), truncated=raster.truncated)
        )
    return objects


def render_voc_image(
    rng: np.random.Generator, classes: Sequence[str], h: int, w: int, max_objects: int, first: int | None
) -> tuple[np.ndarray, list[VocObject]]:
    """1..max_objects objects of the configured classes (class i drawn as kind i), overlapping a little.

    ``first`` forces the class of the first, always-present, clearly visible object (used to guarantee
    every class occurs in every split)."""
    scene = Scene(background(rng, h, w))
    count = int(rng.integers(1, max_objects + 1))
    kind = first if first is not None else int(rng.integers(len(classes)))
    for _ in range(20):
        if scene.add(rng, random_placement(rng, kind, h, w, (0.12, 0.3), (0.3, 0.7))):
            break
    else:
        scene.add(rng, Placement(kind, w / 2.0, h / 2.0, 0.25 * min(h, w), 1.0, 0.0), min_pixels=1)
    for _ in range(count - 1):
        kind = int(rng.integers(len(classes)))
        radii = (0.035, 0.06) if rng.random() < SMALL_OBJECT_PROB else (0.08, 0.28)
        for _ in range(10):
            if scene.add(rng, random_placement(rng, kind, h, w, radii), max_cover=0.45):
                break
    return scene.to_uint8(), _voc_objects(scene, classes)


def _check_classes(classes: Sequence[str]) -> tuple[str, ...]:
    """Any names (a user may call VOC's pottedplant "potted plant"), at most as many as VOC has."""
    if isinstance(classes, str) or not isinstance(classes, Sequence) or not classes:
        raise InputError(f"classes: expected a non-empty list of VOC class names, got {classes!r}")
    if len(classes) > len(VOC_CLASSES):
        raise InputError(f"classes: {len(classes)} names; expected at most {len(VOC_CLASSES)}, as VOC has")
    blank = [name for name in classes if not isinstance(name, str) or not name.strip()]
    if blank:
        raise InputError(f"classes: {blank} are not names; expected non-empty text")
    if len(set(classes)) != len(classes):
        raise InputError(f"classes: expected distinct names, got {list(classes)}")
    return tuple(classes)


def _check_size_range(image_size: int | Sequence[int]) -> tuple[int, int]:
    """Accept one side (square images) or a (min, max) side range (varied aspect ratio)."""
    if isinstance(image_size, Sequence) and not isinstance(image_size, str):
        if len(image_size) != 2:
            raise InputError(f"image_size: expected an integer or a (min, max) pair, got {image_size!r}")
        low = _check_int("image_size[0]", image_size[0], MIN_IMAGE_SIDE, MAX_IMAGE_SIDE)
        high = _check_int("image_size[1]", image_size[1], MIN_IMAGE_SIDE, MAX_IMAGE_SIDE)
        if low > high:
            raise InputError(f"image_size: expected min <= max, got {tuple(image_size)}")
        return low, high
    side = _check_int("image_size", image_size, MIN_IMAGE_SIDE, MAX_IMAGE_SIDE)
    return side, side


def voc_image_id(number: int) -> str:
    return f"{number:06d}"


def generate_voc(
    root: str | os.PathLike[str],
    *,
    classes: Sequence[str],
    trainval_images: int,
    test_images: int,
    image_size: int | tuple[int, int],
    max_objects: int,
    seed: int,
) -> None:
    """Write a VOC2007-style tree: JPEGImages/, Annotations/ and ImageSets/Main/{trainval,test}.txt.

    The i-th name in ``classes`` is drawn as kind i (the same kind as ImageNet-style class i), and the
    first ``len(classes)`` images of each split each start with one clearly visible object of a
    different class, so every class occurs in both splits."""
    names = _check_classes(classes)
    n_trainval = _check_int("trainval_images", trainval_images, len(names))
    n_test = _check_int("test_images", test_images, len(names))
    low, high = _check_size_range(image_size)
    max_objects = _check_int("max_objects", max_objects, 1, MAX_OBJECTS_LIMIT)
    seed = _check_int("seed", seed, 0)
    # VOC2007 interleaves trainval and test ids, so assign ids to splits by a seeded shuffle.
    order = np.random.default_rng([seed, _STREAM_VOC_SPLIT]).permutation(n_trainval + n_test) + 1
    splits = {"trainval": sorted(order[:n_trainval].tolist()), "test": sorted(order[n_trainval:].tolist())}
    with building_directory(root) as tmp:
        for sub in ("JPEGImages", "Annotations"):
            (tmp / sub).mkdir()
        for split, numbers in splits.items():
            for position, number in enumerate(numbers):
                rng = np.random.default_rng([seed, _STREAM_VOC_IMAGE, number])
                w, h = (int(side) for side in rng.integers(low, high + 1, size=2))
                first = position if position < len(names) else None
                pixels, objects = render_voc_image(rng, names, h, w, max_objects, first)
                image_id = voc_image_id(number)
                _save_jpeg(pixels, tmp / "JPEGImages" / f"{image_id}.jpg")
                # The XML <folder> comes from this path; a fixed 'VOC2007' (as in the real files) keeps the
                # annotation bytes independent of where the tree is written.
                record = VocRecord(
                    image_id=image_id,
                    image_path=Path("VOC2007", "JPEGImages", f"{image_id}.jpg"),
                    width=w,
                    height=h,
                    objects=tuple(objects),
                )
                write_annotation(tmp / "Annotations" / f"{image_id}.xml", record)
            write_split(tmp, split, [voc_image_id(n) for n in numbers])
