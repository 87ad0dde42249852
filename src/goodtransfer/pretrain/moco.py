"""MoCo (He et al. 2020; v2: Chen et al. 2020): a query encoder, a momentum key encoder, a queue of keys.

Names follow the paper: ``K`` queue size, ``m`` key-encoder momentum, ``T`` softmax temperature.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import ResNet

from goodtransfer.models.backbone import feature_dim


def projection_head(in_dim: int, dim: int, mlp: bool) -> nn.Module:
    """MoCo-v1's linear 128-d head, or MoCo-v2's 2-layer MLP (in_dim -> in_dim -> dim)."""
    if mlp:
        return nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(inplace=True), nn.Linear(in_dim, dim))
    return nn.Linear(in_dim, dim)


class MoCo(nn.Module):
    """Momentum contrast with InfoNCE against a FIFO queue of keys."""

    two_views = True

    def __init__(
        self,
        encoder: ResNet,
        dim: int = 128,
        K: int = 65536,
        m: float = 0.999,
        T: float = 0.2,
        mlp: bool = True,
        shuffle_bn_splits: int = 1,
    ) -> None:
        super().__init__()
        self.K, self.m, self.T = K, m, T
        self.shuffle_bn_splits = shuffle_bn_splits
        encoder.fc = projection_head(feature_dim(encoder), dim, mlp)
        self.encoder_q = encoder
        self.encoder_k = copy.deepcopy(encoder)
        for param in self.encoder_k.parameters():
            param.requires_grad = False
        self.register_buffer("queue", F.normalize(torch.randn(dim, K), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @property
    def backbone(self) -> ResNet:
        return self.encoder_q

    @torch.no_grad()
    def momentum_update_key_encoder(self) -> None:
        for param_q, param_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters(), strict=True):
            param_k.mul_(self.m).add_(param_q.detach(), alpha=1.0 - self.m)

    @torch.no_grad()
    def dequeue_and_enqueue(self, keys: torch.Tensor) -> None:
        """Replace the oldest ``len(keys)`` queue entries; K must be a multiple of the batch size."""
        batch = keys.shape[0]
        ptr = int(self.queue_ptr)
        if self.K % batch != 0:
            raise ValueError(f"MoCo queue K={self.K} is not a multiple of the key batch {batch}")
        self.queue[:, ptr : ptr + batch] = keys.T.to(self.queue.dtype)
        self.queue_ptr[0] = (ptr + batch) % self.K

    def _encode(self, encoder: nn.Module, images: torch.Tensor, order: torch.Tensor | None) -> torch.Tensor:
        """Forward in ``shuffle_bn_splits`` chunks so BatchNorm sees per-'GPU' statistics.

        With ``order`` (a permutation) the chunks hold shuffled samples: the one-process equivalent of
        MoCo's shuffle-BN, which keeps a query and its key out of the same BN batch.
        """
        if order is not None:
            images = images[order]
        chunks = images.chunk(self.shuffle_bn_splits) if self.shuffle_bn_splits > 1 else (images,)
        out = torch.cat([encoder(chunk) for chunk in chunks])
        if order is not None:
            out = out[torch.argsort(order)]
        return F.normalize(out.float(), dim=1)

    def logits_and_labels(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``[l_pos | l_neg]`` / T, positives in column 0, as in the MoCo paper's Algorithm 1."""
        l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)
        l_neg = torch.einsum("nc,ck->nk", q, self.queue.clone().detach())
        logits = torch.cat([l_pos, l_neg], dim=1) / self.T
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        return logits, labels

    def forward(self, im_q: torch.Tensor, im_k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = self._encode(self.encoder_q, im_q, order=None)
        with torch.no_grad():
            self.momentum_update_key_encoder()
            order = torch.randperm(im_k.shape[0], device=im_k.device)
            k = self._encode(self.encoder_k, im_k, order=order)
        logits, labels = self.logits_and_labels(q, k)
        self.dequeue_and_enqueue(k)
        return logits, labels

    def loss(self, views: Sequence[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        del targets  # instance discrimination uses no labels
        logits, labels = self(views[0], views[1])
        return F.cross_entropy(logits.float(), labels)
