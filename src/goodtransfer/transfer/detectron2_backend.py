"""Hand-off to detectron2: MoCo's weight conversion, a flat MoCo-style config, and its AP read back.

detectron2 is never imported here: we write the files its ``train_net.py`` reads and parse the
metrics it writes, so the paper's detection runs can use the reference implementation on a GPU host.
:func:`run_detectron2` does all of it, running ``goodtransfer.transfer.detectron2_train`` (our
``train_net.py``) in a child process where detectron2 is importable.

Values checked against facebookresearch/moco at commit 7397dfe (2023-01-18, "Relicense MoCo under
MIT"; the detection/ folder was deleted in later commits):

- ``detection/convert-pretrain-to-detectron2.py``: keeps the query encoder, renames ``layerN`` to
  ``res{N+1}``, ``bnK`` to ``convK.norm``, ``downsample.0``/``.1`` to ``shortcut``/``shortcut.norm``,
  puts ``stem.`` before keys outside the four stages, stores numpy arrays and pickles
  ``{"model", "__author__", "matching_heuristics": True}``.
- ``detection/configs/Base-RCNN-C4-BN.yaml``: GeneralizedRCNN, RPN test top-k 6000/1000,
  ROI_HEADS.NAME Res5ROIHeadsExtraNorm, FREEZE_AT 0, RESNETS.NORM "naiveSyncBN" (it was "SyncBN"
  until commit d00ef73, 2020-11-04, whose note says SyncBN gave larger variance), TEST.PRECISE_BN
  enabled, IMS_PER_BATCH 16, BASE_LR 0.02.
- ``pascal_voc_R_50_C4_24k.yaml``: MASK_ON False, NUM_CLASSES 20, MIN_SIZE_TRAIN 480..800 step 32,
  MIN_SIZE_TEST 800, TRAIN voc_2007_trainval + voc_2012_trainval, TEST voc_2007_test, STEPS
  18000/22000, MAX_ITER 24000, WARMUP_ITERS 100 (the paper's VOC07 run shortens this to 9k, in our spec).
- ``coco_R_50_C4_2x.yaml``: MASK_ON True, MIN_SIZE_TRAIN 640..800, MIN_SIZE_TEST 800, coco_2017_train
  / coco_2017_val, STEPS 120000/160000, MAX_ITER 180000.
- ``*_moco.yaml``: PIXEL_MEAN [123.675, 116.280, 103.530], PIXEL_STD [58.395, 57.120, 57.375],
  RESNETS.STRIDE_IN_1X1 False, INPUT.FORMAT RGB.
- ``train_net.py``: registers ``Res5ROIHeadsExtraNorm`` (res5 plus one norm layer of RESNETS.NORM) and
  evaluates VOC with ``PascalVOCDetectionEvaluator``, COCO with ``COCOEvaluator``. The emitted config
  therefore needs MoCo's ``train_net.py`` (or that ROI head registered some other way).

Everything the MoCo files leave to detectron2's defaults and that our spec sets (anchors, RPN/ROI
sampling, warmup, weight decay, input sizes) is written out explicitly, so the file has no ``_BASE_``.
"""

from __future__ import annotations

import copyreg
import importlib.util
import io
import json
import math
import os
import pickle
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml

from goodtransfer.checkpoint import weights_digest
from goodtransfer.checkpoint_import import load_any_backbone
from goodtransfer.io import InputError, atomic_path, spec_hash, write_json, write_text
from goodtransfer.transfer.detectron2_train import build_datasets_dir, dataset_folder

Protocol = Literal["voc07", "voc0712", "coco"]
PROTOCOLS: tuple[str, ...] = ("voc07", "voc0712", "coco")

# MoCo's *_moco.yaml: torchvision's ImageNet statistics on the 0-255 RGB scale.
PIXEL_MEAN = [123.675, 116.280, 103.530]
PIXEL_STD = [58.395, 57.120, 57.375]
DEFAULT_NORM = "naiveSyncBN"  # Base-RCNN-C4-BN.yaml at 7397dfe
DEPTHS = (18, 34, 50, 101)  # what detectron2's build_resnet_backbone builds (and not our resnet10)

