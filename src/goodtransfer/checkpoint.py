"""Backbone checkpoints: a torchvision-style ResNet state_dict plus metadata, loaded safely.

Format (``format: goodtransfer-backbone/1``)::

    {"state_dict": {"conv1.weight": ..., "layer1.0.conv1.weight": ...},   # no "fc.*"
     "meta": {"method": "moco", "run": "mocov2-f", "config_hash": "...", "epoch": 200, "arch": "resnet50",
              "weights_sha256": "..."}}

``weights_sha256`` digests every tensor (name, dtype, shape, bytes); loading recomputes it, so a file
altered after it was written (a bad copy, a partial download, a corrupted DVC pull) fails naming
itself instead of being trained on.

A supervised run also keeps its trained classifier beside the backbone, under ``"classifier"``
(``{"fc.weight", "fc.bias"}``, digested as ``meta.classifier_sha256``): ``state_dict`` stays a backbone
without ``fc.*`` for every loader, and ``{**state_dict, **classifier}`` loads into the whole torchvision
ResNet that was trained.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from goodtransfer.io import InputError, atomic_path

FORMAT = "goodtransfer-backbone/1"


def save_torch(path: str | os.PathLike[str], obj: Any) -> None:
    """``torch.save`` through a temporary file, so a killed job never leaves a truncated checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_torch(path: str | os.PathLike[str]) -> Any:
    """``torch.load`` with ``weights_only=True``; a missing or unreadable file names itself."""
    if not Path(path).is_file():
        raise InputError(f"{path}: checkpoint file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError... for bad files
        if isinstance(err, pickle.UnpicklingError) and "Weights only load failed" in str(err):
            refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
            raise InputError(
                f"{path}: not read: it pickles Python objects ({refused.group(1) if refused else 'code'}) "
                "that loading with weights_only=True refuses, so nothing in it was run. Only if you trust "
                "its source: re-save its tensors alone (torch.save(torch.load(f, weights_only=False)"
                "['state_dict'], out)) and point the config at that file"
            ) from None
        raise InputError(
            f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {type(err).__name__}: {err}"
        ) from None


def weights_digest(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in key order."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_backbone(
    path: str | os.PathLike[str],
    state_dict: Mapping[str, torch.Tensor],
    meta: dict,
    classifier: Mapping[str, torch.Tensor] | None = None,
) -> None:
    """The backbone (no ``fc.*``) and its meta; ``classifier``: the trained ``fc.*`` kept beside it."""
    meta = {"format": FORMAT, **meta, "weights_sha256": weights_digest(state_dict)}
    obj: dict[str, Any] = {"state_dict": dict(state_dict), "meta": meta}
    if classifier is not None:
        if not classifier or any(not key.startswith("fc.") for key in classifier):
            raise ValueError(
                f"classifier keys {sorted(classifier)}; expected torchvision's fc.weight, fc.bias"
            )
        obj["classifier"] = dict(classifier)
        meta["classifier_sha256"] = weights_digest(classifier)
    save_torch(path, obj)


def load_classifier(path: str | os.PathLike[str]) -> dict[str, torch.Tensor] | None:
    """The classifier (``fc.*``) a supervised run kept beside its backbone, checked against its digest;
    None for a checkpoint without one (contrastive runs, imported files)."""
    obj = load_torch(path)
    backbone_from(obj, path)
    classifier = obj.get("classifier")
    if classifier is None:
        return None
    if weights_digest(classifier) != obj["meta"].get("classifier_sha256"):
        raise InputError(
            f"{path}: the classifier does not match meta.classifier_sha256 recorded when the file was "
            "written (corrupted or modified since); fetch it again (e.g. `dvc pull`) or retrain it"
        )
    return dict(classifier)


def load_backbone(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read one of our backbone checkpoints; returns (state_dict, meta)."""
    return backbone_from(load_torch(path), path)


def backbone_from(obj: Any, path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state_dict, meta) of an already loaded checkpoint of ours; ``path`` names it in errors."""
    if not isinstance(obj, dict) or "state_dict" not in obj or "meta" not in obj:
        keys = sorted(obj)[:5] if isinstance(obj, dict) else type(obj).__name__
        raise InputError(f"{path}: expected a dict with 'state_dict' and 'meta' ({FORMAT}); found {keys}")
    if obj["meta"].get("format") != FORMAT:
        raise InputError(f"{path}: field meta.format is {obj['meta'].get('format')!r}; expected {FORMAT!r}")
    recorded = obj["meta"].get("weights_sha256")
    if recorded is not None and weights_digest(obj["state_dict"]) != recorded:
        raise InputError(
            f"{path}: the weights do not match meta.weights_sha256 recorded when the file was written "
            "(corrupted or modified since); fetch it again (e.g. `dvc pull`) or retrain it"
        )
    return obj["state_dict"], obj["meta"]


def load_into(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Load every key or fail naming the missing and unexpected ones; nothing is silently skipped."""
    result = module.load_state_dict(dict(state_dict), strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("fc.")]
    if missing or result.unexpected_keys:
        raise InputError(
            f"{source}: checkpoint does not match the model: missing keys {missing[:8]}"
            f"{' ...' if len(missing) > 8 else ''}, unexpected keys {result.unexpected_keys[:8]}"
        )
