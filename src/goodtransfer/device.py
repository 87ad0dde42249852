"""Where and how tensors are computed: device, channels_last, bf16 autocast (config keys, not constants)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class Compute:
    device: torch.device
    channels_last: bool
    precision: str  # "fp32" | "bf16" | "fp16"

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Compute:
        name = spec.get("device", "auto")
        if name == "auto":
            name = "cuda" if torch.cuda.is_available() else "cpu"
        return cls(torch.device(name), bool(spec.get("channels_last", False)), spec.get("precision", "fp32"))

    def module(self, module: nn.Module) -> nn.Module:
        module = module.to(self.device)
        return module.to(memory_format=torch.channels_last) if self.channels_last else module

    def images(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        if self.channels_last and images.dim() == 4:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def autocast(self) -> AbstractContextManager[Any]:
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)