# The splits detectron2 registers for Pascal VOC (detectron2/data/datasets/builtin.py).
VOC_DATASETS = frozenset(
    f"voc_{year}_{split}" for year in (2007, 2012) for split in ("trainval", "train", "val")
) | {"voc_2007_test"}

_SUFFIX = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_STEM_KEY = re.compile(rf"(conv1|bn1)\.{_SUFFIX}")
_STAGE_KEY = re.compile(rf"layer[1-4]\.\d+\.(conv[1-3]|bn[1-3]|downsample\.[01])\.{_SUFFIX}")


def _part(pattern: str) -> re.Pattern[str]:
    """``pattern`` matched only as whole dot-separated components (``bn1`` but not ``xbn1``)."""
    return re.compile(rf"(?<![^.]){pattern}(?![^.])")


_RENAMES = (
    (_part(r"layer([1-4])"), lambda m: f"res{int(m[1]) + 1}"),
    (_part(r"bn([1-3])"), lambda m: f"conv{m[1]}.norm"),
    (_part(r"downsample\.0"), lambda m: "shortcut"),
    (_part(r"downsample\.1"), lambda m: "shortcut.norm"),
)


def detectron2_name(key: str) -> str:
    """torchvision ResNet key -> detectron2 key: ``layer1.0.bn1.weight`` -> ``res2.0.conv1.norm.weight``."""
    stem = _STEM_KEY.fullmatch(key) is not None
    if not stem and _STAGE_KEY.fullmatch(key) is None:
        raise InputError(
            f"backbone key {key!r}: expected a torchvision ResNet key (conv1.*, bn1.*, layer1-4.*), no fc.*"
        )
    name = key
    for pattern, replace in _RENAMES:
        name = pattern.sub(replace, name)
    return f"stem.{name}" if stem else name


def to_detectron2(
    state_dict: Mapping[str, Any], keep_num_batches_tracked: bool = False
) -> dict[str, np.ndarray]:
    """MoCo's converter on a torchvision ResNet state_dict: detectron2 names, numpy values.

    ``num_batches_tracked`` is dropped by default: detectron2 drops it itself when loading pycls
    checkpoints (``DetectionCheckpointer._load_file``), Caffe2 model-zoo weights never had it, and
    BatchNorm only reads it when ``momentum`` is None (detectron2 uses 0.1). When it is absent,
    PyTorch's BatchNorm fills in a zero counter for the version-less dict that detectron2's
    ``align_and_update_state_dicts`` returns, so nothing is reported missing. MoCo's converter
    copied it; ``keep_num_batches_tracked=True`` does the same (the loaded model is identical).
    """
    converted: dict[str, np.ndarray] = {}
    for key, value in state_dict.items():
        if key.endswith(".num_batches_tracked") and not keep_num_batches_tracked:
            continue
        name = detectron2_name(key)
        if name in converted:
            raise InputError(f"backbone key {key!r}: maps to {name!r}, which another key already took")
        converted[name] = _to_numpy(key, value)
    if not converted:
        raise InputError("backbone state_dict: no weights to convert")
    return converted


def _to_numpy(key: str, value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        # detectron2 trains in fp32, and numpy has no bfloat16.
        return (tensor.float() if tensor.is_floating_point() else tensor).numpy().copy()
    if isinstance(value, np.ndarray):
        return value.astype(np.float32) if value.dtype.kind == "f" else value.copy()
    raise InputError(f"backbone key {key!r}: expected a tensor or array, got {type(value).__name__}")


def _portable_array(array: np.ndarray) -> tuple[Any, tuple[Any, ...]]:
    """Rebuild through the public ``numpy.ndarray``: numpy 2 pickles name ``numpy._core``, which the
    numpy 1.x of a typical detectron2 environment cannot import."""
    return np.ndarray, (array.shape, array.dtype.str, bytearray(array.tobytes(order="C")))


def write_detectron2_checkpoint(
    state_dict: Mapping[str, Any], out_path: str | os.PathLike[str], keep_num_batches_tracked: bool = False
) -> int:
    """Pickle MoCo's detectron2 layout to ``out_path`` (a ``.pkl``) atomically; returns the array count."""
    if not str(out_path).endswith(".pkl"):
        raise InputError(f"{out_path}: detectron2 reads converted weights only from a .pkl file")
    payload = {
        "model": to_detectron2(state_dict, keep_num_batches_tracked),
        "__author__": "goodtransfer",
        "matching_heuristics": True,
    }
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=4)  # protocol 4: any Python 3 that detectron2 supports
    pickler.dispatch_table = copyreg.dispatch_table.copy()
    pickler.dispatch_table[np.ndarray] = _portable_array
    pickler.dump(payload)
    with atomic_path(out_path) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return len(payload["model"])


