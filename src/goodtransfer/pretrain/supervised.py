"""Supervised pretraining: cross-entropy on the dataset's image-level labels (two classes or more:
``build_method`` refuses a one-class dataset such as COCO or Cityscapes images; use method ``task``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import ResNet


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
