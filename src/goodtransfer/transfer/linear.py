"""Linear readout (ImageNet-Acc column): a linear classifier on frozen, globally pooled res5 features.

With ``augment_train`` the frozen backbone sees RandomResizedCrop + flip every epoch (MoCo's lincls);
without it, features are computed once with the evaluation transform and cached, which is what the
embedded default uses to stay within minutes.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision import transforms as T

from goodtransfer.checkpoint_import import resnet_from_checkpoint
from goodtransfer.data.imagefolder import image_folder
from goodtransfer.data.transforms import eval_transform, normalize
from goodtransfer.device import Compute
from goodtransfer.finite import check_finite_loss
from goodtransfer.io import spec_hash, write_json
from goodtransfer.models.backbone import feature_dim, pooled_features
from goodtransfer.resume import seed_everything
from goodtransfer.schedule import epoch_lr


@torch.no_grad()
def extract_features(backbone: nn.Module, loader: DataLoader, compute: Compute) -> TensorDataset:
    backbone.eval()
    features, labels = [], []
    for images, targets in loader:
        with compute.autocast():
            features.append(pooled_features(backbone, compute.images(images)).float().cpu())
        labels.append(targets)
    return TensorDataset(torch.cat(features), torch.cat(labels))


def _batches(dataset, spec: dict[str, Any], shuffle: bool, epoch: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(spec["seed"] * 1009 + epoch)
    workers = spec["workers"] if not isinstance(dataset, TensorDataset) else 0
    return DataLoader(
        dataset, batch_size=spec["batch_size"], shuffle=shuffle, generator=generator, num_workers=workers
    )


def _features_of(backbone, batch, compute: Compute, cached: bool) -> torch.Tensor:
    if cached:
        return batch.to(compute.device)
    with torch.no_grad(), compute.autocast():
        return pooled_features(backbone, compute.images(batch)).float()


def _train_epoch(
    backbone, classifier, loader, optimizer, compute: Compute, cached: bool, where: dict
) -> float:
    """One epoch; ``where`` ({"run", "epoch"}, 1-based) names it if the loss stops being finite."""
    total, count = 0.0, 0
    for inputs, targets in loader:
        loss = F.cross_entropy(
            classifier(_features_of(backbone, inputs, compute, cached)), targets.to(compute.device)
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = loss.item()
        lr = optimizer.param_groups[0]["lr"]
        check_finite_loss(
            value, run=where["run"], step=f"epoch {where['epoch']} step {count + 1}", lr=lr, fix="linear.lr"
        )
        total, count = total + value, count + 1
    return total / max(count, 1)


@torch.no_grad()
def top1(backbone, classifier, loader, compute: Compute, cached: bool) -> float:
    correct = total = 0
    for inputs, targets in loader:
        predicted = classifier(_features_of(backbone, inputs, compute, cached)).argmax(dim=1).cpu()
        correct += int((predicted == targets).sum())
        total += len(targets)
    return 100.0 * correct / max(total, 1)


def linear_readout(spec: dict[str, Any], checkpoint: Path, data_root: Path, metrics_out: Path) -> None:
    """Train a linear classifier on frozen features of ``checkpoint``; write top-1 on ``val``."""
    digest, began = spec_hash(spec), time.time()
    seed_everything(spec["seed"])
    compute = Compute.from_spec(spec)
    backbone, _ = resnet_from_checkpoint(checkpoint)
    backbone = compute.module(backbone).eval()
    size = spec["input_size"]
    val = image_folder(data_root, "val", eval_transform(size))
    cached = not spec["augment_train"]
    if cached:
        train = extract_features(
            backbone, _batches(image_folder(data_root, "train", eval_transform(size)), spec, False), compute
        )
        val = extract_features(backbone, _batches(val, spec, False), compute)
    else:
        augment = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), normalize()])
        train = image_folder(data_root, "train", augment)
    num_classes = len(image_folder(data_root, "train", None).classes)
    classifier = nn.Linear(feature_dim(backbone), num_classes).to(compute.device)
    classifier.weight.data.normal_(0, 0.01)  # MoCo lincls init
    classifier.bias.data.zero_()
    optimizer = torch.optim.SGD(
        classifier.parameters(), lr=spec["lr"], momentum=spec["momentum"], weight_decay=spec["weight_decay"]
    )
    for epoch in range(spec["epochs"]):
        for group in optimizer.param_groups:
            group["lr"] = epoch_lr(spec, epoch)
        loss = _train_epoch(
            backbone,
            classifier,
            _batches(train, spec, True, epoch),
            optimizer,
            compute,
            cached,
            {"run": spec["run"], "epoch": epoch + 1},
        )
    accuracy = top1(backbone, classifier, _batches(val, spec, False), compute, cached)
    print(f"[linear] {spec['run']} top-1 {accuracy:.2f} (final train loss {loss:.3f})", file=sys.stderr)
    write_json(
        metrics_out,
        {
            "top1": accuracy,
            "run": spec["run"],
            "config_hash": digest,
            "checkpoint": str(checkpoint),
            "epochs": spec["epochs"],
            "train_loss": loss,
            "seconds": round(time.time() - began, 1),
        },
    )
