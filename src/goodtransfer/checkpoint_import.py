"""Import ResNet backbones from the checkpoint layouts found in the wild, verified key by key.

Every file is read with ``weights_only=True`` (through :func:`goodtransfer.checkpoint.load_torch`);
``argparse.Namespace`` is the one extra class allowed, because torchvision's reference training script
stores its command line as ``"args"``. Layouts understood:

* ours, ``{"state_dict", "meta": {"format": "goodtransfer-backbone/1", ...}}`` (delegated to
  :func:`goodtransfer.checkpoint.backbone_from`);
* MoCo v1/v2 (facebookresearch/moco ``main_moco.py``), ``{"epoch", "arch", "state_dict": {
  "module.encoder_q.*", "module.encoder_k.*", "module.queue", "module.queue_ptr"}, "optimizer"}``,
  also without ``module.`` (single GPU); only the query encoder is kept;
* OpenMMLab self-supervised models (mmselfsup, e.g. its InstDisc/NPID and SimCLR ResNet-50s of Figure 2),
  ``{"meta", "state_dict": {"backbone.*", "neck.*", "head.*", ...}}``: the ``backbone.*`` keys are
  torchvision's names; the projection neck, the loss head, NPID's memory bank and the data preprocessor go;
* plain torchvision state dicts (``resnet50-19c8e357.pth``), optionally ``module.``-prefixed (DDP) and/or
  wrapped as ``{"model": ...}`` (torchvision reference script) or ``{"state_dict": ...}``.

The Good_transfer authors' released files are, as far as we know, one of the last two; they are recognised
by their keys, never by their names. The classifier or projection head (``fc.*``) is always dropped, and
the result must match ``build_resnet(arch)`` exactly (every key, every shape), else ``InputError``.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
from collections.abc import Mapping
from typing import Any

import torch
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from goodtransfer.checkpoint import FORMAT, backbone_from, load_into, load_torch
from goodtransfer.io import InputError
from goodtransfer.models.backbone import _ARCHS, TORCHVISION_WIDTH, arch_name, build_resnet, parse_arch

EXPECTED_LAYOUTS = (
    f"{FORMAT} {{'state_dict', 'meta'}}; "
    "MoCo {'state_dict': {'module.encoder_q.*', 'module.encoder_k.*', 'module.queue', ...}}; "
    "OpenMMLab {'meta', 'state_dict': {'backbone.*', 'neck.*', 'head.*'}}; "
    "torchvision ResNet state_dict {'conv1.weight', 'bn1.*', 'layer1.0.*', ..., 'fc.*'}, "
    "optionally 'module.'-prefixed and/or wrapped in {'model': ...} or {'state_dict': ...}"
)
_BACKBONE_KEY = re.compile(r"^(conv1|bn1|layer[1-4]\.\d+)\.")
_WRAPPERS = ("state_dict", "model")
_DDP = "module."
_QUERY = "encoder_q."
# MoCo's key encoder and queue: not part of the backbone.
_MOCO_KEY_ENCODER = "encoder_k."
_MOCO_QUEUE = frozenset({"queue", "queue_ptr"})
# OpenMMLab (mmselfsup) self-supervised models: the backbone under ``backbone.``, beside it the parts that
# are not: projection neck, loss head, NPID's memory bank, the input normaliser.
_MM_BACKBONE = "backbone."
_MM_NOT_BACKBONE = ("neck.", "head.", "memory_bank.", "data_preprocessor.")
_COUNTER = "num_batches_tracked"
_MAX_LISTED = 8


def load_any_backbone(
    path: str | os.PathLike[str], arch: str | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A torchvision ResNet backbone state_dict (no ``fc.*``) and its meta from any supported layout.

    ``meta`` holds ``arch`` and ``source_format`` (``goodtransfer-backbone/1``, ``moco``, ``openmmlab`` or
    ``torchvision``) plus what the file tells: ``method``, ``epoch``, ``wrapper``, ``prefix``,
    ``projection_head``.
    ``arch`` is taken from the argument, else the checkpoint's ``arch`` field, else inferred from the keys.
    """
    obj = _read(path)
    if _is_ours(obj):
        state_dict, meta = backbone_from(obj, path)  # already read once: no second load
        state_dict, meta = dict(state_dict), {**meta, "source_format": FORMAT}
    else:
        state_dict, meta = _extract(path, obj)
    arch = _resolve_arch(path, arch, meta.get("arch"), state_dict)
    expected = _expected_shapes(arch)
    filled = _fill_missing_counters(state_dict, expected)
    if filled:
        meta["filled_num_batches_tracked"] = filled
    _verify(path, state_dict, expected, arch)
    return state_dict, {**meta, "arch": arch}


