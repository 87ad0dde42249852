"""Check a dataset in place before any job trains on it: layout, counts, required files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from goodtransfer.data.imagefolder import LAYOUT
from goodtransfer.data.images import ImageCheck
from goodtransfer.data.voc import load_split
from goodtransfer.io import InputError

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}


def _check_imagefolder(root: Path, images: ImageCheck) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for split in ("train", "val"):
        folder = root / split
        if not folder.is_dir():
            raise InputError(f"{folder}: dataset split folder not found; expected the layout {LAYOUT}")
        classes = sorted(p for p in folder.iterdir() if p.is_dir())
        if not classes:
            raise InputError(f"{folder}: no class folders; expected the layout {LAYOUT}")
        files = {
            c.name: sorted(f for f in c.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES) for c in classes
        }
        empty = [name for name, found in files.items() if not found]
        if empty:
            raise InputError(f"{folder / empty[0]}: class folder has no images; expected the layout {LAYOUT}")
        # Class-folder loaders (torchvision) ignore EXIF orientation, and there is no size to compare with.
        images.split([f for found in files.values() for f in found], exif_transpose=False)
        summary[split] = {"classes": len(classes), "images": sum(map(len, files.values()))}
    if summary["train"]["classes"] != summary["val"]["classes"]:
        raise InputError(
            f"{root}: train has {summary['train']['classes']} classes, val "
            f"{summary['val']['classes']}; expected the same class folders in both"
        )
    return summary


def _check_voc(root: Path, classes: Sequence[str] | None, images: ImageCheck) -> dict[str, Any]:
    if not root.is_dir():
        raise InputError(
            f"{root}: dataset folder not found; expected a PASCAL VOC layout with JPEGImages/, "
            "Annotations/, ImageSets/Main/{trainval,test}.txt"
        )
    summary: dict[str, Any] = {}
    for split in ("trainval", "test"):
        records = load_split(root, split, classes)  # boxes checked against <size>; an empty split fails
        images.split(
            [r.image_path for r in records],
            [(r.width, r.height) for r in records],
            [f"{root / 'Annotations' / f'{r.image_id}.xml'}: <size>" for r in records],
        )
        summary[split] = {"images": len(records), "objects": sum(len(r.objects) for r in records)}
    return summary


def check_dataset(
    kind: str, root: Path, classes: Sequence[str] | None = None, images: ImageCheck | None = None
) -> dict[str, Any]:
    images = images or ImageCheck()
    if kind == "imagefolder":
        if not root.is_dir():
            raise InputError(f"{root}: dataset folder not found; expected the layout {LAYOUT}")
        summary = _check_imagefolder(root, images)
    else:
        summary = _check_voc(root, classes, images)
    return {"kind": kind, "root": str(root), **summary}