_SPEC_KEYS = (
    *("max_iter", "ims_per_batch", "base_lr", "momentum", "weight_decay", "steps", "warmup_iters"),
    *("warmup_factor", "min_size_train", "min_size_test", "max_size", "anchor_sizes", "aspect_ratios"),
    *("rpn", "roi_heads", "classes", "seed", "checkpoint_period"),
)
_SECTION_KEYS = {
    "rpn": ("pre_nms_topk_train", "post_nms_topk_train", "pre_nms_topk_test", "post_nms_topk_test")
    + ("batch_size_per_image",),
    "roi_heads": ("pooler_resolution", "batch_size_per_image", "score_thresh_test", "nms_thresh_test")
    + ("detections_per_image",),
}


def _check_spec(spec: Mapping[str, Any]) -> None:
    missing = [key for key in _SPEC_KEYS if key not in spec]
    for section, keys in _SECTION_KEYS.items():
        node = spec.get(section)
        if isinstance(node, Mapping):
            missing += [f"{section}.{key}" for key in keys if key not in node]
    if missing:
        raise InputError(f"detection spec: missing {missing}")


def dataset_names(spec: Mapping[str, Any], protocol: str) -> tuple[list[str], list[str]]:
    """detectron2's registered train and test dataset names for a protocol."""
    if protocol == "coco":
        return ["coco_2017_train"], ["coco_2017_val"]
    if protocol not in PROTOCOLS:
        raise InputError(f"detection protocol {protocol!r}: expected one of {list(PROTOCOLS)}")
    years = (2007,) if protocol == "voc07" else (2007, 2012)
    splits = list(spec.get("train_splits", ["trainval"]))
    train = [f"voc_{year}_{split}" for year in years for split in splits]
    test = [f"voc_2007_{spec.get('test_split', 'test')}"]
    unknown = [name for name in train + test if name not in VOC_DATASETS]
    if unknown:
        raise InputError(f"detection spec: {unknown} are not datasets detectron2 registers")
    return train, test


def _model_section(
    spec: Mapping[str, Any], protocol: str, weights: str, norm: str, depth: int
) -> dict[str, Any]:
    if depth not in DEPTHS:
        raise InputError(f"ResNet depth {depth}: detectron2 builds depths {list(DEPTHS)} only")
    rpn, roi = spec["rpn"], spec["roi_heads"]
    return {
        "META_ARCHITECTURE": "GeneralizedRCNN",
        "MASK_ON": protocol == "coco",
        "WEIGHTS": str(weights),
        "PIXEL_MEAN": list(PIXEL_MEAN),
        "PIXEL_STD": list(PIXEL_STD),
        "BACKBONE": {"NAME": "build_resnet_backbone", "FREEZE_AT": 0},
        "RESNETS": {
            "DEPTH": depth,
            "RES2_OUT_CHANNELS": 64 if depth < 50 else 256,  # detectron2 requires 64 for BasicBlock nets
            "NORM": norm,
            "STRIDE_IN_1X1": False,
            "OUT_FEATURES": ["res4"],
        },
        "ANCHOR_GENERATOR": {
            "SIZES": [[int(size) for size in spec["anchor_sizes"]]],  # one feature map (res4)
            "ASPECT_RATIOS": [[float(ratio) for ratio in spec["aspect_ratios"]]],
        },
        "PROPOSAL_GENERATOR": {"NAME": "RPN"},
        "RPN": {
            "IN_FEATURES": ["res4"],
            "BATCH_SIZE_PER_IMAGE": int(rpn["batch_size_per_image"]),
            "PRE_NMS_TOPK_TRAIN": int(rpn["pre_nms_topk_train"]),
            "POST_NMS_TOPK_TRAIN": int(rpn["post_nms_topk_train"]),
            "PRE_NMS_TOPK_TEST": int(rpn["pre_nms_topk_test"]),
            "POST_NMS_TOPK_TEST": int(rpn["post_nms_topk_test"]),
        },
        "ROI_HEADS": {
            "NAME": "Res5ROIHeadsExtraNorm",
            "IN_FEATURES": ["res4"],
            "NUM_CLASSES": len(spec["classes"]),
            "BATCH_SIZE_PER_IMAGE": int(roi["batch_size_per_image"]),
            "SCORE_THRESH_TEST": float(roi["score_thresh_test"]),
            "NMS_THRESH_TEST": float(roi["nms_thresh_test"]),
        },
        "ROI_BOX_HEAD": {"POOLER_RESOLUTION": int(roi["pooler_resolution"]), "POOLER_TYPE": "ROIAlignV2"},
    }


