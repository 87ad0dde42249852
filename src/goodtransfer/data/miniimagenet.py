"""Mini-ImageNet in Ravi & Larochelle's class split (64 base / 16 val / 20 novel classes, 600 images each).

The layout is the one most few-shot code reads (Ravi & Larochelle's csv files next to the unpacked images)::

    <root>/images/n0153282900000005.jpg ...
    <root>/train.csv, val.csv, test.csv      header 'filename,label'; label is a WordNet id (n01532829)

Labels are indices into the split's sorted WordNet ids. For the base-class accuracy of Table 4 the base
(train.csv) images of every class are divided, by a seeded permutation per class, into ``base_train`` (what
pretraining may see) and ``base_val`` (held out); a pretraining job must use :func:`labelled_images` with
the same fraction and seed as the few-shot protocol.

The generated stand-in in the same layout is ``goodtransfer.data.synthetic.miniimagenet``.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from goodtransfer.data.images import ImageCheck
from goodtransfer.io import InputError

LAYOUT = (
    "<root>/images/<filename>.jpg plus <root>/{train,val,test}.csv, each with header 'filename,label' "
    "(label = WordNet id such as n01532829; Ravi & Larochelle's Mini-ImageNet split)"
)
SPLITS = ("train", "val", "test")
BASE_PARTS = ("base_train", "base_val")
HEADER = ("filename", "label")
PAPER_CLASSES_PER_SPLIT = (64, 16, 20)


class Row(NamedTuple):
    filename: str
    wnid: str
    line: int  # 1-based line in the csv, for error messages


# --------------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------------


def _read_csv(root: Path, split: str) -> list[Row]:
    path = root / f"{split}.csv"
    if not path.is_file():
        raise InputError(f"{path}: split file not found; expected the layout {LAYOUT}")
    rows: list[Row] = []
    seen: set[str] = set()
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or tuple(field.strip() for field in header) != HEADER:
            raise InputError(f"{path}: line 1: header is {header}; expected 'filename,label' ({LAYOUT})")
        for line, fields in enumerate(reader, start=2):
            if not any(field.strip() for field in fields):
                continue
            if len(fields) != 2:
                raise InputError(
                    f"{path}: line {line}: got {len(fields)} fields {fields}; expected 'filename,label'"
                )
            filename, wnid = fields[0].strip(), fields[1].strip()
            # A path separator would let a listed file escape images/.
            if not filename or "/" in filename or "\\" in filename or filename in (".", ".."):
                raise InputError(f"{path}: line {line}: field filename {filename!r} is not a plain file name")
            if not wnid:
                raise InputError(f"{path}: line {line}: field label is empty; expected a WordNet id")
            if filename in seen:
                raise InputError(f"{path}: line {line}: filename {filename} is listed twice")
            seen.add(filename)
            rows.append(Row(filename, wnid, line))
    if not rows:
        raise InputError(f"{path}: lists no images; expected 'filename,label' rows after the header")
    return rows


def _read_all(root: Path) -> dict[str, list[Row]]:
    """All three csv files, verified to use disjoint classes (the point of a few-shot split)."""
    if not root.is_dir():
        raise InputError(f"{root}: dataset folder not found; expected the layout {LAYOUT}")
    tables = {split: _read_csv(root, split) for split in SPLITS}
    owner: dict[str, str] = {}
    for split, rows in tables.items():
        for row in rows:
            first = owner.setdefault(row.wnid, split)
            if first != split:
                raise InputError(
                    f"{root / f'{split}.csv'}: line {row.line}: class {row.wnid} is also in {first}.csv; "
                    "expected disjoint classes in train/val/test"
                )
    return tables


def _require_images(root: Path, split: str, rows: list[Row]) -> None:
    folder = root / "images"
    if not folder.is_dir():
        raise InputError(f"{folder}: image folder not found; expected the layout {LAYOUT}")
    present = set(os.listdir(folder))
    for row in rows:
        if row.filename not in present:
            raise InputError(
                f"{folder / row.filename}: image listed in {split}.csv line {row.line} not found; "
                f"expected the layout {LAYOUT}"
            )


def load_split(root: str | Path, split: str) -> tuple[list[Path], list[int], list[str]]:
    """(image paths, label indices, sorted WordNet ids) of ``split`` in csv order; every image must exist."""
    if split not in SPLITS:
        raise InputError(f"split: got {split!r}; expected one of {SPLITS}")
    root = Path(root)
    rows = _read_all(root)[split]
    _require_images(root, split, rows)
    classes = sorted({row.wnid for row in rows})
    index = {wnid: i for i, wnid in enumerate(classes)}
    return [root / "images" / row.filename for row in rows], [index[row.wnid] for row in rows], classes


def base_class_split(
    root: str | Path, held_out_fraction: float = 0.1, seed: int = 0
) -> dict[str, tuple[list[Path], list[int]]]:
    """Divide each base class's images into ``base_train`` and ``base_val`` (held out), deterministically.

    Per class, its file names are sorted and permuted by ``default_rng([seed, class index])``; the first
    ``max(1, round(fraction * n))`` are held out. Both parts keep csv order; labels index the sorted wnids."""
    fraction = float(held_out_fraction)
    if not 0.0 < fraction < 1.0:
        raise InputError(f"held_out_fraction: got {held_out_fraction!r}; expected a number in (0, 1)")
    paths, labels, classes = load_split(root, "train")
    held: set[Path] = set()
    for cls, wnid in enumerate(classes):
        members = sorted(
            (p for p, label in zip(paths, labels, strict=True) if label == cls), key=lambda p: p.name
        )
        count = max(1, round(fraction * len(members)))
        if count >= len(members):
            raise InputError(
                f"{Path(root) / 'train.csv'}: class {wnid} has {len(members)} images; holding out "
                f"{count} leaves none for base_train (lower held_out_fraction or add images)"
            )
        order = np.random.default_rng([int(seed), cls]).permutation(len(members))
        held.update(members[i] for i in order[:count])
    parts: dict[str, tuple[list[Path], list[int]]] = {"base_train": ([], []), "base_val": ([], [])}
    for path, label in zip(paths, labels, strict=True):
        part = parts["base_val" if path in held else "base_train"]
        part[0].append(path)
        part[1].append(label)
    return parts


def labelled_images(
    root: str | Path, part: str, *, held_out_fraction: float = 0.1, seed: int = 0
) -> tuple[list[Path], list[int]]:
    """(paths, labels) of ``base_train`` (for pretraining) or ``base_val`` (base-class accuracy)."""
    if part not in BASE_PARTS:
        raise InputError(f"part: got {part!r}; expected one of {BASE_PARTS}")
    return base_class_split(root, held_out_fraction, seed)[part]


def image_filename(wnid: str, number: int) -> str:
    """Real Mini-ImageNet names: the wnid followed by an 8-digit image number, e.g. n0153282900000005.jpg."""
    return f"{wnid}{number:08d}.jpg"


def check(root: str | Path, images: ImageCheck | None = None) -> dict[str, dict[str, int]]:
    """Verify the layout in place: three csvs, disjoint classes, every listed image present and readable."""
    root = Path(root)
    images = images or ImageCheck()
    summary: dict[str, dict[str, int]] = {}
    for split, rows in _read_all(root).items():
        _require_images(root, split, rows)
        images.split([root / "images" / row.filename for row in rows], exif_transpose=False)
        counts: dict[str, int] = {}
        for row in rows:
            counts[row.wnid] = counts.get(row.wnid, 0) + 1
        summary[split] = {
            "classes": len(counts),
            "images": len(rows),
            "min_per_class": min(counts.values()),
            "max_per_class": max(counts.values()),
        }
    return summary
