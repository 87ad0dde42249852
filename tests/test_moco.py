"""MoCo's defining behaviour on small tensors: queue, momentum update, logits layout, loss value."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from goodtransfer.models.backbone import build_resnet
from goodtransfer.pretrain.moco import MoCo
from goodtransfer.pretrain.shuffle_bn import (
    SplitBatchNorm2d,
    chunked_forward,
    running_stats_frozen,
    split_batchnorms,
)


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
    tracking = copy.deepcopy(moco.encoder_q)  # a plain forward per chunk (one split): the chunk's statistics
    expected = torch.cat([tracking(chunk) for chunk in images.chunk(2)])
    torch.testing.assert_close(moco._forward_split(moco.encoder_q, images), expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(expected, tracking(images), atol=1e-3)  # one BN batch would differ


class ChunkedMoCo(MoCo):
    """The shuffle-BN path before SplitBatchNorm2d: each chunk a whole encoder call of its own, the first
    updating the running statistics."""

    def __init__(self, splits: int, **kwargs) -> None:
        super().__init__(**kwargs, shuffle_bn_splits=1)
        self.splits = splits

    def _forward_split(self, encoder: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
        return chunked_forward(encoder, images, self.splits)


def _step(moco: MoCo, views: list[torch.Tensor]) -> list[torch.Tensor]:
    """Loss and query-encoder gradients of one SGD step; the key shuffle is seeded alike for both paths."""
    optimizer = torch.optim.SGD([p for p in moco.parameters() if p.requires_grad], lr=0.1)
    torch.manual_seed(7)
    loss = moco(views, torch.arange(views[0].shape[0]))
    loss.backward()
    optimizer.step()
    return [loss.detach(), *(p.grad for p in moco.encoder_q.parameters())]


@pytest.mark.parametrize("splits", [2, 4])
def test_split_batchnorm_step_equals_the_chunk_by_chunk_step(splits: int):
    split = small_moco(K=32, splits=splits)
    chunked = ChunkedMoCo(splits, encoder=build_resnet("resnet10"), dim=4, K=32, m=0.9, T=0.5, mlp=True)
    chunked.load_state_dict(split.state_dict())
    views = [torch.randn(16, 3, 32, 32), torch.randn(16, 3, 32, 32)]
    got, expected = _step(split, views), _step(chunked, views)
    assert torch.equal(got[0], expected[0])  # the same kernels on the same chunks: a bitwise forward
    for a, b in zip(got, expected, strict=True):  # fp32 backward: weight gradients summed in another order
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    state, reference = split.state_dict(), chunked.state_dict()
    for name in state:  # updated weights, running statistics of both encoders, enqueued keys
        torch.testing.assert_close(state[name], reference[name], rtol=1e-4, atol=1e-5, msg=name)
    assert all(int(v) == 1 for k, v in state.items() if k.endswith("num_batches_tracked"))


def test_split_batchnorm_keeps_batchnorm2d_state_dict_keys():
    split, plain = small_moco(splits=8), small_moco(splits=1)
    assert isinstance(split.encoder_q.bn1, SplitBatchNorm2d)
    assert isinstance(split.encoder_k.layer1[0].bn2, SplitBatchNorm2d)
    assert type(plain.encoder_q.bn1) is torch.nn.BatchNorm2d
    assert list(split.state_dict()) == list(plain.state_dict())
    for name, value in plain.state_dict().items():  # the same initial values too (same seed)
        assert torch.equal(split.state_dict()[name], value), name


def test_split_batchnorm_splits_only_inside_the_moco_encoders():
    moco = small_moco(splits=2)
    images = torch.randn(4, 3, 32, 32)
    plain = copy.deepcopy(moco.encoder_q)
    with torch.no_grad():  # the backbone used elsewhere (readouts, PreciseBN) is an ordinary ResNet
        torch.testing.assert_close(moco.backbone(images), plain(images))
    assert all(m.splits == 1 for m in moco.modules() if isinstance(m, SplitBatchNorm2d))


def test_split_batchnorms_refuses_other_batchnorm_types():
    with pytest.raises(TypeError, match="BatchNorm1d"):
        split_batchnorms(torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3)))


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("channels_last", [False, True])
def test_split_batchnorm_layer_equals_batchnorm2d_on_each_chunk(momentum: float | None, channels_last: bool):
    torch.manual_seed(0)
    reference = torch.nn.BatchNorm2d(5, momentum=momentum).double()
    with torch.no_grad():
        reference.weight.uniform_(0.5, 1.5)
        reference.bias.uniform_(-1.0, 1.0)
    split = split_batchnorms(torch.nn.Sequential(copy.deepcopy(reference)))[0]
    split.splits = 3
    images = torch.randn(6, 5, 4, 4, dtype=torch.double) * 2 + 1
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    grad = torch.randn_like(images)
    for _ in range(2):  # the second step: cumulative averaging (momentum None) counts the steps
        x, y = images.clone().requires_grad_(), images.clone().requires_grad_()
        out = split(x)
        first, *rest = y.chunk(3)
        expected = [reference(first)]
        with running_stats_frozen(reference):
            expected += [reference(chunk) for chunk in rest]
        expected = torch.cat(expected)
        out.backward(grad)
        expected.backward(grad)
        assert out.is_contiguous(memory_format=torch.channels_last) == channels_last
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(x.grad, y.grad, rtol=1e-12, atol=1e-12)
    for name, value in reference.state_dict().items():  # running statistics and the step count
        torch.testing.assert_close(split.state_dict()[name], value, rtol=1e-12, atol=1e-12, msg=name)
    for ours, theirs in zip(split.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-12, atol=1e-12)


def test_split_batchnorm_step_under_bf16_autocast_and_channels_last_follows_the_chunked_step():
    split = small_moco(K=32, splits=2).to(memory_format=torch.channels_last)
    chunked = ChunkedMoCo(2, encoder=build_resnet("resnet10"), dim=4, K=32, m=0.9, T=0.5, mlp=True)
    chunked.load_state_dict(split.state_dict())
    chunked = chunked.to(memory_format=torch.channels_last)
    views = [torch.randn(8, 3, 32, 32).contiguous(memory_format=torch.channels_last) for _ in range(2)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, expected = _step(split, views), _step(chunked, views)
    torch.testing.assert_close(got[0], expected[0], rtol=1e-2, atol=1e-2)  # bf16 activations
    for a, b in zip(got[1:], expected[1:], strict=True):
        assert a.dtype == b.dtype == torch.float32
        assert (a - b).norm() <= 0.05 * b.norm() + 1e-6
