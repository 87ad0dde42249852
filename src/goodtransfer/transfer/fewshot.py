"""Few-shot recognition on Mini-ImageNet novel classes (Table 4), Chen et al. 2019's "Baseline" protocol.

The backbone is frozen; every image gets one global-pooled last-stage feature under Chen et al.'s test
transform (square resize to ``int(input_size * resize_ratio)``, centre crop ``input_size``). Each episode
draws ``n_way`` novel classes, ``n_shot`` support and ``n_query`` query images per class, trains a fresh
linear classifier on the support features as ``BaselineFinetune.set_forward_adaptation`` does (nn.Linear
default init, SGD momentum 0.9 / dampening 0.9 / weight decay 0.001 on weight and bias, mini-batches of 4
from a new permutation each of 100 epochs, mean cross-entropy) and scores the queries. Accuracies (%) are
summarised by :func:`goodtransfer.evaluate.fewshot.mean_and_ci95`.

Speed: all episodes of a chunk are trained at once, (E, n_way, d) weights updated by batched matmuls with
the analytic softmax-cross-entropy gradient and torch.optim.SGD's update rule written out; every episode's
initial weights and batch order come from its own generator, so results do not depend on the chunking and
:func:`train_linear_episode` (plain nn.Linear + torch.optim.SGD) reproduces any one episode.

Episodes are a function of (seed, split, shot, episode index) and the class labels only, so every method
sees the same episodes for a seed. With ``lr_candidates`` the lr is chosen by mean accuracy (averaged over
the shot settings) on ``val_episodes`` episodes of the val classes. ``base_acc`` is a MoCo-lincls-style
linear classifier on cached base_train features, scored on the held-out base_val images.

Resuming: per-episode training is seconds, so only the features are kept. They are cached in
``state_dir/features_<part>.pt`` (written atomically), keyed by the backbone file's bytes, the dataset's
content, transform, precision and image list, and reused by a rerun; anything else is recomputed. The
cache is removed once metrics.json is written.

Spec keys (paper-scale value in brackets):
  run, seed, device, precision, channels_last   job name, seed of episodes and classifiers, Compute settings
  input_size [224], resize_ratio [1.15]         Chen et al.'s ResNet test transform (84-px images upscaled)
  feature_batch_size, workers                   feature-extraction DataLoader
  n_way [5], shots [[1, 5]], n_query [16], episodes [600]   test episodes per shot setting (Chen's paper
                                                text says 16 queries; its test.py uses 15)
  lr [0.01], epochs [100], batch_size [4], momentum [0.9], dampening [0.9], weight_decay [0.001]
                                                the per-episode classifier (lr is used when no search is run)
  lr_candidates [[0.001, 0.01, 0.1]], val_episodes [600]   lr search on val classes ([] = none)
  base_held_out [0.1], base_split_seed [0]      base-class division; must match the pretraining's base_train
  base_epochs, base_lr, base_milestones, base_batch_size, base_momentum, base_weight_decay
                                                base-class linear classifier (MoCo lincls: 100, 30, [60, 80],
                                                256, 0.9, 0)
Metrics: acc_<k>shot, ci95_<k>shot per shot setting, base_acc, selected_lr (== lr without a search),
lr_search ({lr: {"<k>shot": val accuracy}}, with a search), run, config_hash, checkpoint, seconds.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from goodtransfer.checkpoint import load_torch, save_torch
from goodtransfer.checkpoint_import import resnet_from_checkpoint
from goodtransfer.data.images import open_rgb
from goodtransfer.data.miniimagenet import base_class_split, load_split
from goodtransfer.data.transforms import normalize
from goodtransfer.device import Compute
from goodtransfer.engine import Trainer
from goodtransfer.engine.hooks import FiniteLoss, LrSchedule, ProgressLog
from goodtransfer.evaluate.fewshot import mean_and_ci95
from goodtransfer.finite import DivergedError, require_steps, task_key
from goodtransfer.io import InputError, spec_hash
from goodtransfer.models.backbone import pooled_features
from goodtransfer.progress import Progress
from goodtransfer.resume import dataset_digest, file_digest
from goodtransfer.schedule import step
from goodtransfer.transfer.tasks import DownstreamJob

TEST_STREAM, VAL_STREAM = 0, 1
EPISODE_CHUNK = 100  # episodes trained together; bounds memory (query features are E x 80 x d)


def _log(spec: dict[str, Any], message: str) -> None:
    print(f"[fewshot] {spec['run']} {message}", file=sys.stderr)


# --------------------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------------------


def chen_test_transform(input_size: int, resize_ratio: float) -> T.Compose:
    """CloserLookFewShot's test transform: Scale([int(s * 1.15)] * 2), CenterCrop(s), normalisation."""
    side = int(input_size * resize_ratio)
    return T.Compose([T.Resize((side, side)), T.CenterCrop(input_size), normalize()])


