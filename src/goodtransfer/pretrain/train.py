"""The pretraining loop: any registered method, one process or torchrun data parallel, resumable at
epoch boundaries, outputs written atomically by rank 0 only."""

from __future__ import annotations

import math
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from goodtransfer.checkpoint import save_backbone
from goodtransfer.checkpoint_import import load_any_backbone
from goodtransfer.data.epochs import at_epoch, epoch_loader, loader_workers
from goodtransfer.data.registry import pretraining_images, pretraining_val_images
from goodtransfer.data.transforms import eval_transform
from goodtransfer.device import Compute
from goodtransfer.engine import Trainer
from goodtransfer.engine.hooks import (
    EpochCheckpoint,
    EpochEnd,
    FiniteLoss,
    History,
    LrSchedule,
    ProgressLog,
    Reseed,
    TensorBoard,
)
from goodtransfer.finite import require_steps
from goodtransfer.io import InputError, spec_hash, write_json
from goodtransfer.models.backbone import backbone_state_dict, build_resnet
from goodtransfer.pretrain import build_method
from goodtransfer.pretrain import distributed as ddp
from goodtransfer.pretrain.augment import MOCO_V2_ORDER, TwoViews, pretrain_transform
from goodtransfer.pretrain.supervised import classifier_top1
from goodtransfer.pretrain.task_supervised import train_task_backbone
from goodtransfer.progress import Progress
from goodtransfer.publish import verify_named_digest, verify_recorded_checksum
from goodtransfer.resume import ResumeState, dataset_digest, job_key, seed_everything
from goodtransfer.schedule import epoch_lr


def _loader(spec: dict[str, Any], dataset: Any, two_views: bool, compute: Compute) -> DataLoader:
    """This rank's batches, built once for the run; each epoch's order and augmentations depend only on
    (seed, epoch), so restarts agree (``data.epochs``)."""
    order = spec.get("augment_order", MOCO_V2_ORDER)
    transform = pretrain_transform(spec["augment"], spec["augmentations"], spec["input_size"], order)
    return epoch_loader(
        dataset,
        TwoViews(transform) if two_views else transform,
        spec["batch_size"] // ddp.world_size(),
        spec["seed"],
        loader_workers(spec["workers"], compute.device),
        compute.device,
        rank=ddp.rank(),
        world_size=ddp.world_size(),
        cache_images=spec["cache_images"],
    )


def _images(spec: dict[str, Any], data_root: Path, transform: Callable | None) -> Any:
    """The run's training images (for CelebA, those of the spec's ``partitions``)."""
    return pretraining_images(
        spec.get("data_kind", "imagefolder"), data_root, transform, spec.get("partitions")
    )


def _optimizer(model: nn.Module, spec: dict[str, Any]) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(
        params, lr=spec["lr"], momentum=spec["momentum"], weight_decay=spec["weight_decay"]
    )


