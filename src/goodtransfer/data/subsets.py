"""ImageNet subsets for Table 2, derived from an ImageNet class-folder tree as trees of symbolic links.

* ImageNet-100: the classes listed in a file (one WordNet id per line, ``#`` comments), all their images.
* ImageNet-10%: every class, a fixed ``fraction`` of each class's training images, drawn with a seed.
  The paper states only "1/10 of the images per class"; the draw (per-class, sorted file names,
  ``numpy.random.default_rng([seed, class index])``) is ours and is recorded in ``subset.json``.

``val/`` keeps every image of the kept classes: subsets change what is pretrained on, not the readout.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from goodtransfer.data.imagefolder import LAYOUT
from goodtransfer.io import InputError, building_directory, write_json

SPLITS = ("train", "val")


def read_class_list(path: str | os.PathLike[str]) -> list[str]:
    lines = Path(path).read_text(encoding="utf-8").splitlines() if Path(path).is_file() else None
    if lines is None:
        raise InputError(f"{path}: class list not found; expected one WordNet id per line")
    classes = [line.split("#")[0].strip() for line in lines]
    classes = [name for name in classes if name]
    if len(set(classes)) != len(classes):
        raise InputError(f"{path}: a class is listed twice")
    return classes


def _classes(source: Path, wanted: Sequence[str] | None) -> list[str]:
    folder = source / "train"
    if not folder.is_dir():
        raise InputError(f"{folder}: dataset split folder not found; expected the layout {LAYOUT}")
    present = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if wanted is None:
        return present
    missing = [name for name in wanted if name not in present]
    if missing:
        raise InputError(f"{folder}: class folders {missing[:5]} (of {len(missing)} listed) not found")
    return sorted(wanted)


def _kept(files: list[Path], fraction: float | None, seed: int, index: int) -> list[Path]:
    if fraction is None:
        return files
    count = max(1, math.ceil(fraction * len(files)))
    order = np.random.default_rng([seed, index]).permutation(len(files))[:count]
    return [files[i] for i in sorted(order)]


def derive_subset(
    source: Path,
    out: Path,
    *,
    classes: Sequence[str] | None = None,
    fraction: float | None = None,
    seed: int = 0,
) -> dict:
    """Write ``out/{train,val}/<class>/<image>`` as links into ``source``; returns the summary it records."""
    if fraction is not None and not 0.0 < fraction <= 1.0:
        raise InputError(f"fraction: expected a number in (0, 1], got {fraction!r}")
    source = Path(source).resolve()
    kept_classes = _classes(source, classes)
    summary = {"source": str(source), "classes": len(kept_classes), "fraction": fraction, "seed": seed}
    with building_directory(out) as tmp:
        for split in SPLITS:
            count = 0
            for index, name in enumerate(kept_classes):
                files = sorted(p for p in (source / split / name).iterdir() if p.is_file())
                chosen = _kept(files, fraction, seed, index) if split == "train" else files
                (tmp / split / name).mkdir(parents=True)
                for path in chosen:
                    (tmp / split / name / path.name).symlink_to(path)
                count += len(chosen)
            summary[f"{split}_images"] = count
        write_json(tmp / "subset.json", summary)
    return summary
