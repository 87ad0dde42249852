"""Exemplar (the paper's Sec. 3): MoCo whose negatives exclude keys of the query's own class.

For query q_i with label y_i the InfoNCE denominator keeps only queue keys with y_j != y_i: same-class
instances are neither pulled together nor pushed apart, and the positive stays the other view of the
same image. With ``supcon`` the same-class keys become extra positives instead (supervised contrastive
learning, Khosla et al. 2020), the intra-class invariance the paper argues against.
"""

from __future__ import annotations

import torch

from goodtransfer.pretrain.moco import MoCo


class Exemplar(MoCo):
    def __init__(self, *args, supcon: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.supcon = supcon

    def same_class_keys(self, targets: torch.Tensor) -> torch.Tensor:
        """(N, K) mask of queue keys that share the query's label (random initial keys have label -1)."""
        return targets[:, None] == self.queue_labels[None, :]

    def contrastive_loss(self, q: torch.Tensor, k: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits, _ = self.logits_and_labels(q, k)
        same = self.same_class_keys(targets)
        if self.supcon:
            return supcon_loss(logits, same)
        # Masked to -inf: removed from the softmax denominator, not pushed away.
        negatives = logits[:, 1:].masked_fill(same, float("-inf"))
        logits = torch.cat([logits[:, :1], negatives], dim=1)
        return torch.nn.functional.cross_entropy(logits, torch.zeros_like(targets))


def supcon_loss(logits: torch.Tensor, same_class: torch.Tensor) -> torch.Tensor:
    """Mean over positives (own key + same-class queue keys) of -log softmax over all keys."""
    positives = torch.cat([torch.ones_like(same_class[:, :1]), same_class], dim=1).float()
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    return (-(log_prob * positives).sum(dim=1) / positives.sum(dim=1)).mean()
