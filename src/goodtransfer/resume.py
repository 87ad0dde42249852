"""Resumable training state: saved every N steps beside the outputs, ignored if the spec changed."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from goodtransfer.checkpoint import load_torch, save_torch


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "python": random.getstate()}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


class ResumeState:
    """The newest training state of one job, at ``<state_dir>/last.pt``."""

    def __init__(self, state_dir: str | Path, spec_hash: str) -> None:
        # One file for all ranks: data-parallel replicas are identical, and rank 0 writes it.
        self.path = Path(state_dir) / "last.pt"
        self.spec_hash = spec_hash

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None if there is none or it belongs to another configuration."""
        if not self.path.is_file():
            return None
        state = load_torch(self.path)
        if state.get("spec_hash") != self.spec_hash:
            return None
        return state

    def save(self, **state: Any) -> None:
        save_torch(self.path, {"spec_hash": self.spec_hash, "rng": rng_state(), **state})