def _solver_section(spec: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "LR_SCHEDULER_NAME": "WarmupMultiStepLR",
        "MAX_ITER": int(spec["max_iter"]),
        "STEPS": [int(step) for step in spec["steps"]],
        "GAMMA": 0.1,
        "BASE_LR": float(spec["base_lr"]),
        "IMS_PER_BATCH": int(spec["ims_per_batch"]),
        "MOMENTUM": float(spec["momentum"]),
        "WEIGHT_DECAY": float(spec["weight_decay"]),
        "WEIGHT_DECAY_NORM": 0.0,  # detectron2's default: no decay on norm layers
        "BIAS_LR_FACTOR": 1.0,
        "WARMUP_METHOD": "linear",
        "WARMUP_ITERS": int(spec["warmup_iters"]),
        "WARMUP_FACTOR": float(spec["warmup_factor"]),
        "CHECKPOINT_PERIOD": int(spec["checkpoint_period"]),
    }


def build_config(
    spec: Mapping[str, Any],
    protocol: Protocol,
    weights: str,
    output_dir: str,
    norm: str = DEFAULT_NORM,
    depth: int = 50,
) -> dict[str, Any]:
    """The detectron2 config of :func:`emit_config` as a nested dict."""
    _check_spec(spec)
    train, test = dataset_names(spec, protocol)
    return {
        "VERSION": 2,  # detectron2 guesses (and warns) when a config has no VERSION
        "MODEL": _model_section(spec, protocol, weights, norm, depth),
        "INPUT": {
            "FORMAT": "RGB",
            "MIN_SIZE_TRAIN": [int(size) for size in spec["min_size_train"]],
            "MIN_SIZE_TRAIN_SAMPLING": "choice",
            "MAX_SIZE_TRAIN": int(spec["max_size"]),
            "MIN_SIZE_TEST": int(spec["min_size_test"]),
            "MAX_SIZE_TEST": int(spec["max_size"]),
        },
        "DATASETS": {"TRAIN": train, "TEST": test},
        "DATALOADER": {"NUM_WORKERS": int(spec.get("workers", 4))},
        "SOLVER": _solver_section(spec),
        "TEST": {
            "DETECTIONS_PER_IMAGE": int(spec["roi_heads"]["detections_per_image"]),
            "PRECISE_BN": {"ENABLED": True, "NUM_ITER": 200},
        },
        "SEED": int(spec["seed"]),
        "OUTPUT_DIR": str(output_dir),
    }


