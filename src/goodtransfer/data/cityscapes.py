"""Cityscapes fine annotations: real on-disk layout, official id -> trainId table, an in-place check.

Images are ``leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png`` and labels the
matching ``gtFine/.../<city>_<seq>_<frame>_gtFine_labelIds.png`` (8-bit PNG of Cityscapes label ids).
Label ids become the 19 train ids through cityscapesScripts' ``labels.py`` table; every other id maps to
255 (ignored). mmsegmentation reads ``*_labelTrainIds.png`` made by cityscapesScripts from the polygons,
which skips license plates (id -1) exactly as ``*_labelIds.png`` does, so mapping labelIds in memory
gives the same train-id maps without a conversion step.

The generated stand-in is ``goodtransfer.data.synthetic.cityscapes``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from goodtransfer.data.images import ImageCheck
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