def resnet_from_checkpoint(path: str | os.PathLike[str]) -> tuple[ResNet, dict[str, Any]]:
    """A torchvision ResNet holding every backbone weight of ``path`` (any supported layout), and its meta."""
    state_dict, meta = load_any_backbone(path)
    model = build_resnet(meta["arch"])
    load_into(model, state_dict, str(path))
    return model, meta


def _read(path: str | os.PathLike[str]) -> Any:
    """``load_torch`` (weights_only) that also accepts the ``argparse.Namespace`` of torchvision's script."""
    with torch.serialization.safe_globals([argparse.Namespace]):
        return load_torch(path)


def _is_ours(obj: Any) -> bool:
    """Our own format: a ``meta`` dict whose ``format`` is ``goodtransfer-backbone/1``."""
    return isinstance(obj, dict) and isinstance(obj.get("meta"), dict) and obj["meta"].get("format") == FORMAT


def _extract(path: str | os.PathLike[str], obj: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """MoCo or torchvision layouts: unwrap, strip ``module.``/``encoder_q.``, drop ``fc.*``."""
    if not isinstance(obj, dict):
        raise _unknown_layout(path, obj)
    inner, wrapper = _unwrap(obj)
    if not inner or not all(isinstance(key, str) for key in inner):
        raise _unknown_layout(path, obj)
    prefix = _DDP if all(key.startswith(_DDP) for key in inner) else ""
    flat = {key[len(prefix) :]: value for key, value in inner.items()}
    if any(key.startswith(_QUERY) for key in flat):
        state_dict, head = _moco_query_encoder(flat, prefix)
        meta: dict[str, Any] = {"source_format": "moco", "method": "moco", "projection_head": head}
        prefix += _QUERY
    elif any(key.startswith(_MM_BACKBONE) for key in flat):
        state_dict = _openmmlab_backbone(flat, prefix)
        meta = {"source_format": "openmmlab"}
        prefix += _MM_BACKBONE
    else:
        state_dict = {key: value for key, value in flat.items() if not key.startswith("fc.")}
        meta = {"source_format": "torchvision"}
    if not any(_BACKBONE_KEY.match(key) for key in state_dict):
        raise _unknown_layout(path, obj)
    meta.update(wrapper=wrapper, prefix=prefix, **_header_fields(obj))
    return state_dict, meta


def _unwrap(obj: dict[str, Any]) -> tuple[dict[Any, Any], str | None]:
    """The weights inside a ``{"state_dict": ...}`` (MoCo) or ``{"model": ...}`` (torchvision) wrapper."""
    for name in _WRAPPERS:
        if isinstance(obj.get(name), dict):
            return obj[name], name
    return obj, None


def _moco_query_encoder(flat: Mapping[str, Any], ddp_prefix: str) -> tuple[dict[str, Any], str | None]:
    """Keep ``encoder_q.*`` without its head; the key encoder and queue go, any other key stays to be
    reported as unexpected (with its original name) rather than silently dropped."""
    state_dict: dict[str, Any] = {}
    for key, value in flat.items():
        if key.startswith(_QUERY):
            if not key.startswith(_QUERY + "fc."):
                state_dict[key[len(_QUERY) :]] = value
        elif not key.startswith(_MOCO_KEY_ENCODER) and key not in _MOCO_QUEUE:
            state_dict[ddp_prefix + key] = value
    head = "mlp" if _QUERY + "fc.0.weight" in flat else "linear" if _QUERY + "fc.weight" in flat else None
    return state_dict, head


def _openmmlab_backbone(flat: Mapping[str, Any], ddp_prefix: str) -> dict[str, Any]:
    """Keep ``backbone.*`` unprefixed; neck, head, memory bank and preprocessor go; any other key stays,
    with its original name, to be reported as unexpected."""
    state_dict: dict[str, Any] = {}
    for key, value in flat.items():
        if key.startswith(_MM_BACKBONE):
            state_dict[key[len(_MM_BACKBONE) :]] = value
        elif not key.startswith(_MM_NOT_BACKBONE):
            state_dict[ddp_prefix + key] = value
    return state_dict


def _header_fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    """``epoch`` and ``arch`` from MoCo's header, or ``arch`` from torchvision's ``args.model``."""
    fields: dict[str, Any] = {}
    epoch = obj.get("epoch")
    if isinstance(epoch, int) and not isinstance(epoch, bool):
        fields["epoch"] = epoch
    arch = obj.get("arch", getattr(obj.get("args"), "model", None))
    if isinstance(arch, str):
        fields["arch"] = arch
    return fields


def _resolve_arch(
    path: str | os.PathLike[str], requested: str | None, recorded: Any, state_dict: Mapping[str, Any]
) -> str:
    """The requested arch, else the checkpoint's ``arch`` field, else the one its keys imply."""
    if requested and recorded and requested != recorded:
        raise InputError(
            f"{path}: checkpoint field arch is {recorded!r} but arch {requested!r} was requested"
        )
    arch = requested or recorded or infer_arch(path, state_dict)
    try:
        parse_arch(arch)
    except InputError as error:
        raise InputError(f"{path}: {error}") from None
    return arch


def infer_arch(path: str | os.PathLike[str], state_dict: Mapping[str, Any]) -> str:
    """Bottleneck if ``layer1.0.conv3.weight`` exists, else BasicBlock; depth from the blocks per stage;
    the width (``-w<channels>`` unless torchvision's 64) from the stem's output channels."""
    block = Bottleneck if "layer1.0.conv3.weight" in state_dict else BasicBlock
    depths = [
        len({key.split(".")[1] for key in state_dict if key.startswith(f"layer{i}.")}) for i in range(1, 5)
    ]
    stem = state_dict.get("conv1.weight")
    width = int(stem.shape[0]) if isinstance(stem, torch.Tensor) and stem.dim() == 4 else TORCHVISION_WIDTH
    for name, (arch_block, layers) in _ARCHS.items():
        if arch_block is block and layers == depths:
            return arch_name(name, width)
    known = {name: layers for name, (_, layers) in _ARCHS.items()}
    raise InputError(
        f"{path}: cannot infer the ResNet arch: {block.__name__} blocks per stage {depths} match none of "
        f"{known}; pass the arch explicitly"
    )


@functools.cache
def _expected_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of ``build_resnet(arch)`` without ``fc``, built on the meta device (no weights)."""
    with torch.device("meta"):
        model = build_resnet(arch)
    return {key: tuple(value.shape) for key, value in model.state_dict().items() if not key.startswith("fc.")}


def _fill_missing_counters(state_dict: dict[str, Any], expected: Mapping[str, tuple[int, ...]]) -> int:
    """Checkpoints saved before PyTorch 0.4.1 (e.g. ``resnet50-19c8e357.pth``) have no BatchNorm
    ``num_batches_tracked``; BatchNorm itself then starts the counter at 0, and so do we. Only when the
    file has none at all: a file with some counters and not others is reported as missing keys."""
    if any(key.endswith(_COUNTER) for key in state_dict):
        return 0
    missing = [key for key in expected if key.endswith(_COUNTER) and key not in state_dict]
    for key in missing:
        state_dict[key] = torch.tensor(0, dtype=torch.long)
    return len(missing)


def _verify(
    path: str | os.PathLike[str], state_dict: Mapping[str, Any], expected: Mapping[str, tuple], arch: str
) -> None:
    """Every expected key present, nothing else, every value a tensor of the expected shape."""
    problems = {
        "missing keys": [key for key in expected if key not in state_dict],
        "unexpected keys": [key for key in state_dict if key not in expected],
        "wrong shapes": [
            f"{key}: {_shape(value)} (expected {list(expected[key])})"
            for key, value in state_dict.items()
            if key in expected and _shape(value) != list(expected[key])
        ],
    }
    found = [f"{kind} {_listed(items)}" for kind, items in problems.items() if items]
    if found:
        raise InputError(f"{path}: checkpoint does not match torchvision {arch}: " + "; ".join(found))


def _shape(value: Any) -> list[int] | str:
    return list(value.shape) if isinstance(value, torch.Tensor) else f"not a tensor ({type(value).__name__})"


def _listed(items: list[str]) -> str:
    more = len(items) - _MAX_LISTED
    return f"{items[:_MAX_LISTED]}" + (f" (+{more} more)" if more > 0 else "")


def _unknown_layout(path: str | os.PathLike[str], obj: Any) -> InputError:
    """Name the file, what its top level holds, and the layouts we read."""
    if isinstance(obj, dict):
        keys = [str(key) for key in obj]
        found = f"top-level keys {keys[:12]}" + (f" (+{len(keys) - 12} more)" if len(keys) > 12 else "")
    else:
        found = f"a top-level {type(obj).__name__}, not a dict"
    return InputError(f"{path}: unrecognised checkpoint layout: found {found}; expected {EXPECTED_LAYOUTS}")