def emit_config(
    spec: Mapping[str, Any],
    protocol: Protocol,
    weights: str,
    output_dir: str,
    norm: str = DEFAULT_NORM,
    depth: int = 50,
) -> str:
    """A flat detectron2 YAML (no ``_BASE_``) equal to MoCo's C4-BN config with its ``_moco`` overrides.

    Numbers come from ``spec`` (see ``detection.<protocol>`` in the config); ``norm`` defaults to
    MoCo's "naiveSyncBN", ``depth`` to MoCo's R50. detectron2's C4 head always builds a bottleneck res5,
    so with depth 18/34 the checkpoint's res5 (basic blocks) loads only where shapes agree: those depths
    are for smoke tests, not for results. Keys are sorted, so the same inputs always give the same text.
    """
    header = f"# detectron2 config for protocol {protocol}, written by goodtransfer (MoCo R50-C4 BN recipe)\n"
    config = build_config(spec, protocol, weights, output_dir, norm, depth)
    return header + yaml.safe_dump(config, sort_keys=True, default_flow_style=False)


METRICS = ("AP", "AP50", "AP75")


def parse_detectron2_metrics(
    source: str | os.PathLike[str] | Mapping[str, Any], task: str = "bbox"
) -> dict[str, float]:
    """Final AP, AP50, AP75 of ``task`` ("bbox" or "segm") from an evaluator result or ``metrics.json``.

    A mapping may be the evaluator's ``{"bbox": {"AP", "AP50", "AP75"}}`` or the flattened
    ``{"bbox/AP", ...}``. A path is read as JSON lines (detectron2's ``metrics.json``): the last line
    with ``<task>/AP`` wins. Names prefixed by a dataset (several test sets) are not read.
    """
    if isinstance(source, Mapping):
        found = _task_metrics(source, task)
        if found is None:
            raise InputError(f"detectron2 results: no {task!r} entry with AP, AP50, AP75")
        return found
    path = Path(source)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    last: dict[str, float] | None = None
    for number, line in enumerate(lines, start=1):
        if line.strip():
            last = _task_metrics(_json_line(path, number, line), task, f"{path}: line {number}") or last
    if last is None:
        raise InputError(f"{path}: no line with {task}/AP (did detectron2's final evaluation run?)")
    return last


