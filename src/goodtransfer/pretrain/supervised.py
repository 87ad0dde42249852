"""Supervised pretraining: cross-entropy on the dataset's image-level labels (two classes or more:
``build_method`` refuses a one-class dataset such as COCO or Cityscapes images; use method ``task``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import ResNet

from goodtransfer.device import Compute
from goodtransfer.io import InputError


class Supervised(nn.Module):
    two_views = False

    def __init__(self, encoder: ResNet) -> None:
        super().__init__()
        self.encoder = encoder

    @property
    def backbone(self) -> ResNet:
        return self.encoder

    def forward(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The training loss of one batch."""
        return F.cross_entropy(self.encoder(images).float(), targets)


@torch.no_grad()
def classifier_top1(encoder: ResNet, batches: Iterable[Any], compute: Compute) -> tuple[float, int]:
    """Top-1 (%) of the network's own classifier (its ``fc``) on held-out ``batches`` of (images, labels) of
    the trained classes, and how many images; the paper's supervised ImageNet accuracy may be this number."""
    was_training = encoder.training
    encoder.eval()
    correct = total = 0
    for images, targets in batches:
        with compute.autocast():
            predicted = encoder(compute.images(images)).argmax(dim=1).cpu()
        correct += int((predicted == targets).sum())
        total += len(targets)
    encoder.train(was_training)
    if total == 0:
        raise InputError("the held-out split of the supervised run's classes is empty; expected images")
    return 100.0 * correct / total, total