def _loss(compute: Compute) -> Callable[[nn.Module, Any], dict[str, torch.Tensor]]:
    """The method's loss on one batch of (images or list of views, labels)."""

    def loss(model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        images, targets = batch
        views = [compute.images(v) for v in images] if isinstance(images, list) else compute.images(images)
        return {"loss": model(views, targets.to(compute.device))}

    return loss


def _plan(spec: dict[str, Any], loader: DataLoader) -> dict[str, int]:
    """The run's length on the images actually built: ``epochs``, or with ``train_samples`` (Table 2: as many
    samples as 200 ImageNet epochs) ceil(train_samples / samples an epoch sees); an epoch sees its whole
    batches (the last partial one is dropped)."""
    steps, images = len(loader), len(loader.dataset)
    require_steps(
        steps,
        run=spec["run"],
        images=images,
        batch=spec["batch_size"],
        drop_last=True,
        fix=f"lower pretrain.runs.{spec['run']}.batch_size or add images",
    )
    per_epoch = steps * spec["batch_size"]  # every rank's batches together
    epochs = math.ceil(spec["train_samples"] / per_epoch) if "train_samples" in spec else spec["epochs"]
    return {"images": images, "steps_per_epoch": steps, "samples_per_epoch": per_epoch, "epochs": epochs}


def _progress(spec: dict[str, Any], steps: int, start_epoch: int) -> Progress:
    """Steps of the whole run (every epoch has the same number); rank 0 reports."""
    return Progress(
        f"pretrain {spec['run']}",
        spec["epochs"] * steps,
        done=start_epoch * steps,
        items_per_step=spec["batch_size"],
        unit="img",
        every=spec.get("log_every", 0),
        enabled=ddp.rank() == 0,
    )


def _build(spec: dict[str, Any], num_classes: int, compute: Compute) -> nn.Module:
    if spec["batch_size"] % ddp.world_size():
        raise InputError(f"batch_size {spec['batch_size']} is not divisible by {ddp.world_size()} processes")
    model = build_method(spec, num_classes)
    if ddp.is_distributed() and spec.get("sync_bn", False):
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = compute.module(model)
    if ddp.is_distributed():
        device_ids = [compute.device.index] if compute.device.type == "cuda" else None
        model = DistributedDataParallel(model, device_ids=device_ids)
    return model


def _report(spec: dict[str, Any], epoch: int, progress: dict[str, Any]) -> None:
    eta = progress["seconds"] * (spec["epochs"] - epoch - 1)
    print(
        f"[pretrain] {spec['run']} epoch {epoch + 1}/{spec['epochs']} loss {progress['loss']:.4f} "
        f"{progress['img_per_s']:.0f} img/s ETA {eta:.0f}s",
        file=sys.stderr,
    )


def import_backbone(spec: dict[str, Any], out: Path, log_json: Path) -> None:
    """A run whose backbone comes from elsewhere (``import_from``): a released checkpoint, or the
    backbone of a supervised detection/segmentation network (Table 2's COCO and Synthia rows)."""
    source = Path(spec["import_from"])
    verified = verify_recorded_checksum(source)  # a released file must be the one first imported
    verify_named_digest(source)  # and, where its name carries its digest, the one published
    state_dict, meta = load_any_backbone(source, arch=spec["arch"])
    imported = {
        "method": f"imported:{meta['source_format']}",
        "run": spec["run"],
        "config_hash": spec_hash(spec),
        "epoch": meta.get("epoch", -1),
        "arch": meta["arch"],
        "source": str(source),
        "source_checksum": verified,
    }
    save_backbone(out, state_dict, imported)
    write_json(
        log_json,
        {
            **_record(spec, imported["config_hash"]),
            "history": [],
            "imported_from": str(source),
        },
    )


def save_initialisation(spec: dict[str, Any], out: Path, log_json: Path) -> None:
    """A randomly initialised backbone (seeded), written as a pretraining run that trained nothing."""
    seed_everything(spec["seed"])
    digest = spec_hash(spec)
    save_backbone(out, backbone_state_dict(build_resnet(spec["arch"])), _meta(spec, digest, 0))
    write_json(log_json, {**_record(spec, digest), "history": []})


def pretrain(
    spec: dict[str, Any],
    data_root: Path,
    out: Path,
    state_dir: Path,
    log_json: Path,
    data_checks: Sequence[Path] = (),
) -> None:
    """Train ``spec`` on ``data_root`` and write the backbone checkpoint ``out`` and a log. Resumes only
    state made from the same spec and dataset content (``data_checks``: the dataset's check records)."""
    if spec.get("import_from"):
        return import_backbone(spec, out, log_json)
    if spec.get("method") == "scratch":  # Table 5's "Scratch" row: the seeded random initialisation
        return save_initialisation(spec, out, log_json)
    if spec.get("method") == "task":  # a detection/segmentation network's backbone (Table 2)
        return train_task_backbone(spec, data_root, out, state_dir, log_json, data_checks)
    digest = spec_hash(spec)
    record = _record(spec, digest)  # the spec as the config resolves it (published runs are compared to it)
    compute = Compute.from_spec(spec)
    ddp.init_from_environment(compute.device.type)
    seed_everything(spec["seed"])  # the same initial weights on every rank
    images = _images(spec, data_root, None)  # one scan of the training images for the whole run
    model = _build(spec, len(images.classes), compute)
    method = model.module if isinstance(model, DistributedDataParallel) else model
    optimizer = _optimizer(model, spec)
    resume = ResumeState(state_dir, job_key(spec, data=dataset_digest(data_root, data_checks)))
    loader = _loader(spec, images, method.two_views, compute)
    plan = _plan(spec, loader)
    spec = {**spec, "epochs": plan["epochs"]}  # the loop's length, from train_samples where it is set
    held_out = _held_out(spec, data_root, compute)  # built now: a bad val/ fails before training, not after
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if (state := resume.load()) is not None:
        method.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, history = state["epoch"], list(state["history"])
        print(f"[pretrain] resuming {spec['run']} from epoch {start_epoch}", file=sys.stderr)
    elif ddp.rank() == 0:  # a fresh start: backbones kept by an earlier run are not this run's
        shutil.rmtree(Path(out).parent / "epochs", ignore_errors=True)
    progress = _progress(spec, plan["steps_per_epoch"], start_epoch)
    rank0 = ddp.rank() == 0
    Trainer(
        model, optimizer, compute, loss=_loss(compute), epochs=spec["epochs"],
        batches=at_epoch(loader),
        hooks=[
            # Reseeded per (seed, rank, epoch): a resumed epoch draws what it would have drawn, and no
            # per-rank RNG state needs saving.
            Reseed(lambda epoch: seed_everything(spec["seed"] * 1_000_003 + ddp.rank() * 10_007 + epoch)),
            LrSchedule(lambda trainer: epoch_lr(spec, trainer.epoch)),
            FiniteLoss(spec["run"], fix=f"pretrain.runs.{spec['run']}.lr, or its recipe's"),
            ProgressLog(progress),
            TensorBoard(Path(out).parent / "tensorboard", fresh=start_epoch == 0, enabled=rank0),
            History(history, spec["batch_size"]),
            EpochEnd(lambda trainer: rank0 and _report(spec, trainer.epoch, history[-1])),
            EpochCheckpoint(resume, spec["checkpoint_every"], model=method.state_dict,
                            extra=lambda: {"history": history}, enabled=rank0),
            EpochEnd(lambda trainer: _keep_backbone(spec, digest, trainer.epoch + 1, method, Path(out))),
        ],
    ).train(start_epoch=start_epoch, start_iter=progress.done, resumed=state)  # fmt: skip
    if ddp.rank() == 0:
        classifier, evaluation = _classifier(spec, method, held_out, compute)
        meta = _meta(spec, digest, spec["epochs"])
        save_backbone(out, backbone_state_dict(method.backbone), meta, classifier=classifier)
        write_json(log_json, {**record, **plan, **evaluation, "history": history})
        resume.clear()


def _held_out(spec: dict[str, Any], data_root: Path, compute: Compute) -> DataLoader | None:
    """A supervised run's held-out images of its classes (None: another method, or no such split)."""
    if spec["method"] != "supervised":
        return None
    kind, transform = spec.get("data_kind", "imagefolder"), eval_transform(spec["input_size"])
    dataset = pretraining_val_images(kind, data_root, transform)
    if dataset is None:
        return None
    workers = loader_workers(spec["workers"], compute.device)
    return DataLoader(dataset, batch_size=spec["batch_size"] // ddp.world_size(), num_workers=workers)


def _classifier(
    spec: dict[str, Any], method: nn.Module, held_out: DataLoader | None, compute: Compute
) -> tuple[dict[str, torch.Tensor] | None, dict[str, Any]]:
    """A supervised run's trained classifier (``fc.*``, kept in the checkpoint) and its own top-1 on the
    held-out images; the top-1 is None where the dataset has none (CelebA's identities)."""
    if spec["method"] != "supervised":
        return None, {}
    fc = {f"fc.{key}": value.detach().cpu().clone() for key, value in method.backbone.fc.state_dict().items()}
    if held_out is None:
        return fc, {"classifier_top1": None, "classifier_val_images": 0}
    top1, images = classifier_top1(method.backbone, held_out, compute)
    print(
        f"[pretrain] {spec['run']} classifier top-1 {top1:.2f} on {images} held-out images", file=sys.stderr
    )
    return fc, {"classifier_top1": top1, "classifier_val_images": images}


def _keep_backbone(spec: dict[str, Any], digest: str, done: int, method: nn.Module, out: Path) -> None:
    """The backbone every ``keep_every`` epochs (Figure 4's training curves)."""
    keep = spec.get("keep_every", 0)
    if keep and done % keep == 0 and ddp.rank() == 0:
        path = out.parent / "epochs" / f"epoch_{done:04d}.pt"
        save_backbone(path, backbone_state_dict(method.backbone), _meta(spec, digest, done))


def _record(spec: dict[str, Any], digest: str) -> dict[str, Any]:
    """What the training log says a run was made from: the whole resolved spec, so that a published
    run can be compared with the config that would use it (``goodtransfer.published``)."""
    return {"run": spec["run"], "config_hash": digest, "spec": spec}


def _meta(spec: dict[str, Any], digest: str, epoch: int) -> dict[str, Any]:
    return {
        "method": spec["method"],
        "run": spec["run"],
        "config_hash": digest,
        "epoch": epoch,
        "arch": spec["arch"],
    }
