"""MoCo (He et al. 2020; v2: Chen et al. 2020): a query encoder, a momentum key encoder, a queue of keys.

Names follow the paper: ``K`` queue size, ``m`` key-encoder momentum, ``T`` softmax temperature. The
queue also stores each key's label (-1 for the random initial keys); MoCo ignores it, Exemplar uses it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import ResNet

from goodtransfer.models.backbone import feature_dim
from goodtransfer.pretrain import distributed as ddp
from goodtransfer.pretrain.shuffle_bn import batchnorm_splits, split_batchnorms


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
        if shuffle_bn_splits > 1:
            split_batchnorms(encoder)  # the same state_dict keys: checkpoints and converters see BatchNorm2d
        self.encoder_q = encoder
        self.encoder_k = copy.deepcopy(encoder)
        for param in self.encoder_k.parameters():
            param.requires_grad = False
        self.register_buffer("queue", F.normalize(torch.randn(dim, K), dim=0))
        self.register_buffer("queue_labels", torch.full((K,), -1, dtype=torch.long))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @property
    def backbone(self) -> ResNet:
        return self.encoder_q

    @torch.no_grad()
    def momentum_update_key_encoder(self) -> None:
        for param_q, param_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters(), strict=True):
            param_k.mul_(self.m).add_(param_q.detach(), alpha=1.0 - self.m)

    @torch.no_grad()
    def dequeue_and_enqueue(self, keys: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """Replace the oldest entries with every rank's keys; K must be a multiple of the global batch."""
        keys = ddp.concat_all_gather(keys)
        if labels is None:
            labels = torch.full((keys.shape[0],), -1, dtype=torch.long, device=keys.device)
        else:
            labels = ddp.concat_all_gather(labels)
        batch, ptr = keys.shape[0], int(self.queue_ptr)
        if self.K % batch != 0:
            raise ValueError(f"MoCo queue K={self.K} is not a multiple of the (global) key batch {batch}")
        self.queue[:, ptr : ptr + batch] = keys.T.to(self.queue.dtype)
        self.queue_labels[ptr : ptr + batch] = labels
        self.queue_ptr[0] = (ptr + batch) % self.K

    def _forward_split(self, encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """One process standing in for ``shuffle_bn_splits`` GPUs: convolutions see the whole batch,
        BatchNorm normalises each chunk with its own statistics (``shuffle_bn``)."""
        if self.shuffle_bn_splits == 1 or ddp.is_distributed():
            return encoder(images)
        with batchnorm_splits(encoder, self.shuffle_bn_splits):
            return encoder(images)

    def encode_queries(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self._forward_split(self.encoder_q, images).float(), dim=1)

    @torch.no_grad()
    def encode_keys(self, images: torch.Tensor) -> torch.Tensor:
        """Shuffle-BN: keys are computed on a permuted batch so a query and its key never share BN stats."""
        if ddp.is_distributed():
            shuffled, order = ddp.shuffle_across_ranks(images)
            return F.normalize(ddp.unshuffle_across_ranks(self.encoder_k(shuffled).float(), order), dim=1)
        order = torch.randperm(images.shape[0], device=images.device)
        keys = self._forward_split(self.encoder_k, images[order])[torch.argsort(order)]
        return F.normalize(keys.float(), dim=1)

    def logits_and_labels(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``[l_pos | l_neg]`` / T, positives in column 0, as in the MoCo paper's Algorithm 1."""
        l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)
        l_neg = torch.einsum("nc,ck->nk", q, self.queue.clone().detach())
        logits = torch.cat([l_pos, l_neg], dim=1) / self.T
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        return logits, labels

    def contrastive_loss(self, q: torch.Tensor, k: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """InfoNCE of each query against its key and the queue (MoCo ignores the class labels)."""
        del targets
        logits, labels = self.logits_and_labels(q, k)
        return F.cross_entropy(logits, labels)

    def forward(self, views: Sequence[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        """The training loss of one batch of (query view, key view) pairs."""
        q = self.encode_queries(views[0])
        with torch.no_grad():
            self.momentum_update_key_encoder()
            k = self.encode_keys(views[1])
        loss = self.contrastive_loss(q, k, targets)
        self.dequeue_and_enqueue(k, targets)
        return loss
