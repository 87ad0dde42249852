"""``python -m goodtransfer.data.synthetic imagenet|voc ...``: the two original generators by hand."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from goodtransfer.data.synthetic.imagenet import generate_imagenet
from goodtransfer.data.synthetic.voc import generate_voc
from goodtransfer.io import InputError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m goodtransfer.data.synthetic",
        description="Generate ImageNet-style or VOC2007-style synthetic datasets.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    imagenet = sub.add_parser("imagenet", help="ImageNet-style class-folder dataset")
    imagenet.add_argument("--root", required=True, type=Path)
    imagenet.add_argument("--num-classes", required=True, type=int)
    imagenet.add_argument("--train-per-class", required=True, type=int)
    imagenet.add_argument("--val-per-class", required=True, type=int)
    imagenet.add_argument("--image-size", required=True, type=int)
    imagenet.add_argument("--seed", required=True, type=int)
    voc = sub.add_parser("voc", help="PASCAL VOC2007-style detection dataset")
    voc.add_argument("--root", required=True, type=Path)
    voc.add_argument("--classes", required=True, nargs="+", metavar="NAME")
    voc.add_argument("--trainval-images", required=True, type=int)
    voc.add_argument("--test-images", required=True, type=int)
    voc.add_argument(
        "--image-size",
        required=True,
        type=int,
        nargs="+",
        metavar="SIDE",
        help="one side (square images) or MIN MAX sides (varied aspect ratio)",
    )
    voc.add_argument("--max-objects", required=True, type=int)
    voc.add_argument("--seed", required=True, type=int)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "imagenet":
            generate_imagenet(
                args.root,
                num_classes=args.num_classes,
                train_per_class=args.train_per_class,
                val_per_class=args.val_per_class,
                image_size=args.image_size,
                seed=args.seed,
            )
        else:
            size = args.image_size[0] if len(args.image_size) == 1 else tuple(args.image_size)
            generate_voc(
                args.root,
                classes=args.classes,
                trainval_images=args.trainval_images,
                test_images=args.test_images,
                image_size=size,
                max_objects=args.max_objects,
                seed=args.seed,
            )
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