class _Images(Dataset):
    def __init__(self, paths: Sequence[Path], transform: T.Compose) -> None:
        self.paths, self.transform = list(paths), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(open_rgb(self.paths[index]))


class FeatureCache:
    """Frozen-backbone features of image lists, kept in ``state_dir/features_<name>.pt`` and reused."""

    def __init__(
        self, spec: dict[str, Any], checkpoint: Path, compute: Compute, state_dir: Path, data: str
    ) -> None:
        backbone, _ = resnet_from_checkpoint(checkpoint)
        self.backbone, self.spec, self.compute = compute.module(backbone).eval(), spec, compute
        self.state_dir = Path(state_dir)
        # A cache is valid for the same backbone bytes and the same transform and precision.
        keys = ("input_size", "resize_ratio", "precision", "channels_last")
        self.source = {"backbone": file_digest(checkpoint), "data": data, **{k: spec.get(k) for k in keys}}

    def __call__(self, name: str, paths: Sequence[Path]) -> torch.Tensor:
        key = spec_hash({**self.source, "files": [p.name for p in paths]})
        path = self.state_dir / f"features_{name}.pt"
        if path.is_file():
            cached = load_torch(path)
            if isinstance(cached, dict) and cached.get("key") == key:
                _log(self.spec, f"features {name}: reusing {path}")
                return cached["features"]
        features = self._extract(name, paths)
        save_torch(path, {"key": key, "features": features})
        return features

    @torch.no_grad()
    def _extract(self, name: str, paths: Sequence[Path]) -> torch.Tensor:
        spec, total = self.spec, len(paths)
        data = _Images(paths, chen_test_transform(spec["input_size"], spec["resize_ratio"]))
        loader = DataLoader(data, batch_size=spec["feature_batch_size"], num_workers=spec["workers"])
        chunks, done, began = [], 0, time.time()
        for batch in loader:
            with self.compute.autocast():
                chunks.append(pooled_features(self.backbone, self.compute.images(batch)).float().cpu())
            done += len(batch)
            if len(chunks) % 50 == 0 or done == total:
                rate = done / max(time.time() - began, 1e-9)
                _log(
                    spec, f"features {name} {done}/{total} {rate:.1f} img/s ETA {(total - done) / rate:.0f}s"
                )
        return torch.cat(chunks)


# --------------------------------------------------------------------------------------------------------
# Episodes
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Episodes:
    """Row indices into a split's features: support (E, n_way, n_shot), query (E, n_way, n_query)."""

    support: np.ndarray
    query: np.ndarray
    seeds: np.ndarray  # (E,) seed of each episode's classifier (initial weights, batch order)


