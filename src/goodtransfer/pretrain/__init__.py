"""Pretraining methods, looked up by name from a run's ``method`` key."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from goodtransfer.io import InputError
from goodtransfer.models.backbone import build_resnet
from goodtransfer.pretrain.exemplar import Exemplar
from goodtransfer.pretrain.moco import MoCo
from goodtransfer.pretrain.supervised import Supervised


def _moco_arguments(spec: Mapping[str, Any]) -> dict[str, Any]:
    p = spec["moco"]
    keys = ("dim", "K", "m", "T", "mlp", "shuffle_bn_splits")
    return {"encoder": build_resnet(spec["arch"]), **{key: p[key] for key in keys}}


def _build_moco(spec: Mapping[str, Any], num_classes: int) -> nn.Module:
    return MoCo(**_moco_arguments(spec))


def _build_exemplar(spec: Mapping[str, Any], num_classes: int) -> nn.Module:
    return Exemplar(**_moco_arguments(spec))


def _build_supcon(spec: Mapping[str, Any], num_classes: int) -> nn.Module:
    return Exemplar(**_moco_arguments(spec), supcon=True)


def _build_supervised(spec: Mapping[str, Any], num_classes: int) -> nn.Module:
    return Supervised(build_resnet(spec["arch"], num_classes=num_classes))


METHODS: dict[str, Callable[[Mapping[str, Any], int], nn.Module]] = {
    "moco": _build_moco,
    "exemplar": _build_exemplar,
    "supcon": _build_supcon,
    "supervised": _build_supervised,
}


# Methods that learn from image-level class labels; on a one-class dataset their loss is meaningless.
LABELLED = ("supervised", "exemplar", "supcon")


def build_method(spec: Mapping[str, Any], num_classes: int) -> nn.Module:
    """The run's method for a dataset of ``num_classes`` image-level classes."""
    try:
        builder = METHODS[spec["method"]]
    except KeyError:
        raise InputError(
            f"pretraining method {spec['method']!r} is unknown; expected one of {sorted(METHODS)}"
        ) from None
    if spec["method"] in LABELLED and num_classes < 2:
        kind = spec.get("data_kind", "imagefolder")
        raise InputError(
            f"config: pretrain.runs.{spec.get('run')}: method {spec['method']!r} learns from image-level "
            f"class labels, but dataset {spec.get('dataset')!r} (kind {kind!r}) has a single class; use "
            "method 'task' to train a detector/segmenter on its boxes or pixel labels (Table 2's supervised "
            "COCO/Synthia rows), or method 'moco'"
        )
    return builder(spec, num_classes)
