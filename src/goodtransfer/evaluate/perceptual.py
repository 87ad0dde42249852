"""LPIPS-style perceptual distance (Zhang et al. 2018) from local weight files: nothing is downloaded.

    d(x, y) = sum_l mean_{h,w} sum_c w_lc (x_lchw / |x_l.hw| - y_lchw / |y_l.hw|)^2

where x_l are the activations of tapped layer l of a frozen network, unit-normalised over channels at each
position, and w_l are the learned linear weights, or 1 for every channel (the lpips package's uncalibrated
``lpips=False`` baseline) when no linear file is given. Images in [0, 1] are mapped to [-1, 1] and through
lpips's fixed per-channel shift/scale before the network.

Weight files, read with ``weights_only=True`` (paths come from the config, never from the internet):

* ``lpips_weights``: a torchvision state_dict of the feature network; only ``features.*`` is used, so the
  full ImageNet file (``alexnet-owt-7be5be79.pth``, ``vgg16-397923af.pth``,
  ``squeezenet1_1-b8a52dc0.pth``) or just its ``features.*`` part both work.
* ``lpips_linear`` (optional): the lpips package's ``weights/v0.1/{alex,vgg,squeeze}.pth``, a dict
  ``{"lin0.model.1.weight": (1, C_0, 1, 1), "lin1.model.1.weight": ..., ...}``, one bias-free 1x1 conv per
  tapped layer (``model.1`` because lpips wraps it as ``Sequential(Dropout, Conv2d)``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision import models

from goodtransfer.checkpoint import load_torch, save_torch
from goodtransfer.io import InputError
from goodtransfer.publish import verify_named_digest

# lpips's ScalingLayer: applied to images already mapped to [-1, 1].
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_EPS = 1e-10  # lpips's normalize_tensor


@dataclass(frozen=True)
class Network:
    build: Callable[[], nn.Module]
    taps: tuple[int, ...]  # indices into ``.features`` whose outputs are compared (the ReLU outputs)
    channels: tuple[int, ...]
    torchvision_file: str


NETWORKS = {  # named as the lpips package's ``net=`` argument
    "alex": Network(models.alexnet, (1, 4, 7, 9, 11), (64, 192, 384, 256, 256), "alexnet-owt-7be5be79.pth"),
    "vgg": Network(models.vgg16, (3, 8, 15, 22, 29), (64, 128, 256, 512, 512), "vgg16-397923af.pth"),
    "squeeze": Network(
        models.squeezenet1_1,
        (1, 4, 7, 9, 10, 11, 12),
        (64, 128, 256, 384, 384, 512, 512),
        "squeezenet1_1-b8a52dc0.pth",
    ),
}


class PerceptualDistance(nn.Module):
    """``forward(x, y)``: the distance of each pair of (N, 3, H, W) images in [0, 1], shape (N,)."""

    def __init__(
        self, net: str, weights: str | os.PathLike[str], linear: str | os.PathLike[str] | None = None
    ) -> None:
        super().__init__()
        if net not in NETWORKS:
            raise InputError(f"lpips_net is {net!r}; expected one of {sorted(NETWORKS)}")
        self.network = NETWORKS[net]
        self.features = _load_features(net, self.network, weights)
        lins = (
            _load_linear(net, self.network, linear)
            if linear
            else [torch.ones(c) for c in self.network.channels]
        )
        for k, lin in enumerate(lins):
            self.register_buffer(f"lin{k}", lin)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))
        self.requires_grad_(False).eval()

    def layers(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Unit-normalised activations of every tapped layer."""
        x = (images * 2 - 1 - self.shift) / self.scale
        taps = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.network.taps:
                taps.append(x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + _EPS))
        return taps

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 3:
            raise InputError(
                f"perceptual distance: got images {list(x.shape)} and {list(y.shape)}; "
                "expected two equal (N, 3, H, W) batches in [0, 1]"
            )
        total = x.new_zeros(x.shape[0])
        for k, (a, b) in enumerate(zip(self.layers(x), self.layers(y), strict=True)):
            weight = getattr(self, f"lin{k}").view(1, -1, 1, 1)
            total = total + ((a - b) ** 2 * weight).sum(dim=1).mean(dim=(1, 2))
        return total


def perceptual_from_spec(spec: dict[str, Any]) -> PerceptualDistance:
    """The distance named by ``lpips_net``, ``lpips_weights`` and (optional) ``lpips_linear``."""
    return PerceptualDistance(spec["lpips_net"], spec["lpips_weights"], spec.get("lpips_linear"))


def _load_features(net: str, network: Network, path: str | os.PathLike[str]) -> nn.Sequential:
    if not os.path.isfile(path):
        raise InputError(
            f"{path}: lpips_weights file not found; expected a local torchvision {net} state_dict "
            f"(e.g. {network.torchvision_file}); nothing is downloaded at run time"
        )
    verify_named_digest(Path(path))  # torchvision's squeezenet1_1-b8a52dc0.pth must be that file
    state = load_torch(path)
    if not isinstance(state, dict):
        raise InputError(f"{path}: expected a torchvision state_dict (a dict); found {type(state).__name__}")
    with torch.device("meta"):  # no random init of the (large, unused) classifier
        features = network.build().features[: max(network.taps) + 1]
    expected = {key: tuple(value.shape) for key, value in features.state_dict().items()}
    found = {key[len("features.") :]: value for key, value in state.items() if key.startswith("features.")}
    missing = sorted(key for key in expected if key not in found)
    wrong = [
        f"features.{key}: {list(getattr(value, 'shape', []))} (expected {list(expected[key])})"
        for key, value in found.items()
        if key in expected and tuple(getattr(value, "shape", ())) != expected[key]
    ]
    if missing or wrong:
        raise InputError(
            f"{path}: not a torchvision {net} state_dict ({network.torchvision_file}): missing "
            f"{['features.' + key for key in missing][:6]}, wrong shapes {wrong[:6]}"
        )
    features = features.to_empty(device="cpu")
    features.load_state_dict({key: found[key] for key in expected})
    return features


def _load_linear(net: str, network: Network, path: str | os.PathLike[str]) -> list[torch.Tensor]:
    if not os.path.isfile(path):
        raise InputError(
            f"{path}: lpips_linear file not found; expected lpips's weights/v0.1/{net}.pth "
            "or lpips_linear: null for uniform channel weights"
        )
    state = load_torch(path)
    weights = []
    for k, channels in enumerate(network.channels):
        key = f"lin{k}.model.1.weight"
        value = state.get(key) if isinstance(state, dict) else None
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != (1, channels, 1, 1):
            found = list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise InputError(
                f"{path}: key {key} is {found}; expected a tensor of shape "
                f"[1, {channels}, 1, 1] (lpips weights/v0.1/{net}.pth layout)"
            )
        weights.append(value.detach().float().reshape(channels))
    return weights


def write_random_network(net: str, seed: int, out: str | os.PathLike[str]) -> None:
    """A torchvision state dict of ``net`` with seeded random weights: the embedded default's stand-in for
    the real ImageNet weights, which cannot be downloaded at run time. Distances from it prove the
    pipeline; they are not LPIPS values."""
    if net not in NETWORKS:
        raise InputError(f"net is {net!r}; expected one of {sorted(NETWORKS)}")
    torch.manual_seed(seed)
    save_torch(out, NETWORKS[net].build().state_dict())
