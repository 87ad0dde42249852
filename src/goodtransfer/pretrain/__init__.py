"""Pretraining methods, looked up by name from a run's ``method`` key."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from goodtransfer.io import InputError
from goodtransfer.models.backbone import build_resnet
from goodtransfer.pretrain.moco import MoCo
from goodtransfer.pretrain.supervised import Supervised


def _build_moco(spec: Mapping[str, Any], num_classes: int) -> nn.Module:
    del num_classes
    p = spec["moco"]
    return MoCo(
        build_resnet(spec["arch"]),
        dim=p["dim"],
        K=p["K"],
        m=p["m"],
        T=p["T"],
        mlp=p["mlp"],
        shuffle_bn_splits=p["shuffle_bn_splits"],
    )


def _build_supervised(spec: Mapping[str, Any], num_classes: int) -> nn.Module:
    return Supervised(build_resnet(spec["arch"], num_classes=num_classes))


METHODS: dict[str, Callable[[Mapping[str, Any], int], nn.Module]] = {
    "moco": _build_moco,
    "supervised": _build_supervised,
}


def build_method(spec: Mapping[str, Any], num_classes: int) -> nn.Module:
    try:
        builder = METHODS[spec["method"]]
    except KeyError:
        raise InputError(
            f"pretraining method {spec['method']!r} is unknown; expected one of {sorted(METHODS)}"
        ) from None
    return builder(spec, num_classes)
