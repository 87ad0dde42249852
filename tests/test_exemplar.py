"""Exemplar removes exactly the same-label keys from the denominator; SupCon pulls them in instead."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from goodtransfer.models.backbone import build_resnet
from goodtransfer.pretrain.exemplar import Exemplar
from goodtransfer.pretrain.moco import MoCo

# Queue of 4 unit keys in 2-d (padded to dim 4): labels 7, 5, 7, -1 (a random initial key).
QUEUE = torch.tensor([[1.0, 0.0, 0.6, 0.0], [0.0, 1.0, 0.8, -1.0], [0.0] * 4, [0.0] * 4])
QUEUE_LABELS = torch.tensor([7, 5, 7, -1])
Q = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
K_POS = torch.tensor([[0.0, 1.0, 0.0, 0.0]])
T = 0.5


def _model(cls, **kwargs):
    torch.manual_seed(0)
    model = cls(build_resnet("resnet10"), dim=4, K=4, m=0.9, T=T, mlp=False, **kwargs)
    model.queue.copy_(QUEUE)
    model.queue_labels.copy_(QUEUE_LABELS)
    return model


def test_exemplar_masks_same_class_keys_and_nothing_else():
    model = _model(Exemplar)
    assert model.same_class_keys(torch.tensor([7])).tolist() == [[True, False, True, False]]
    assert model.same_class_keys(torch.tensor([-2])).tolist() == [[False, False, False, False]]


def test_exemplar_loss_drops_same_label_keys_from_the_denominator():
    # q.k+ = 0, q.queue = [1, 0, 0.6, 0]; label 7 removes keys 0 and 2, leaving keys 1 and 3 (both 0).
    loss = _model(Exemplar).contrastive_loss(Q, K_POS, torch.tensor([7]))
    expected = -math.log(1.0 / (1.0 + 1.0 + 1.0))  # e^0 / (e^0 + e^0 + e^0)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_exemplar_equals_moco_when_all_labels_differ():
    targets = torch.tensor([3])
    exemplar = _model(Exemplar).contrastive_loss(Q, K_POS, targets)
    moco = _model(MoCo).contrastive_loss(Q, K_POS, targets)
    # MoCo by hand: logits [0 | 1, 0, 0.6, 0] / T, so -log(e^0 / (3 e^0 + e^(1/T) + e^(0.6/T)))
    expected = -math.log(1.0 / (3.0 + math.exp(1 / T) + math.exp(0.6 / T)))
    assert moco.item() == pytest.approx(expected, rel=1e-6)
    assert exemplar.item() == pytest.approx(moco.item(), rel=1e-6)


def test_supcon_treats_same_label_keys_as_positives_and_differs_from_exemplar():
    targets = torch.tensor([7])
    supcon = _model(Exemplar, supcon=True).contrastive_loss(Q, K_POS, targets)
    exemplar = _model(Exemplar).contrastive_loss(Q, K_POS, targets)
    logits = torch.tensor([0.0, 1.0, 0.0, 0.6, 0.0]) / T  # [own key | queue]
    log_prob = F.log_softmax(logits, dim=0)
    expected = -(log_prob[0] + log_prob[1] + log_prob[3]) / 3  # own key + keys 0 and 2 (label 7)
    assert supcon.item() == pytest.approx(expected.item(), rel=1e-6)
    assert supcon.item() != pytest.approx(exemplar.item(), rel=1e-3)


def test_labels_follow_their_keys_through_enqueue():
    model = _model(Exemplar)
    model.queue_ptr.zero_()
    model.dequeue_and_enqueue(torch.eye(4)[:2], torch.tensor([1, 2]))
    assert model.queue_labels.tolist() == [1, 2, 7, -1]
    model.dequeue_and_enqueue(torch.eye(4)[2:], torch.tensor([3, 4]))
    assert model.queue_labels.tolist() == [1, 2, 3, 4] and int(model.queue_ptr) == 0
    assert torch.equal(model.queue[:, 2], torch.eye(4)[2])
