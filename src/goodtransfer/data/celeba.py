"""CelebA (aligned) with the MAFL landmark split: list readers and an in-place check.

The layout is torchvision's ``CelebA`` folder (the four list files at the root, not in ``Anno/``/``Eval/``)
plus the MAFL split lists of Zhang et al. (2014), which name CelebA files and take their 5 landmarks
from ``list_landmarks_align_celeba.txt``. Landmarks are pixel coordinates in the 178x218 aligned image;
"left eye" is the eye on the image's left. The generated stand-in is ``goodtransfer.data.synthetic.celeba``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from goodtransfer.data.images import ImageCheck
from goodtransfer.io import InputError

IMAGE_DIR = "img_align_celeba"
LANDMARKS_FILE = "list_landmarks_align_celeba.txt"
IDENTITY_FILE = "identity_CelebA.txt"
PARTITION_FILE = "list_eval_partition.txt"
MAFL_FILES = {"train": "MAFL/training.txt", "test": "MAFL/testing.txt"}
LANDMARK_HEADER = (
    "lefteye_x", "lefteye_y", "righteye_x", "righteye_y", "nose_x", "nose_y",
    "leftmouth_x", "leftmouth_y", "rightmouth_x", "rightmouth_y",
)  # fmt: skip
PARTITIONS = {"train": 0, "val": 1, "test": 2}
LAYOUT = (
    f"<root>/{IMAGE_DIR}/<000001>.jpg, <root>/{LANDMARKS_FILE} (count, header, '<file> x1 y1 ... x5 y5'), "
    f"<root>/{IDENTITY_FILE} ('<file> <id>'), <root>/{PARTITION_FILE} ('<file> 0|1|2'), "
    f"<root>/{MAFL_FILES['train']} and <root>/{MAFL_FILES['test']} (one file name per line)"
)
CELEBA_IDENTITIES = 10177


# --------------------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------------------


def _lines(path: Path) -> list[tuple[int, list[str]]]:
    """Non-blank lines of ``path`` as (1-based line number, whitespace-separated fields)."""
    if not path.is_file():
        raise InputError(f"{path}: missing; expected the CelebA layout {LAYOUT}")
    rows = [(n, line.split()) for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)]
    return [(n, fields) for n, fields in rows if fields]


def _file_name(path: Path, line: int, name: str) -> str:
    # A path separator would let a listed name escape the image folder.
    if "/" in name or "\\" in name or name in (".", ".."):
        raise InputError(f"{path}:{line}: {name!r} is not a plain image file name like 000001.jpg")
    return name


def _unique(path: Path, line: int, name: str, seen: dict | set) -> str:
    if name in seen:
        raise InputError(f"{path}:{line}: {name} is listed more than once")
    return _file_name(path, line, name)


def landmarks(root: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """``list_landmarks_align_celeba.txt`` as {file: (5, 2) float array of x, y pixel coordinates}."""
    path = Path(root) / LANDMARKS_FILE
    rows = _lines(path)
    if len(rows) < 2 or len(rows[0][1]) != 1 or not rows[0][1][0].isdigit():
        raise InputError(f"{path}:1: expected the image count on the first line, then the header line")
    if tuple(rows[1][1]) != LANDMARK_HEADER:
        raise InputError(f"{path}:{rows[1][0]}: header is {' '.join(rows[1][1])!r}; "
                         f"expected {' '.join(LANDMARK_HEADER)!r}")  # fmt: skip
    points: dict[str, np.ndarray] = {}
    for line, fields in rows[2:]:
        if len(fields) != 11:
            raise InputError(f"{path}:{line}: has {len(fields)} fields; expected '<file> x1 y1 ... x5 y5'")
        try:
            values = np.array([float(v) for v in fields[1:]])
        except ValueError:
            raise InputError(f"{path}:{line}: coordinates {fields[1:]} are not all numbers") from None
        if not np.isfinite(values).all():
            raise InputError(f"{path}:{line}: coordinates {fields[1:]} are not all finite")
        points[_unique(path, line, fields[0], points)] = values.reshape(5, 2)
    if int(rows[0][1][0]) != len(points):
        raise InputError(f"{path}:1: says {rows[0][1][0]} images but lists {len(points)}")
    return points


def _file_int_table(path: Path, what: str, allowed: set[int] | None = None) -> dict[str, int]:
    table: dict[str, int] = {}
    for line, fields in _lines(path):
        if len(fields) != 2 or not fields[1].isdigit() or (allowed and int(fields[1]) not in allowed):
            expected = f"one of {sorted(allowed)}" if allowed else "a non-negative integer"
            raise InputError(
                f"{path}:{line}: {' '.join(fields)!r}; expected '<file> <{what}>' with {expected}"
            )
        table[_unique(path, line, fields[0], table)] = int(fields[1])
    return table


def identities(root: str | os.PathLike[str]) -> dict[str, int]:
    """``identity_CelebA.txt`` as {file: CelebA identity number (1..10177 in the real data)}."""
    return _file_int_table(Path(root) / IDENTITY_FILE, "identity")


def eval_partition(root: str | os.PathLike[str]) -> dict[str, int]:
    """``list_eval_partition.txt`` as {file: 0 (train) | 1 (val) | 2 (test)}."""
    return _file_int_table(Path(root) / PARTITION_FILE, "partition", set(PARTITIONS.values()))


def _mafl_entries(root: Path, split: str) -> tuple[Path, list[tuple[int, str]]]:
    if split not in MAFL_FILES:
        raise InputError(f"MAFL split {split!r} is unknown; expected one of {sorted(MAFL_FILES)}")
    path = root / MAFL_FILES[split]
    entries: list[tuple[int, str]] = []
    seen: set[str] = set()
    for line, fields in _lines(path):
        if len(fields) != 1:
            raise InputError(f"{path}:{line}: {' '.join(fields)!r}; expected one image file name per line")
        seen.add(_unique(path, line, fields[0], seen))
        entries.append((line, fields[0]))
    if not entries:
        raise InputError(f"{path}: lists no images; expected one image file name per line")
    return path, entries


def mafl_split(root: str | os.PathLike[str], split: str) -> list[str]:
    """The file names of MAFL ``train`` (``MAFL/training.txt``) or ``test`` (``MAFL/testing.txt``)."""
    return [name for _, name in _mafl_entries(Path(root), split)[1]]


def mafl_samples(
    root: str | os.PathLike[str], split: str, points: dict[str, np.ndarray] | None = None
) -> tuple[list[Path], np.ndarray]:
    """Image paths of a MAFL split and their (N, 5, 2) landmarks; every listed file must have landmarks."""
    root = Path(root)
    points = landmarks(root) if points is None else points
    path, entries = _mafl_entries(root, split)
    for line, name in entries:
        if name not in points:
            raise InputError(f"{path}:{line}: {name} has no entry in {root / LANDMARKS_FILE}")
    return [root / IMAGE_DIR / name for _, name in entries], np.stack([points[name] for _, name in entries])


def labelled_images(
    root: str | os.PathLike[str], exclude_mafl_test: bool, partitions: tuple[str, ...] | None = None
) -> tuple[list[Path], list[int]]:
    """Images of ``identity_CelebA.txt`` (in file order) and their identities as contiguous labels 0..K-1.

    ``partitions`` keeps only those of ``list_eval_partition.txt`` (None: all); ``exclude_mafl_test`` drops
    the MAFL test faces so that identity pretraining never sees them.
    """
    root = Path(root)
    ids = identities(root)
    names = sorted(ids)
    if partitions is not None:
        unknown = [p for p in partitions if p not in PARTITIONS]
        if unknown:
            raise InputError(f"partition {unknown[0]!r} is unknown; expected some of {sorted(PARTITIONS)}")
        part, keep = eval_partition(root), {PARTITIONS[p] for p in partitions}
        missing = [n for n in names if n not in part]
        if missing:
            raise InputError(f"{root / PARTITION_FILE}: {missing[0]} (in {IDENTITY_FILE}) has no partition")
        names = [n for n in names if part[n] in keep]
    if exclude_mafl_test:
        test = set(mafl_split(root, "test"))
        names = [n for n in names if n not in test]
    label = {raw: k for k, raw in enumerate(sorted({ids[n] for n in names}))}
    return [root / IMAGE_DIR / n for n in names], [label[ids[n]] for n in names]


def check(root: str | os.PathLike[str], images: ImageCheck | None = None) -> dict:
    """Verify the layout in place, every listed image readable; return counts. Raises InputError naming
    the first problem."""
    root = Path(root)
    images = images or ImageCheck()
    for relative in (IMAGE_DIR, LANDMARKS_FILE, IDENTITY_FILE, PARTITION_FILE, *MAFL_FILES.values()):
        if not (root / relative).exists():
            raise InputError(f"{root / relative}: missing; expected the CelebA layout {LAYOUT}")
    points, ids, part = landmarks(root), identities(root), eval_partition(root)
    if not points:
        raise InputError(f"{root / LANDMARKS_FILE}: lists no images; expected '<file> x1 y1 ... x5 y5' lines")
    for path, table in ((root / IDENTITY_FILE, ids), (root / PARTITION_FILE, part)):
        missing = sorted(set(points) ^ set(table))
        if missing:
            raise InputError(f"{path}: {missing[0]} is in only one of {path.name} and {LANDMARKS_FILE}; "
                             "expected both to list the same images")  # fmt: skip
    present = set(os.listdir(root / IMAGE_DIR))
    absent = [name for name in sorted(points) if name not in present]
    if absent:
        raise InputError(f"{root / IMAGE_DIR / absent[0]}: missing ({len(absent)} listed images are absent)")
    images.split([root / IMAGE_DIR / name for name in sorted(points)], exif_transpose=False)
    mafl = {split: mafl_split(root, split) for split in MAFL_FILES}
    for split in MAFL_FILES:
        mafl_samples(root, split, points)
    overlap = sorted(set(mafl["train"]) & set(mafl["test"]))
    if overlap:
        raise InputError(f"{root / MAFL_FILES['test']}: {overlap[0]} is also in {MAFL_FILES['train']}")
    return {
        "images": len(points),
        "identities": len(set(ids.values())),
        "partitions": {name: sum(v == code for v in part.values()) for name, code in PARTITIONS.items()},
        "mafl_train": len(mafl["train"]),
        "mafl_test": len(mafl["test"]),
    }