def _json_line(path: Path, number: int, line: str) -> Mapping[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: line {number} is not JSON ({err.msg})") from None
    if not isinstance(record, Mapping):
        raise InputError(f"{path}: line {number} is not a JSON object")
    return record


def _task_metrics(
    record: Mapping[str, Any], task: str, where: str = "detectron2 results"
) -> dict[str, float] | None:
    """AP/AP50/AP75 of ``task`` in a nested or flattened record; None when it holds no such results."""
    if isinstance(record.get(task), Mapping):
        values, names = record[task], {metric: metric for metric in METRICS}
    elif f"{task}/AP" in record:
        values, names = record, {metric: f"{task}/{metric}" for metric in METRICS}
    else:
        return None
    result = {}
    for metric, name in names.items():
        value = values.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise InputError(f"{where}: {task} {metric} should be a finite number, got {value!r}")
        result[metric] = float(value)
    return result


def detectron2_metrics(path: str | os.PathLike[str], protocol: str) -> dict[str, float]:
    """The keys our torchvision path writes: AP/AP50/AP75 for VOC, ``{bbox,segm}_{AP,AP50,AP75}`` for COCO."""
    if protocol != "coco":
        return parse_detectron2_metrics(path)
    return {
        f"{task}_{name}": value
        for task in ("bbox", "segm")
        for name, value in parse_detectron2_metrics(path, task).items()
    }


MISSING_DETECTRON2 = (
    "detectron2 is not importable by {python}: the detectron2 backend runs inside the detection container "
    "(apptainer build containers/detection.sif containers/detection.def, then run it through "
    "`apptainer exec containers/detection.sif ...`) or in an environment with detectron2 installed "
    "(facebookresearch/detectron2 at the commit pinned in containers/detection.def). The default "
    "torchvision path (`python -m goodtransfer voc`) needs no detectron2."
)


def run_detectron2(
    spec: Mapping[str, Any],
    protocol: Protocol,
    checkpoint: str | os.PathLike[str],
    data_roots: Mapping[str, str | os.PathLike[str]],
    metrics_out: str | os.PathLike[str],
    work_dir: str | os.PathLike[str],
    *,
    norm: str = DEFAULT_NORM,
    opts: Sequence[str] = (),
    num_gpus: int = 1,
) -> dict[str, Any]:
    """Fine-tune and evaluate ``checkpoint`` on ``protocol`` with detectron2; write ``metrics_out``.

    ``data_roots`` maps detectron2's dataset folders to our roots: ``VOC2007`` (voc07, voc0712),
    ``VOC2012`` (voc0712), ``coco`` (coco); see ``detectron2_train``. ``work_dir`` receives the converted
    weights, ``config.yaml``, the ``datasets/`` links and ``train-<hash>/`` (detectron2's OUTPUT_DIR),
    named by a hash of the spec, options and weights, so a rerun resumes only the same run. ``opts``
    are detectron2 ``KEY VALUE`` overrides. Training runs in a child process: a crash there (CUDA, a
    killed worker) cannot leave a half-written metrics file here.
    """
    if importlib.util.find_spec("detectron2") is None:
        raise InputError(MISSING_DETECTRON2.format(python=sys.executable))
    began = time.time()
    state_dict, meta = load_any_backbone(checkpoint)
    depth = int(meta["arch"].removeprefix("resnet"))
    if depth not in DEPTHS:
        raise InputError(f"{checkpoint}: {meta['arch']}; detectron2 builds ResNet depths {list(DEPTHS)} only")
    run = {"spec": dict(spec), "protocol": protocol, "norm": norm, "opts": [str(o) for o in opts]}
    digest = spec_hash({**run, "weights": weights_digest(state_dict)})
    work = Path(work_dir)
    weights, config, output = work / "backbone.pkl", work / "config.yaml", work / f"train-{digest}"
    write_detectron2_checkpoint(state_dict, weights)
    train, test = dataset_names(spec, protocol)
    folders = sorted({dataset_folder(name) for name in train + test})
    if missing := [folder for folder in folders if folder not in data_roots]:
        raise InputError(f"data_roots: protocol {protocol} reads {folders}; no root given for {missing}")
    datasets = build_datasets_dir({folder: data_roots[folder] for folder in folders}, work / "datasets")
    text = emit_config(spec, protocol, str(weights.resolve()), str(output.resolve()), norm, depth)
    write_text(config, text)
    command = train_command(spec, protocol, config, output, datasets, opts, num_gpus)
    returncode = subprocess.run(command, env=_child_env(datasets), check=False).returncode
    if returncode != 0:
        raise RuntimeError(f"detectron2 training exited with status {returncode}; see {output / 'log.txt'}")
    result = {**detectron2_metrics(output / "metrics.json", protocol), "backend": "detectron2",
              "run": spec.get("run"), "config_hash": digest, "checkpoint": str(checkpoint),
              "iterations": int(spec["max_iter"]), "detectron2_output": str(output),
              "seconds": round(time.time() - began, 1)}  # fmt: skip
    write_json(metrics_out, result)
    return result


def train_command(
    spec: Mapping[str, Any],
    protocol: str,
    config: Path,
    output: Path,
    datasets: Path,
    opts: Sequence[str] = (),
    num_gpus: int = 1,
) -> list[str]:
    """The ``detectron2_train`` command line, always with ``--resume`` (a no-op without a checkpoint)."""
    command = [sys.executable, "-m", "goodtransfer.transfer.detectron2_train", "--config", str(config)]
    command += ["--output", str(output), "--datasets", str(datasets), "--num-gpus", str(num_gpus)]
    command += ["--device", str(spec.get("device", "auto"))]
    if protocol != "coco":
        command += ["--classes", *spec["classes"]]
    return [*command, "--resume", *[str(o) for o in opts]]  # --resume ends the --classes list


def _child_env(datasets: Path) -> dict[str, str]:
    """Our environment, plus the datasets folder, this goodtransfer first on the path, and our threads."""
    source = str(Path(__file__).resolve().parents[2])  # the folder that holds the goodtransfer package
    path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH", "")) if p)
    threads = str(torch.get_num_threads())  # what --threads set here; the child would take every core
    return {**os.environ, "DETECTRON2_DATASETS": str(datasets.resolve()), "PYTHONPATH": path,
            "OMP_NUM_THREADS": threads}  # fmt: skip
