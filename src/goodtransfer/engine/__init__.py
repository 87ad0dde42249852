"""One training loop for every job (``Trainer``) and the behaviour added around it by hooks."""

from goodtransfer.engine.trainer import Hook, Trainer

__all__ = ["Hook", "Trainer"]
