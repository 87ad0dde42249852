"""ImageNet-style class-folder datasets (``<root>/<split>/<class>/<image>``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from goodtransfer.data.images import open_rgb
from goodtransfer.io import InputError

if TYPE_CHECKING:
    from torchvision.datasets import ImageFolder

LAYOUT = "<root>/{train,val}/<class folder>/<image>.JPEG (ImageNet after the usual val reorganisation)"


def image_folder(root: str | Path, split: str, transform: Any) -> ImageFolder:
    from torchvision.datasets import ImageFolder

    folder = Path(root) / split
    if not folder.is_dir():
        raise InputError(f"{folder}: dataset split folder not found; expected the layout {LAYOUT}")
    try:
        return ImageFolder(str(folder), transform=transform, loader=open_rgb)  # a bad file names itself
    except (FileNotFoundError, RuntimeError) as err:
        raise InputError(
            f"{folder}: not a class-folder dataset ({err}); expected the layout {LAYOUT}"
        ) from None
