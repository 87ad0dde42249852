"""detectron2's training entry point for our VOC/COCO protocols (MoCo's ``detection/train_net.py`` role).

Run it where detectron2 is importable (the detection container, ``containers/detection.def``)::

    python -m goodtransfer.transfer.detectron2_train --config work/config.yaml --output work/train \
        --datasets work/datasets --classes aeroplane bicycle ... --resume [KEY VALUE ...]

``detectron2_backend.run_detectron2`` writes the config and the datasets folder and calls this. detectron2
is imported only inside functions, so this module (its argument parser and the datasets-folder builder)
imports without it.

Datasets. detectron2 looks up its registered datasets under ``$DETECTRON2_DATASETS`` in folders with
fixed names (``detectron2/data/datasets/builtin.py``). Our dataset roots map onto them one to one, as
symlinks that :func:`build_datasets_dir` makes:

    VOC2007 -> our VOC2007 root (datasets.voc2007.root)    voc_2007_{trainval,train,val,test}
    VOC2012 -> our VOC2012 root (the voc0712 extra_train)  voc_2012_{trainval,train,val}
    coco    -> our COCO root (datasets.coco2017.root)      coco_2017_{train,val}

Both layouts are already detectron2's: ``Annotations/ ImageSets/Main/ JPEGImages/`` for VOC,
``annotations/instances_<split>2017.json`` and ``<split>2017/`` for COCO. The config's datasets are
registered again at those paths before training, because our generated stand-ins hold fewer classes than
detectron2's built-in metadata: VOC with ``--classes`` (default: the 20 VOC classes, in detectron2's
order), COCO with the categories its JSON lists.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from goodtransfer.data.voc import VOC_CLASSES
from goodtransfer.io import InputError

FOLDERS = ("VOC2007", "VOC2012", "coco")
HEAD_NAME = "Res5ROIHeadsExtraNorm"  # the ROI_HEADS.NAME that detectron2_backend emits
_VOC_NAME = re.compile(r"voc_(2007|2012)_(\w+)")
_COCO_NAME = re.compile(r"coco_(2017)_(train|val)")


def dataset_folder(name: str) -> str:
    """The folder under ``$DETECTRON2_DATASETS`` that holds detectron2's dataset ``name``."""
    if match := _VOC_NAME.fullmatch(name):
        return f"VOC{match[1]}"
    if _COCO_NAME.fullmatch(name):
        return "coco"
    raise InputError(f"dataset {name!r}: expected voc_<2007|2012>_<split> or coco_2017_<train|val>")


