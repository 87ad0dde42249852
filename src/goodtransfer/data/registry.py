"""Dataset kinds by name: how each is checked in place, generated as a stand-in, and read for pretraining.

A dataset entry of the config names its ``kind``; adding a dataset format is one module with
``check(root)`` plus one line in ``_MODULES``, and its stand-in generator ``generate(root, *, seed, ...)``
in ``goodtransfer.data.synthetic.<kind>`` plus one line in ``_GENERATORS``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from goodtransfer.data.images import DEFAULT_SAMPLE, ImageCheck, files_digest
from goodtransfer.io import InputError

if TYPE_CHECKING:  # torch is imported only where images are read for training: checks start fast
    from torch.utils.data import Dataset

# Kinds whose module follows the check/generate contract.
_MODULES = {
    "coco": "goodtransfer.data.coco",
    "cityscapes": "goodtransfer.data.cityscapes",
    "miniimagenet": "goodtransfer.data.miniimagenet",
    "celeba": "goodtransfer.data.celeba",
}
KINDS = ("imagefolder", "voc", *_MODULES)
# Kinds whose stand-in generator is a ``generate`` function (imagefolder and voc have their own names).
_GENERATORS = {
    "coco": "goodtransfer.data.synthetic.coco",
    "cityscapes": "goodtransfer.data.synthetic.cityscapes",
    "miniimagenet": "goodtransfer.data.synthetic.miniimagenet",
    "celeba": "goodtransfer.data.synthetic.celeba",
}


def _known(kind: str) -> str:
    if kind not in KINDS:
        raise InputError(f"dataset kind {kind!r} is unknown; expected one of {list(KINDS)}")
    return kind


def _module(kind: str) -> Any:
    return importlib.import_module(_MODULES[_known(kind)])


def check(
    kind: str,
    root: Path,
    classes: Sequence[str] | None = None,
    decode: str = "fast",
    sample: int = DEFAULT_SAMPLE,
) -> dict[str, Any]:
    """Verify a dataset in place; a JSON record (counts per split, what the image check did, a digest of
    the files) or InputError naming what is wrong. ``decode``: ``fast`` decodes ``sample`` images per split
    and reads every other header, ``full`` decodes every image."""
    images = ImageCheck(decode, sample)
    if kind in ("imagefolder", "voc"):
        from goodtransfer.data.check import check_dataset

        record = check_dataset(kind, root, classes, images)
    elif not Path(root).is_dir():
        raise InputError(f"{root}: dataset folder not found; expected the layout {_module(kind).LAYOUT}")
    else:
        record = {"kind": kind, "root": str(root), **_module(kind).check(Path(root), images)}
    files = files_digest(root)
    return {**record, "decode": images.record(), "files_digest": files.pop("sha256"), "files": files}


def generate(kind: str, root: Path, seed: int, options: Mapping[str, Any]) -> None:
    """Write the generated stand-in of ``kind`` at ``root`` (atomically: a whole tree or nothing)."""
    options = dict(options)
    if kind == "imagefolder":
        from goodtransfer.data.synthetic.imagenet import generate_imagenet

        generate_imagenet(root, seed=seed, **options)
    elif kind == "voc":
        from goodtransfer.data.synthetic.voc import generate_voc

        size = options.pop("image_size")
        generate_voc(root, seed=seed, image_size=_size(size), **options)
    else:
        generator = importlib.import_module(_GENERATORS[_known(kind)])
        sized = {k: _size(v) if k == "image_size" else v for k, v in options.items()}
        try:
            generator.generate(root, seed=seed, **sized)
        except TypeError as err:  # an option the generator does not take
            raise InputError(f"generate options {sorted(options)} of dataset kind {kind!r}: {err}") from None


def _size(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def pretraining_images(
    kind: str, root: Path, transform: Callable | None, partitions: Sequence[str] | None = None
) -> Dataset:
    """The labelled training images a pretraining run sees: ImageNet-style ``train/``, Mini-ImageNet's
    base-class training part (Table 4), CelebA identities without the MAFL test faces (Table 5; only the
    ``partitions`` of list_eval_partition.txt if given, else all), or the train images of a COCO
    (train2017) or Cityscapes-layout (Synthia stand-in) dataset (Table 2).

    COCO and Cityscapes images have no image-level class: every image gets label 0 and the dataset has
    one class, so only label-free methods (moco) learn from them; cross-entropy on one class teaches
    nothing, which is why the paper's supervised COCO/Synthia rows train a detector/segmenter instead
    (method ``task``) and label-using methods refuse a one-class dataset (``pretrain.build_method``)."""
    if partitions is not None and kind != "celeba":
        raise InputError(f"dataset kind {kind!r} has no partitions to choose; expected kind 'celeba'")
    if kind == "imagefolder":
        from goodtransfer.data.imagefolder import image_folder

        return image_folder(root, "train", transform)
    if kind == "miniimagenet":
        paths, labels = _module(kind).labelled_images(root, "base_train")
    elif kind == "celeba":
        chosen = None if partitions is None else tuple(partitions)
        paths, labels = _module(kind).labelled_images(root, exclude_mafl_test=True, partitions=chosen)
    elif kind in ("coco", "cityscapes"):
        paths = _module(kind).image_paths(root)  # the training split: train2017 / leftImg8bit/train
        labels = [0] * len(paths)
    else:
        raise InputError(
            f"dataset kind {kind!r} cannot be pretrained on; "
            "expected imagefolder, miniimagenet, celeba, coco or cityscapes"
        )
    from goodtransfer.data.labelled import LabelledImages

    return LabelledImages(paths, labels, transform)


def pretraining_val_images(kind: str, root: Path, transform: Callable | None) -> Dataset | None:
    """Held-out images of the classes a supervised run is trained on, labelled as its training images:
    ImageNet-style ``val/`` (its class folders must be train/'s) or Mini-ImageNet's base-class held-out part.
    None where there are none: CelebA's partitions share no identities, COCO and Cityscapes images have
    no image-level class."""
    if kind == "imagefolder":
        from goodtransfer.data.imagefolder import image_folder

        val, train = image_folder(root, "val", transform), image_folder(root, "train", None)
        if val.classes != train.classes:
            raise InputError(
                f"{Path(root) / 'val'}: class folders {val.classes[:5]}... differ from train/'s "
                f"{train.classes[:5]}...; expected the same classes in both splits"
            )
        return val
    if kind == "miniimagenet":
        from goodtransfer.data.labelled import LabelledImages

        return LabelledImages(*_module(kind).labelled_images(root, "base_val"), transform)
    return None
