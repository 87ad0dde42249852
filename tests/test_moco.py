"""MoCo's defining behaviour on small tensors: queue, momentum update, logits layout, loss value."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from goodtransfer.models.backbone import build_resnet
from goodtransfer.pretrain.moco import MoCo


def small_moco(K: int = 8, m: float = 0.9, T: float = 0.5, splits: int = 1) -> MoCo:
    torch.manual_seed(0)
    return MoCo(build_resnet("resnet10"), dim=4, K=K, m=m, T=T, mlp=True, shuffle_bn_splits=splits)


def test_key_encoder_starts_as_a_frozen_copy_of_the_query_encoder():
    moco = small_moco()
    for q, k in zip(moco.encoder_q.parameters(), moco.encoder_k.parameters(), strict=True):
        assert torch.equal(q, k)
        assert not k.requires_grad


def test_momentum_update_moves_key_weights_by_one_minus_m():
    moco = small_moco(m=0.9)
    with torch.no_grad():
        for param in moco.encoder_q.parameters():
            param.add_(1.0)
    before = [k.clone() for k in moco.encoder_k.parameters()]
    moco.momentum_update_key_encoder()
    for old, q, k in zip(before, moco.encoder_q.parameters(), moco.encoder_k.parameters(), strict=True):
        torch.testing.assert_close(k, 0.9 * old + 0.1 * q)


def test_enqueue_writes_keys_as_columns_and_advances_pointer_cyclically():
    moco = small_moco(K=8)
    keys = torch.arange(12, dtype=torch.float32).reshape(3, 4)  # 3 keys of dim 4
    with pytest.raises(ValueError, match="multiple"):
        moco.dequeue_and_enqueue(keys)  # 8 % 3 != 0
    first, second = torch.ones(4, 4), 2 * torch.ones(4, 4)
    old_tail = moco.queue[:, 4:].clone()
    moco.dequeue_and_enqueue(first)
    assert int(moco.queue_ptr) == 4
    assert torch.equal(moco.queue[:, :4], first.T)
    assert torch.equal(moco.queue[:, 4:], old_tail)
    moco.dequeue_and_enqueue(second)
    assert int(moco.queue_ptr) == 0
    moco.dequeue_and_enqueue(3 * torch.ones(4, 4))  # wraps: oldest entries replaced first
    assert torch.equal(moco.queue[:, :4], 3 * torch.ones(4, 4))
    assert torch.equal(moco.queue[:, 4:], second.T)


def test_logits_put_positive_first_and_divide_by_temperature():
    moco = small_moco(K=2, T=0.5)
    moco.queue.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]]))
    q = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    k = torch.tensor([[0.6, 0.8, 0.0, 0.0]])
    logits, labels = moco.logits_and_labels(q, k)
    # l_pos = q.k = 0.6; l_neg = q.queue = [1, 0]; all / T = 0.5
    torch.testing.assert_close(logits, torch.tensor([[1.2, 2.0, 0.0]]))
    assert labels.tolist() == [0]
    # InfoNCE by hand: -log(e^1.2 / (e^1.2 + e^2 + e^0))
    expected = -math.log(math.exp(1.2) / (math.exp(1.2) + math.exp(2.0) + 1.0))
    assert F.cross_entropy(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_forward_enqueues_normalised_keys_with_their_labels():
    moco = small_moco(K=8, splits=2)
    images = torch.randn(4, 3, 32, 32)
    loss = moco([images, images.flip(-1)], torch.tensor([3, 1, 3, 0]))
    assert loss.ndim == 0 and loss.requires_grad
    assert int(moco.queue_ptr) == 4
    torch.testing.assert_close(moco.queue[:, :4].norm(dim=0), torch.ones(4))
    assert moco.queue_labels.tolist() == [3, 1, 3, 0, -1, -1, -1, -1]


def test_shuffled_key_forward_returns_keys_in_input_order():
    moco = small_moco(splits=1).eval()  # eval BN: chunking and shuffling must not change keys
    moco.shuffle_bn_splits = 2
    images = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        plain = F.normalize(moco.encoder_k(images), dim=1)
        shuffled = moco.encode_keys(images)
    torch.testing.assert_close(shuffled, plain, rtol=1e-4, atol=1e-5)


def _bn_buffers(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    names = ("running_mean", "running_var", "num_batches_tracked")
    return {key: value for key, value in module.state_dict().items() if key.rsplit(".", 1)[-1] in names}


def test_shuffle_bn_updates_running_statistics_once_per_step_from_the_first_chunk():
    # MoCo on 2 GPUs: each GPU's BN updates its running stats once per step from its own chunk; the
    # checkpoint keeps GPU 0's, i.e. one update from the first chunk (of the shuffled batch for keys).
    moco = small_moco(K=8, splits=2)
    reference = copy.deepcopy(moco)
    queries, keys = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    torch.manual_seed(1)
    moco([queries, keys], torch.tensor([0, 1, 2, 3]))
    torch.manual_seed(1)  # the same key shuffle
    with torch.no_grad():
        reference.momentum_update_key_encoder()
        order = torch.randperm(4)
        reference.encoder_k(keys[order][:2])
        reference.encoder_q(queries[:2])
    for encoder in ("encoder_k", "encoder_q"):
        got, expected = _bn_buffers(getattr(moco, encoder)), _bn_buffers(getattr(reference, encoder))
        assert got.keys() == expected.keys() and len(got) > 0
        for name in got:
            assert torch.equal(got[name], expected[name]), f"{encoder}.{name}"
        assert all(int(v) == 1 for k, v in got.items() if k.endswith("num_batches_tracked"))


def test_shuffle_bn_normalises_each_chunk_with_its_own_batch_statistics():
    moco = small_moco(K=8, splits=2)
    images = torch.randn(4, 3, 32, 32)
    tracking = copy.deepcopy(moco.encoder_q)  # every chunk updates its running stats: outputs unchanged
    expected = torch.cat([tracking(chunk) for chunk in images.chunk(2)])
    assert torch.equal(moco._forward_chunks(moco.encoder_q, images), expected)
    assert not torch.allclose(expected, tracking(images), atol=1e-3)  # one BN batch would differ
