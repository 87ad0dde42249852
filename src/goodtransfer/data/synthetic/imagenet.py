"""The ImageNet-style stand-in: ``root/{train,val}/<wnid>/<wnid>_<n>.JPEG`` plus ``classes.txt``."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from goodtransfer.data.synthetic.common import (
    MAX_IMAGE_SIDE,
    MIN_IMAGE_SIDE,
    Placement,
    Scene,
    _check_int,
    _save_jpeg,
    background,
    plain_background,
    random_placement,
)
from goodtransfer.data.synthetic.kinds import KINDS, kind_label
from goodtransfer.io import InputError, building_directory, write_text

# Fixed stream tags so that the random stream of one image never depends on how many other images exist.
_STREAM_IMAGENET_TRAIN = 1
_STREAM_IMAGENET_VAL = 2


def imagenet_wnid(index: int) -> str:
    """WordNet-id-like folder name for generated class ``index`` (real wnids start with n0/n1, ours n9)."""
    return f"n9{index:07d}"


# ImageNet-style images: the dominant object's radius as a fraction of the side, by default.
OBJECT_SCALE = (0.24, 0.4)
BACKGROUNDS = ("textured", "plain")


def render_imagenet_image(
    rng: np.random.Generator,
    kind: int,
    size: int,
    background_style: str = "textured",
    object_scale: tuple[float, float] = OBJECT_SCALE,
) -> np.ndarray:
    """One dominant object of ``kind``, sometimes with small distractors of other kinds behind it.

    ``background_style`` "plain" leaves the object as the only thing that tells images apart, which
    instance discrimination needs on a few hundred tiny images: random textured backgrounds (and their
    colours) are then the easiest cue to tell two images apart, and carry no class information.
    """
    scene = Scene(
        background(rng, size, size) if background_style == "textured" else plain_background(rng, size, size)
    )
    others = [k for k in range(len(KINDS)) if k != kind]
    if rng.random() < 0.4:
        for _ in range(int(rng.integers(1, 3))):
            distractor = others[int(rng.integers(len(others)))]
            scene.add(rng, random_placement(rng, distractor, size, size, (0.06, 0.12)))
    # The dominant object goes last (on top) and must always be painted: retry, then fall back to centre.
    for _ in range(20):
        if scene.add(rng, random_placement(rng, kind, size, size, object_scale, (0.38, 0.62))):
            break
    else:
        scene.add(rng, Placement(kind, size / 2.0, size / 2.0, 0.3 * size, 1.0, 0.0), min_pixels=1)
    return scene.to_uint8()


def generate_imagenet(
    root: str | os.PathLike[str],
    *,
    num_classes: int,
    train_per_class: int,
    val_per_class: int,
    image_size: int,
    seed: int,
    background: str = "textured",
    object_scale: Sequence[float] = OBJECT_SCALE,
) -> None:
    """Write ``root/{train,val}/<wnid>/<wnid>_<n>.JPEG`` and ``root/classes.txt`` ('<wnid> <name>' lines).

    ``background`` is "textured" or "plain"; ``object_scale`` the (low, high) radius of the dominant
    object as a fraction of the image side."""
    num_classes = _check_int("num_classes", num_classes, 1, len(KINDS))
    counts = {
        "train": _check_int("train_per_class", train_per_class, 1),
        "val": _check_int("val_per_class", val_per_class, 1),
    }
    size = _check_int("image_size", image_size, MIN_IMAGE_SIDE, MAX_IMAGE_SIDE)
    seed = _check_int("seed", seed, 0)
    if background not in BACKGROUNDS:
        raise InputError(f"background: expected one of {list(BACKGROUNDS)}, got {background!r}")
    scale = _check_object_scale(object_scale)
    streams = {"train": _STREAM_IMAGENET_TRAIN, "val": _STREAM_IMAGENET_VAL}
    with building_directory(root) as tmp:
        for split, per_class in counts.items():
            for cls in range(num_classes):
                folder = tmp / split / imagenet_wnid(cls)
                folder.mkdir(parents=True)
                for n in range(per_class):
                    rng = np.random.default_rng([seed, streams[split], cls, n])
                    _save_jpeg(
                        render_imagenet_image(rng, cls, size, background, scale),
                        folder / f"{imagenet_wnid(cls)}_{n + 1}.JPEG",
                    )
        lines = [f"{imagenet_wnid(cls)} {kind_label(cls)}\n" for cls in range(num_classes)]
        write_text(tmp / "classes.txt", "".join(lines))


def _check_object_scale(value: Sequence[float]) -> tuple[float, float]:
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 2:
        raise InputError(f"object_scale: expected (low, high) fractions of the side, got {value!r}")
    low, high = (float(v) for v in value)
    if not 0.05 <= low <= high <= 0.5:
        raise InputError(f"object_scale: expected 0.05 <= low <= high <= 0.5, got {value!r}")
    return low, high