def build_datasets_dir(roots: Mapping[str, str | os.PathLike[str]], target: str | os.PathLike[str]) -> Path:
    """Make ``target/<folder>`` a symlink to ``roots[folder]`` for each folder (VOC2007, VOC2012, coco).

    Existing links in ``target`` are replaced, so a rerun with moved data follows the new roots.
    """
    unknown = sorted(set(roots) - set(FOLDERS))
    if unknown:
        raise InputError(f"dataset roots: unknown folder(s) {unknown}; expected keys from {list(FOLDERS)}")
    out = Path(target)
    out.mkdir(parents=True, exist_ok=True)
    for folder, root in roots.items():
        source = Path(root).resolve()
        if not source.is_dir():
            raise InputError(f"dataset roots: {folder} -> {root} is not a directory")
        link = out / folder
        if link.exists() and not link.is_symlink():
            raise InputError(f"{link}: exists and is not a symlink; remove it or use another datasets folder")
        tmp = out / f".{folder}.link-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(source, target_is_directory=True)
        os.replace(tmp, link)  # atomic: a concurrent reader sees the old link or the new one
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m goodtransfer.transfer.detectron2_train",
        description="Fine-tune and evaluate a detectron2 C4 detector from a goodtransfer-emitted config.",
    )
    # A str, named config_file: detectron2's default_setup reads and highlights args.config_file.
    parser.add_argument("--config", dest="config_file", required=True, help="emitted YAML")
    parser.add_argument("--output", type=Path, required=True, help="OUTPUT_DIR: checkpoints, metrics.json")
    parser.add_argument("--datasets", type=Path, help="$DETECTRON2_DATASETS (see build_datasets_dir)")
    parser.add_argument("--classes", nargs="+", help="VOC class names, in label order (default: all 20)")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last_checkpoint")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (MODEL.DEVICE)")
    parser.add_argument("--num-gpus", type=int, default=1, help="processes on this machine (one per GPU)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return parser


def register_extra_norm_head() -> type:
    """Register MoCo's ROI head: detectron2's ``Res5ROIHeads`` with one ``RESNETS.NORM`` layer after res5.

    The norm is the res5 Sequential's child ``norm``, so parameters are ``roi_heads.res5.norm.*`` as in
    MoCo's head and detectors trained by either load in the other.
    """
    from detectron2.layers import get_norm
    from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads

    if HEAD_NAME in ROI_HEADS_REGISTRY:
        return ROI_HEADS_REGISTRY.get(HEAD_NAME)

    class Res5ROIHeadsExtraNorm(Res5ROIHeads):
        """Res5ROIHeads whose res5 stage ends in one more norm layer, as MoCo's C4 detector."""

        @classmethod
        def _build_res5_block(cls, cfg: Any) -> tuple[Any, int]:
            res5, out_channels = super()._build_res5_block(cfg)
            res5.add_module("norm", get_norm(cfg.MODEL.RESNETS.NORM, out_channels))
            return res5, out_channels

    ROI_HEADS_REGISTRY.register(Res5ROIHeadsExtraNorm)
    return Res5ROIHeadsExtraNorm


def register_datasets(names: Sequence[str], datasets_dir: Path, classes: Sequence[str] | None) -> None:
    """(Re-)register each of detectron2's dataset ``names`` at its folder under ``datasets_dir``."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import register_coco_instances, register_pascal_voc

    for name in dict.fromkeys(names):
        root = datasets_dir / dataset_folder(name)
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        if match := _VOC_NAME.fullmatch(name):
            split_file = root / "ImageSets" / "Main" / f"{match[2]}.txt"
            if not split_file.is_file():
                raise InputError(f"{split_file}: missing; dataset {name} reads VOC from {root}")
            register_pascal_voc(name, str(root), match[2], int(match[1]), list(classes or VOC_CLASSES))
        else:
            year, part = _COCO_NAME.fullmatch(name).groups()
            split = f"{part}{year}"  # coco_2017_val -> val2017
            json_file = root / "annotations" / f"instances_{split}.json"
            if not json_file.is_file():
                raise InputError(f"{json_file}: missing; dataset {name} reads COCO from {root}")
            register_coco_instances(name, {}, str(json_file), str(root / split))


def _has_fast_coco_eval() -> bool:
    """detectron2's C++ COCOeval exists only when its extension was compiled (the container builds it)."""
    try:
        from detectron2 import _C
    except ImportError:
        return False
    return hasattr(_C, "COCOevalAccumulate")


def trainer_class() -> type:
    """MoCo's Trainer: a DefaultTrainer that evaluates VOC with PascalVOCDetectionEvaluator and COCO with
    COCOEvaluator (box, and mask when MODEL.MASK_ON)."""
    from detectron2.engine import DefaultTrainer
    from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator

    class Trainer(DefaultTrainer):
        @classmethod
        def build_evaluator(cls, cfg: Any, dataset_name: str, output_folder: str | None = None) -> Any:
            if _VOC_NAME.fullmatch(dataset_name):
                return PascalVOCDetectionEvaluator(dataset_name)
            folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
            return COCOEvaluator(dataset_name, output_dir=folder, use_fast_impl=_has_fast_coco_eval())

    return Trainer


def setup(args: argparse.Namespace) -> Any:
    """The frozen config: the emitted YAML, then the KEY VALUE overrides, then --output and --device."""
    import torch
    from detectron2.config import get_cfg
    from detectron2.engine import default_setup

    cfg = get_cfg()
    cfg.merge_from_file(str(args.config_file))
    cfg.merge_from_list(list(args.opts or []))
    cfg.OUTPUT_DIR = str(args.output)
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    cfg.MODEL.DEVICE = auto if args.device == "auto" else args.device
    voc = [name for name in (*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST) if _VOC_NAME.fullmatch(name)]
    classes = args.classes or VOC_CLASSES
    if voc and len(classes) != cfg.MODEL.ROI_HEADS.NUM_CLASSES:
        raise InputError(
            f"{args.config_file}: MODEL.ROI_HEADS.NUM_CLASSES is {cfg.MODEL.ROI_HEADS.NUM_CLASSES} but "
            f"{len(classes)} VOC classes are registered; pass the spec's classes with --classes"
        )
    cfg.freeze()
    default_setup(cfg, args)  # logger, log.txt and config.yaml in OUTPUT_DIR, seeds
    return cfg


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Fine-tune, then evaluate; detectron2's writers append the results to OUTPUT_DIR/metrics.json."""
    cfg = setup(args)
    register_extra_norm_head()
    datasets = Path(os.environ.get("DETECTRON2_DATASETS", "datasets"))
    register_datasets([*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST], datasets, args.classes)
    trainer = trainer_class()(cfg)
    trainer.resume_or_load(resume=args.resume)  # resume=True: OUTPUT_DIR/last_checkpoint if present
    trainer.train()
    return getattr(trainer, "_last_eval_results", {})


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.datasets is not None:
        # Before the first detectron2 import: its builtin registration reads the variable once.
        os.environ["DETECTRON2_DATASETS"] = str(args.datasets.resolve())
    from detectron2.engine import launch

    launch(train, args.num_gpus, dist_url="auto", args=(args,))
    return 0


if __name__ == "__main__":
    sys.exit(main())
