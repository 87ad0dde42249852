"""torchvision ResNet backbones, named as in torchvision so checkpoints stay torchvision-style.

An arch is a torchvision depth (``resnet50``), optionally with ``-w<width>``: the stem and stage widths
w, 2w, 4w, 8w (times the block's expansion) instead of 64, 128, 256, 512. ``resnet10-w32`` is the embedded
default's; every key and the initialisation are torchvision's, only the shapes are narrower.
"""

from __future__ import annotations

import re

import torch
from torch import nn
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
TORCHVISION_WIDTH = 64
# One name per network: torchvision's width is the plain depth (resnet10, never resnet10-w64), no leading 0.
_ARCH_NAME = re.compile(rf"(?P<depth>resnet\d+)(?:-w(?!{TORCHVISION_WIDTH}$)(?P<width>[1-9]\d*))?")


def parse_arch(arch: str) -> tuple[str, int]:
    """``resnet10-w32`` -> (``resnet10``, 32); a plain depth has torchvision's width 64."""
    match = _ARCH_NAME.fullmatch(arch)
    if match is None or match["depth"] not in _ARCHS:
        raise InputError(
            f"backbone arch {arch!r} is unknown; expected one of {sorted(_ARCHS)}, optionally with a "
            f"stem width other than {TORCHVISION_WIDTH} as -w<channels> (e.g. resnet10-w32)"
        )
    return match["depth"], int(match["width"] or TORCHVISION_WIDTH)


def arch_name(depth: str, width: int) -> str:
    """The inverse of ``parse_arch``: the plain depth at torchvision's width."""
    return depth if width == TORCHVISION_WIDTH else f"{depth}-w{width}"


class ScaledResNet(ResNet):
    """torchvision's ResNet with stage widths w, 2w, 4w, 8w: the same modules, keys and initialisation."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: list[int], width: int,
                 num_classes: int) -> None:  # fmt: skip
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes, self.dilation, self.groups, self.base_width = width, 1, 1, TORCHVISION_WIDTH
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, 2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * width, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 8 * width, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8 * width * block.expansion, num_classes)
        for module in self.modules():  # torchvision's initialisation, zero_init_residual off
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.constant_(module.weight, 1)
                nn.init.constant_(module.bias, 0)


def build_resnet(arch: str, num_classes: int = 1000) -> ResNet:
    """A randomly initialised torchvision ResNet (zero-init of residual BN off, as in MoCo)."""
    depth, width = parse_arch(arch)
    block, layers = _ARCHS[depth]
    if width == TORCHVISION_WIDTH:
        return ResNet(block, layers, num_classes=num_classes)  # torchvision's own, bit for bit
    return ScaledResNet(block, layers, width, num_classes)


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
