"""Process-group helpers for data-parallel pretraining (torchrun): gather keys, shuffle BN across ranks."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def init_from_environment(device_type: str) -> bool:
    """Join the process group torchrun describes (WORLD_SIZE > 1); gloo on the CPU, nccl on GPUs."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return is_distributed()
    dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    if device_type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return True


@torch.no_grad()
def concat_all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` concatenated in rank order (no gradient)."""
    if not is_distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


@torch.no_grad()
def shuffle_across_ranks(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MoCo's batch shuffle: gather all ranks' images, permute (rank 0 decides), keep this rank's slice.

    Returns the local shuffled images and the global permutation, for ``unshuffle_across_ranks``.
    """
    gathered = concat_all_gather(images)
    order = torch.randperm(gathered.shape[0], device=images.device)
    dist.broadcast(order, src=0)
    mine = order.view(world_size(), -1)[rank()]
    return gathered[mine], order


@torch.no_grad()
def unshuffle_across_ranks(features: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Undo ``shuffle_across_ranks``: this rank's samples back in their original order."""
    gathered = concat_all_gather(features)
    restore = torch.argsort(order).view(world_size(), -1)[rank()]
    return gathered[restore]