def sample_episodes(
    labels: Sequence[int], *, n_way: int, n_shot: int, n_query: int, episodes: int, seed: int, stream: int
) -> Episodes:
    """Chen et al.'s draw: ``n_way`` distinct classes, then ``n_shot + n_query`` distinct images of each."""
    labels = np.asarray(labels)
    members = [np.flatnonzero(labels == c) for c in range(int(labels.max()) + 1)]
    members = [m for m in members if m.size]
    if len(members) < n_way:
        raise InputError(f"n_way: {n_way} classes per episode but the split has {len(members)} classes")
    smallest = min(m.size for m in members)
    if smallest < n_shot + n_query:
        raise InputError(f"n_shot + n_query: {n_shot} + {n_query} images per class; a class has {smallest}")
    support = np.empty((episodes, n_way, n_shot), dtype=np.int64)
    query = np.empty((episodes, n_way, n_query), dtype=np.int64)
    seeds = np.empty(episodes, dtype=np.int64)
    for e in range(episodes):
        rng = np.random.default_rng([seed, stream, n_shot, e])
        for way, cls in enumerate(rng.choice(len(members), n_way, replace=False)):
            picked = rng.choice(members[cls], n_shot + n_query, replace=False)
            support[e, way], query[e, way] = picked[:n_shot], picked[n_shot:]
        seeds[e] = int(rng.integers(2**62))
    return Episodes(support, query, seeds)


