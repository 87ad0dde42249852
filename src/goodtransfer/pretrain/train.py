"""The pretraining loop: any registered method, resumable at epoch boundaries, atomic outputs."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from goodtransfer.checkpoint import save_backbone
from goodtransfer.data.imagefolder import image_folder
from goodtransfer.device import Compute
from goodtransfer.io import spec_hash, write_json
from goodtransfer.models.backbone import backbone_state_dict
from goodtransfer.pretrain import build_method
from goodtransfer.pretrain.augment import TwoViews, pretrain_transform
from goodtransfer.resume import ResumeState, seed_everything, set_rng_state
from goodtransfer.schedule import epoch_lr


def _loader(spec: dict[str, Any], data_root: Path, two_views: bool, epoch: int) -> DataLoader:
    transform = pretrain_transform(spec["augment"], spec["augmentations"], spec["input_size"])
    dataset = image_folder(data_root, "train", TwoViews(transform) if two_views else transform)
    # A generator seeded by (seed, epoch) makes every epoch's order independent of a restart.
    generator = torch.Generator().manual_seed(spec["seed"] * 100003 + epoch)
    return DataLoader(
        dataset,
        batch_size=spec["batch_size"],
        shuffle=True,
        drop_last=True,
        num_workers=spec["workers"],
        generator=generator,
        persistent_workers=False,
    )


def _optimizer(model: torch.nn.Module, spec: dict[str, Any]) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(
        params, lr=spec["lr"], momentum=spec["momentum"], weight_decay=spec["weight_decay"]
    )


def _run_epoch(model, loader, optimizer, compute: Compute, progress: dict[str, Any]) -> float:
    model.train()
    total, count, start = 0.0, 0, time.time()
    for images, targets in loader:
        views = [compute.images(v) for v in images] if isinstance(images, list) else compute.images(images)
        with compute.autocast():
            loss = model.loss(views, targets.to(compute.device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total, count = total + loss.item(), count + 1
    seconds = time.time() - start
    images_seen = count * loader.batch_size
    progress.update(loss=total / max(count, 1), img_per_s=images_seen / max(seconds, 1e-9), seconds=seconds)
    return total / max(count, 1)


def pretrain(spec: dict[str, Any], data_root: Path, out: Path, state_dir: Path, log_json: Path) -> None:
    """Train ``spec`` on ``data_root`` and write the backbone checkpoint ``out`` and a log."""
    digest = spec_hash(spec)
    seed_everything(spec["seed"])
    compute = Compute.from_spec(spec)
    num_classes = len(image_folder(data_root, "train", None).classes)
    model = compute.module(build_method(spec, num_classes))
    optimizer = _optimizer(model, spec)
    resume = ResumeState(state_dir, digest)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if (state := resume.load()) is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, history = state["epoch"], list(state["history"])
        set_rng_state(state["rng"])
        print(f"[pretrain] resuming {spec['run']} from epoch {start_epoch}", file=sys.stderr)
    for epoch in range(start_epoch, spec["epochs"]):
        lr = epoch_lr(spec, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        progress: dict[str, Any] = {"epoch": epoch + 1, "lr": lr}
        _run_epoch(model, _loader(spec, data_root, model.two_views, epoch), optimizer, compute, progress)
        history.append(progress)
        eta = progress["seconds"] * (spec["epochs"] - epoch - 1)
        print(
            f"[pretrain] {spec['run']} epoch {epoch + 1}/{spec['epochs']} loss {progress['loss']:.4f} "
            f"{progress['img_per_s']:.0f} img/s ETA {eta:.0f}s",
            file=sys.stderr,
        )
        done = epoch + 1
        if done % spec["checkpoint_every"] == 0 or done == spec["epochs"]:
            resume.save(
                model=model.state_dict(), optimizer=optimizer.state_dict(), epoch=done, history=history
            )
    save_backbone(out, backbone_state_dict(model.backbone), _meta(spec, digest, spec["epochs"]))
    write_json(log_json, {"run": spec["run"], "config_hash": digest, "history": history})


def _meta(spec: dict[str, Any], digest: str, epoch: int) -> dict[str, Any]:
    return {
        "method": spec["method"],
        "run": spec["run"],
        "config_hash": digest,
        "epoch": epoch,
        "arch": spec["arch"],
    }
