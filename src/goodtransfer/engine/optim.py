"""The optimizer's parameter groups, built once for every task as detectron2's ``solver/build.py`` does:
normalisation layers' parameters take ``weight_decay_norm`` (0 in MoCo's detectron2 configs), the rest
``weight_decay``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm)


def parameter_groups(model: nn.Module, weight_decay: float, weight_decay_norm: float) -> list[dict[str, Any]]:
    """Two groups of trainable parameters: norm layers' (``weight_decay_norm``) and all others."""
    norm = {id(p) for m in model.modules() if isinstance(m, NORM_TYPES) for p in m.parameters()}
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if id(p) not in norm], "weight_decay": weight_decay},
        {"params": [p for p in params if id(p) in norm], "weight_decay": weight_decay_norm},
    ]


def sgd(model: nn.Module, spec: Mapping[str, Any], lr_key: str = "base_lr") -> torch.optim.SGD:
    """SGD with momentum over ``parameter_groups``; without ``weight_decay_norm`` in the spec, norm layers
    decay like every other parameter (torchvision's reference scripts, the project's VOC recipe so far)."""
    decay = spec["weight_decay"]
    groups = parameter_groups(model, decay, spec.get("weight_decay_norm", decay))
    return torch.optim.SGD(groups, lr=spec[lr_key], momentum=spec["momentum"])
