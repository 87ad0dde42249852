"""Open images so that a bad file names itself, and check a dataset's images before any job trains on it.

``open_rgb`` is what every loader uses: a file that is not an image, or a truncated one, raises
``InputError`` naming the path instead of a bare PIL traceback in a data-loader worker.

``ImageCheck`` reads every image's header (format, size, EXIF orientation) and fully decodes a deterministic
sample of each split (``fast``) or every image (``full``); ``files_digest`` keys a dataset on its content.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageFile, ImageOps

from goodtransfer.io import InputError

DECODE_MODES = ("fast", "full")
DEFAULT_SAMPLE = 32  # images fully decoded per split in fast mode
_ORIENTATION = 0x0112  # EXIF tag; values 5-8 rotate by 90 degrees, so width and height swap
_BAD_IMAGE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def open_rgb(path: str | os.PathLike[str], *, exif_transpose: bool = False) -> Image.Image:
    """The fully decoded RGB image at ``path`` (turned upright by its EXIF orientation if asked)."""
    try:
        with Image.open(path) as image:
            upright = ImageOps.exif_transpose(image) if exif_transpose else image
            return upright.convert("RGB")  # convert() decodes every pixel, so truncation fails here
    except _BAD_IMAGE as err:
        raise InputError(
            f"{path}: cannot read the image ({err}); expected a complete JPEG or PNG file"
        ) from None


def header_size(path: str | os.PathLike[str], *, exif_transpose: bool = True) -> tuple[int, int]:
    """(width, height) from the header only, as the image appears after its EXIF orientation."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            if exif_transpose and image.getexif().get(_ORIENTATION, 1) in (5, 6, 7, 8):
                width, height = height, width
            return width, height
    except _BAD_IMAGE as err:
        raise InputError(f"{path}: not a readable image ({err}); expected a JPEG or PNG file") from None


def decode(path: str | os.PathLike[str]) -> None:
    """Decode every pixel of ``path``; a truncated or corrupt file raises InputError naming it."""
    try:
        with Image.open(path) as image:
            image.load()
    except _BAD_IMAGE as err:
        raise InputError(f"{path}: image does not decode ({err}); the file is corrupt or truncated") from None


def sample_positions(count: int, sample: int) -> list[int]:
    """Up to ``sample`` positions spread evenly over ``0..count-1``, first and last included."""
    if count <= sample:
        return list(range(count))
    if sample <= 1:
        return [0][:sample]
    return sorted({round(k * (count - 1) / (sample - 1)) for k in range(sample)})


class ImageCheck:
    """Checks the images of one dataset split by split and counts what it did, for the check record."""

    def __init__(self, mode: str = "fast", sample: int = DEFAULT_SAMPLE) -> None:
        if mode not in DECODE_MODES:
            raise InputError(f"decode mode {mode!r} is unknown; expected one of {list(DECODE_MODES)}")
        if isinstance(sample, bool) or not isinstance(sample, int) or sample < 0:
            raise InputError(f"decode sample {sample!r}: expected an integer >= 0 (images per split)")
        self.mode, self.sample = mode, sample
        self.images = self.decoded = 0

    def split(
        self,
        paths: Sequence[Path],
        expected: Sequence[tuple[int, int]] | None = None,
        stated_in: Sequence[str] | None = None,
        *,
        exif_transpose: bool = True,
    ) -> list[tuple[int, int]]:
        """Every header read, the sample (or all) decoded; each size compared with ``expected[i]`` (stated
        by ``stated_in[i]``) when given. Returns the (width, height) of every image."""
        # A PIL default flipped elsewhere would let truncated JPEGs decode as grey: never in a check.
        truncated_allowed, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
        try:
            sizes = [header_size(path, exif_transpose=exif_transpose) for path in paths]
            if expected is not None:
                for k, (size, want) in enumerate(zip(sizes, expected, strict=True)):
                    if tuple(size) != tuple(want):
                        where = stated_in[k] if stated_in else "the annotation"
                        raise InputError(
                            f"{where} says {want[0]}x{want[1]} (width x height); the image {paths[k]} is "
                            f"{size[0]}x{size[1]}"
                            + (" after its EXIF orientation" if exif_transpose else "")
                            + "; expected them to agree (fix the annotation or replace the image)"
                        )
            chosen = range(len(paths)) if self.mode == "full" else sample_positions(len(paths), self.sample)
            for k in chosen:
                decode(paths[k])
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = truncated_allowed
        self.images += len(paths)
        self.decoded += len(chosen)
        return sizes

    def record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"mode": self.mode, "headers_read": self.images, "decoded": self.decoded}
        if self.mode == "fast":
            record["sample_per_split"] = self.sample
        return record


def files_digest(root: str | os.PathLike[str]) -> dict[str, Any]:
    """sha256 over the sorted (relative path, size) of every file under ``root``, following links (derived
    subsets are trees of links into their source); one stat per file, no file is read. Training state
    keyed on it is invalid as soon as a file is added, removed, renamed or changes size."""
    root = Path(root)
    entries = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs.sort()
        for name in files:
            path = Path(folder, name)
            try:
                size = path.stat().st_size
            except OSError as err:  # a dangling link
                raise InputError(f"{path}: cannot be read ({err.strerror}); expected a file") from None
            entries.append((path.relative_to(root).as_posix(), size))
    entries.sort()
    digest = hashlib.sha256()
    for relative, size in entries:
        digest.update(f"{relative}\0{size}\n".encode())
    return {"sha256": digest.hexdigest(), "count": len(entries), "bytes": sum(s for _, s in entries)}
