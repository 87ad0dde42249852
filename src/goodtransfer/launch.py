"""The command that starts a training job: one Python process, or torchrun with one process per GPU."""

from __future__ import annotations


def launcher(gpus: int) -> str:
    """``python`` for at most one GPU; for more, torchrun on this node with one rank per GPU.

    The result goes in front of ``-m goodtransfer ...``; --standalone picks a free rendezvous port, so
    two jobs on one node do not collide.
    """
    if gpus > 1:
        return f"torchrun --standalone --nproc_per_node {int(gpus)}"
    return "python"


def threads_per_process(threads: int, gpus: int) -> int:
    """A job's threads shared among its processes (at least one each): torchrun starts ``gpus`` of them."""
    return max(1, threads // gpus) if gpus > 1 else threads
