"""Backbone names: torchvision's ResNets, and narrowed ones (``resnet10-w32``) with the same keys and init."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import resnet18
from torchvision.models.resnet import ResNet

from goodtransfer.io import InputError
from goodtransfer.models.backbone import build_resnet, feature_dim, parse_arch, pooled_features


def test_a_plain_depth_is_torchvisions_resnet_bit_for_bit():
    torch.manual_seed(0)
    ours = build_resnet("resnet18")
    torch.manual_seed(0)
    theirs = resnet18()
    assert type(ours) is ResNet
    ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
    assert list(ours_state) == list(theirs_state)
    assert all(torch.equal(ours_state[key], theirs_state[key]) for key in ours_state)


NARROW = [("resnet10-w32", 32, 256), ("resnet50-w16", 16, 512)]


@pytest.mark.parametrize(("arch", "width", "features"), NARROW)
def test_a_narrowed_resnet_has_torchvisions_keys_at_the_stated_widths(arch, width, features):
    wide, narrow = build_resnet(parse_arch(arch)[0]), build_resnet(arch)
    assert list(narrow.state_dict()) == list(wide.state_dict())
    assert narrow.conv1.weight.shape == (width, 3, 7, 7)
    assert feature_dim(narrow) == features
    assert pooled_features(narrow.eval(), torch.randn(2, 3, 32, 32)).shape == (2, features)


def test_a_narrowed_resnet_is_initialised_as_torchvision_initialises():
    torch.manual_seed(0)
    model = build_resnet("resnet10-w32")
    conv = model.layer2[0].conv1.weight  # kaiming normal, fan_out, relu: std sqrt(2 / (64 * 9))
    assert conv.std().item() == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.1)
    assert torch.equal(model.bn1.weight, torch.ones(32)) and torch.equal(model.bn1.bias, torch.zeros(32))


@pytest.mark.parametrize(
    "arch", ["resnet12", "resnet10-w0", "resnet10-w032", "resnet10-w64", "resnet10-32", "resnet10-w", "vgg16"]
)
def test_an_unknown_arch_fails_saying_what_is_expected(arch):
    expected = rf"backbone arch '{arch}' is unknown; expected one of .*-w<channels>"
    with pytest.raises(InputError, match=expected):
        build_resnet(arch)
