"""torchvision ResNet backbones, named as in torchvision so checkpoints stay torchvision-style."""

from __future__ import annotations

import torch
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from goodtransfer.io import InputError

# Depth -> (block, blocks per stage). resnet10 is a small torchvision ResNet for the embedded default.
_ARCHS: dict[str, tuple[type[BasicBlock] | type[Bottleneck], list[int]]] = {
    "resnet10": (BasicBlock, [1, 1, 1, 1]),
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
    "resnet101": (Bottleneck, [3, 4, 23, 3]),
}


def build_resnet(arch: str, num_classes: int = 1000) -> ResNet:
    """A randomly initialised torchvision ResNet (zero-init of residual BN off, as in MoCo)."""
    if arch not in _ARCHS:
        raise InputError(f"backbone arch {arch!r} is unknown; expected one of {sorted(_ARCHS)}")
    block, layers = _ARCHS[arch]
    return ResNet(block, layers, num_classes=num_classes)


def feature_dim(model: ResNet) -> int:
    """Width of the globally pooled res5 feature (2048 for ResNet-50)."""
    return model.fc.in_features


def pooled_features(model: ResNet, images: torch.Tensor) -> torch.Tensor:
    """Global-average-pooled last-stage features, the input of ``fc``."""
    x = model.conv1(images)
    x = model.maxpool(model.relu(model.bn1(x)))
    x = model.layer4(model.layer3(model.layer2(model.layer1(x))))
    return torch.flatten(model.avgpool(x), 1)


def backbone_state_dict(model: ResNet) -> dict[str, torch.Tensor]:
    """The backbone's weights without the classifier, as MoCo's released checkpoints keep them."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}