def classifier_randomness(
    seeds: Sequence[int], feat_dim: int, n_way: int, support_size: int, epochs: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per episode: nn.Linear's default init (weight, bias ~ U(+-1/sqrt(d))) and a permutation per epoch."""
    bound = 1.0 / math.sqrt(feat_dim)
    weights, biases, perms = [], [], []
    for seed in seeds:
        gen = torch.Generator().manual_seed(int(seed))
        weights.append((torch.rand(n_way, feat_dim, generator=gen) * 2 - 1) * bound)
        biases.append((torch.rand(n_way, generator=gen) * 2 - 1) * bound)
        perms.append(torch.rand(epochs, support_size, generator=gen).argsort(dim=1))
    return torch.stack(weights), torch.stack(biases), torch.stack(perms)


# --------------------------------------------------------------------------------------------------------
# Per-episode linear classifier
# --------------------------------------------------------------------------------------------------------


def train_linear_batched(
    x: torch.Tensor,
    y: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    perms: torch.Tensor,
    opt: dict[str, float],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Train E independent classifiers: x (E, S, d), y (E, S), w (E, n, d), b (E, n), perms (E, epochs, S).

    Per episode this is mean cross-entropy over each mini-batch and torch.optim.SGD's rule: d = g + wd * p;
    buf = d on the first step, else momentum * buf + (1 - dampening) * d; p -= lr * buf."""
    n_way, support = w.shape[1], x.shape[1]
    onehot = F.one_hot(y, n_way).float()
    buf_w = buf_b = None
    for epoch in range(perms.shape[1]):
        for start in range(0, support, int(opt["batch_size"])):
            idx = perms[:, epoch, start : start + int(opt["batch_size"])]
            xb = torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[2]))
            yb = torch.gather(onehot, 1, idx[..., None].expand(-1, -1, n_way))
            logits = torch.baddbmm(b[:, None, :], xb, w.transpose(1, 2))
            grad = (logits.softmax(dim=2) - yb) / idx.shape[1]
            d_w = torch.bmm(grad.transpose(1, 2), xb) + opt["weight_decay"] * w
            d_b = grad.sum(dim=1) + opt["weight_decay"] * b
            if buf_w is None or buf_b is None:
                buf_w, buf_b = d_w, d_b
            else:
                buf_w = opt["momentum"] * buf_w + (1 - opt["dampening"]) * d_w
                buf_b = opt["momentum"] * buf_b + (1 - opt["dampening"]) * d_b
            w, b = w - opt["lr"] * buf_w, b - opt["lr"] * buf_b
    return w, b


def train_linear_episode(
    x: torch.Tensor,
    y: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    perms: torch.Tensor,
    opt: dict[str, float],
) -> nn.Linear:
    """One episode as Chen et al.'s loop: nn.Linear, torch.optim.SGD, cross-entropy (the reference)."""
    classifier = nn.Linear(x.shape[1], w.shape[0]).to(x.device)
    with torch.no_grad():
        classifier.weight.copy_(w)
        classifier.bias.copy_(b)
    optimizer = torch.optim.SGD(
        classifier.parameters(),
        lr=opt["lr"],
        momentum=opt["momentum"],
        dampening=opt["dampening"],
        weight_decay=opt["weight_decay"],
    )
    for order in perms:
        for start in range(0, x.shape[0], int(opt["batch_size"])):
            selected = order[start : start + int(opt["batch_size"])]
            loss = F.cross_entropy(classifier(x[selected]), y[selected])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return classifier


def _optimiser(spec: dict[str, Any], lr: float) -> dict[str, float]:
    keys = ("batch_size", "momentum", "dampening", "weight_decay")
    return {"lr": float(lr), **{k: float(spec[k]) for k in keys}}


def episode_accuracies(
    features: torch.Tensor, episodes: Episodes, spec: dict[str, Any], lr: float, device: torch.device
) -> np.ndarray:
    """Query accuracy (%) of every episode, its classifier trained on the support features."""
    _, n_way, n_shot = episodes.support.shape
    n_query, dim = episodes.query.shape[2], features.shape[1]
    # Class-major labels, as np.repeat(range(n_way), n_support) in Chen et al.
    y_support = torch.arange(n_way, device=device).repeat_interleave(n_shot)
    y_query = torch.arange(n_way, device=device).repeat_interleave(n_query)
    out = []
    for start in range(0, len(episodes.seeds), EPISODE_CHUNK):
        part = slice(start, start + EPISODE_CHUNK)
        x = features[torch.from_numpy(episodes.support[part])].reshape(-1, n_way * n_shot, dim).to(device)
        w, b, perms = classifier_randomness(episodes.seeds[part], dim, n_way, n_way * n_shot, spec["epochs"])
        y = y_support.expand(len(x), -1)
        w, b = train_linear_batched(x, y, w.to(device), b.to(device), perms.to(device), _optimiser(spec, lr))
        if not bool(torch.isfinite(w).all() & torch.isfinite(b).all()):  # one sync per chunk, as .cpu() below
            raise DivergedError(
                f"run {spec['run']}: the episode classifiers' weights are not finite at lr {lr:g}; training "
                f"diverged: lower {task_key(spec, 'lr')} / {task_key(spec, 'lr_candidates')}"
            )
        q = features[torch.from_numpy(episodes.query[part])].reshape(-1, n_way * n_query, dim).to(device)
        predicted = torch.baddbmm(b[:, None, :], q, w.transpose(1, 2)).argmax(dim=2)
        out.append(((predicted == y_query).double().mean(dim=1) * 100.0).cpu())
    return torch.cat(out).numpy().astype(np.float64)


def _episodes(labels: Sequence[int], spec: dict[str, Any], shot: int, count: int, stream: int) -> Episodes:
    sizes = {"n_way": spec["n_way"], "n_query": spec["n_query"], "seed": spec["seed"]}
    return sample_episodes(labels, n_shot=shot, episodes=count, stream=stream, **sizes)


def select_lr(
    features: torch.Tensor, labels: Sequence[int], spec: dict[str, Any], device: torch.device
) -> tuple[float, dict[str, dict[str, float]]]:
    """The candidate lr with the best val accuracy averaged over shot settings (first one on ties)."""
    table: dict[str, dict[str, float]] = {}
    best, best_score = float(spec["lr_candidates"][0]), -1.0
    for lr in spec["lr_candidates"]:
        scores = {}
        for shot in spec["shots"]:
            episodes = _episodes(labels, spec, shot, spec["val_episodes"], VAL_STREAM)
            scores[f"{shot}shot"] = float(episode_accuracies(features, episodes, spec, lr, device).mean())
        table[str(lr)] = scores
        score = float(np.mean(list(scores.values())))
        _log(spec, f"val lr {lr}: " + " ".join(f"{k} {v:.2f}" for k, v in scores.items()))
        if score > best_score:
            best, best_score = float(lr), score
    return best, table


# --------------------------------------------------------------------------------------------------------
# Base-class accuracy
# --------------------------------------------------------------------------------------------------------


Labelled = tuple[torch.Tensor, torch.Tensor]  # (features, labels)


def base_accuracy(train: Labelled, val: Labelled, spec: dict[str, Any], compute: Compute) -> float:
    """MoCo lincls on cached features: N(0, 0.01) init, SGD, lr x0.1 at ``base_milestones``; val top-1 (%)."""
    device = compute.device
    x, y = train[0].to(device), train[1].to(device)
    classifier = nn.Linear(x.shape[1], int(torch.cat([train[1], val[1]]).max()) + 1).to(device)
    # Own generator: cached and fresh features must give the same init (DataLoaders consume the global RNG).
    generator = torch.Generator().manual_seed(spec["seed"])
    classifier.weight.data.copy_(torch.randn(classifier.weight.shape, generator=generator) * 0.01)
    classifier.bias.data.zero_()
    optimizer = torch.optim.SGD(classifier.parameters(), lr=spec["base_lr"], momentum=spec["base_momentum"],
                                weight_decay=spec["base_weight_decay"])  # fmt: skip
    per_epoch, epochs = -(-len(x) // spec["base_batch_size"]), spec["base_epochs"]
    require_steps(per_epoch, run=spec["run"], images=len(x), batch=spec["base_batch_size"], drop_last=False,
                  fix="add images to the base classes' training split")  # fmt: skip
    every = per_epoch * max(1, epochs // 10)  # ten log lines
    progress = Progress(f"fewshot {spec['run']} base", epochs * per_epoch, unit="img",
                        items_per_step=spec["base_batch_size"], every=every)  # fmt: skip

    def batches(epoch: int) -> tuple[torch.Tensor, ...]:
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(spec["seed"] * 1009 + epoch))
        return order.to(device).split(spec["base_batch_size"])

    Trainer(
        classifier, optimizer, compute, batches=batches, epochs=epochs, autocast=False,
        loss=lambda model, batch: {"loss": F.cross_entropy(model(x[batch]), y[batch])},
        hooks=[
            LrSchedule(lambda trainer: step(spec["base_lr"], trainer.epoch, spec["base_milestones"])),
            FiniteLoss(spec["run"], fix=task_key(spec, "base_lr")),
            ProgressLog(progress),
        ],
    ).train()  # fmt: skip
    with torch.no_grad():
        predicted = classifier(val[0].to(device)).argmax(dim=1).cpu()
    return float((predicted == val[1]).double().mean() * 100.0)


# --------------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------------


def run(job: DownstreamJob) -> dict[str, Any]:
    """Few-shot test accuracies, the lr used and base-class accuracy."""
    spec, data_root = job.spec, job.data
    compute = Compute.from_spec(spec)
    features = FeatureCache(
        spec, job.checkpoint, compute, job.state_dir, dataset_digest(data_root, job.data_checks)
    )
    metrics: dict[str, Any] = {}
    lr = float(spec["lr"])
    if spec["lr_candidates"]:
        val_paths, val_labels, _ = load_split(data_root, "val")
        lr, metrics["lr_search"] = select_lr(features("val", val_paths), val_labels, spec, compute.device)
    test_paths, test_labels, _ = load_split(data_root, "test")
    test_x = features("test", test_paths)
    for shot in spec["shots"]:
        episodes = _episodes(test_labels, spec, shot, spec["episodes"], TEST_STREAM)
        acc = episode_accuracies(test_x, episodes, spec, lr, compute.device)
        mean, ci95 = metrics[f"acc_{shot}shot"], metrics[f"ci95_{shot}shot"] = mean_and_ci95(acc)
        _log(spec, f"{shot}-shot {mean:.2f} +- {ci95:.2f} over {len(acc)} episodes (lr {lr})")
    parts = base_class_split(data_root, spec["base_held_out"], spec["base_split_seed"])
    base = {name: (features(name, paths), torch.tensor(labels)) for name, (paths, labels) in parts.items()}
    metrics["base_acc"] = base_accuracy(base["base_train"], base["base_val"], spec, compute)
    _log(spec, f"base-class accuracy {metrics['base_acc']:.2f}")
    return {**metrics, "selected_lr": lr, "episodes": spec["episodes"], "n_way": spec["n_way"],
            "n_query": spec["n_query"]}  # fmt: skip
