"""Pretraining throughput (img/s) of one training step, MoCo-v2 by default, on the CPU or a GPU.

Measures the steady-state step (forward of both encoders, backward, SGD, momentum update, enqueue) on
random tensors, so data loading is excluded. Settings: fp32; channels_last; channels_last + bf16. For MoCo
and Exemplar each setting runs these shuffle-BN variants side by side:

    unsplit      one BatchNorm batch (shuffle_bn_splits: 1, or one GPU per split)
    split-S      S splits by SplitBatchNorm2d: convolutions over the whole batch, BN per chunk
    chunked-S    S splits the earlier way: a whole encoder call per chunk (S times the convolution calls)
    official     facebookresearch/moco's builder.py, when ``--official`` names a local copy of that file
                 (one process, one-rank gloo group: its shuffle is then the identity, as ``unsplit``)

The variants take turns step by step and each keeps its median step, so that a load that comes and goes
on a shared machine hits them alike; ``--clock cpu`` (CPU time of this process, with ``--threads 1``) is
steadier still there. On a GPU the clock is wall time after a synchronize.

    python bench/pretrain_throughput.py --arch resnet50 --size 224 --batch 32 --steps 5
    python bench/pretrain_throughput.py --size 112 --batch 16 --steps 9 --threads 1 --clock cpu
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

from goodtransfer.device import Compute
from goodtransfer.models.backbone import build_resnet
from goodtransfer.pretrain import build_method
from goodtransfer.pretrain.shuffle_bn import chunked_forward

SETTINGS = (("fp32", False, "fp32"), ("channels_last", True, "fp32"), ("channels_last+bf16", True, "bf16"))


def _spec(args: argparse.Namespace, splits: int) -> dict:
    moco = {"dim": 128, "K": args.K, "m": 0.999, "T": 0.2, "mlp": True, "shuffle_bn_splits": splits}
    return {"method": args.method, "arch": args.arch, "moco": moco}


def _project_step(args: argparse.Namespace, compute: Compute, variant: str) -> Callable[[], None]:
    kind, _, splits = variant.partition("-")
    splits = int(splits or 1)
    model = build_method(_spec(args, splits if kind == "split" else 1), num_classes=1000)
    if kind == "chunked":  # the earlier shuffle-BN, kept as the reference of the split BN's test
        model._forward_split = lambda encoder, images: chunked_forward(encoder, images, splits)
    model = compute.module(model).train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.03, momentum=0.9)
    views = [compute.images(torch.randn(args.batch, 3, args.size, args.size)) for _ in range(2)]
    targets = torch.randint(0, 1000, (args.batch,), device=compute.device)
    inputs = views if model.two_views else views[0]

    def step() -> None:
        with compute.autocast():
            loss = model(inputs, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


@contextmanager
def _cuda_calls_stay_on(device: torch.device) -> Iterator[None]:
    """The official builder moves two index tensors with ``.cuda()``; on a CPU they stay where they are."""
    if device.type == "cuda":
        yield
        return
    original = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.cuda = original


def _official_step(args: argparse.Namespace, compute: Compute, path: Path) -> Callable[[], None]:
    """The official MoCo-v2 builder on a one-rank process group (it all-gathers keys and shuffles across
    ranks); its module is loaded from ``path``, never vendored."""
    spec = importlib.util.spec_from_file_location("official_moco_builder", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--official {path}: not a Python file")
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    if not torch.distributed.is_initialized():
        backend = "nccl" if compute.device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(
            backend, init_method="tcp://127.0.0.1:29531", rank=0, world_size=1
        )
    model = builder.MoCo(
        lambda num_classes: build_resnet(args.arch, num_classes), dim=128, K=args.K, m=0.999, T=0.2, mlp=True
    )
    model = compute.module(model).train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.03, momentum=0.9)
    views = [compute.images(torch.randn(args.batch, 3, args.size, args.size)) for _ in range(2)]

    def step() -> None:
        with compute.autocast(), _cuda_calls_stay_on(compute.device):
            logits, labels = model(im_q=views[0], im_k=views[1])
            loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def measure(args: argparse.Namespace, compute: Compute, variants: list[str]) -> dict[str, float]:
    """img/s of each variant's steady-state step: after ``--warmup`` steps each, the variants take turns
    step by step, and each keeps its median step time."""
    steps = {}
    for variant in variants:
        torch.manual_seed(0)
        steps[variant] = (
            _official_step(args, compute, args.official)
            if variant == "official"
            else _project_step(args, compute, variant)
        )
        for _ in range(args.warmup):
            steps[variant]()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    times: dict[str, list[float]] = {variant: [] for variant in variants}
    for _ in range(args.steps):
        for variant, step in steps.items():
            if compute.device.type == "cuda":
                torch.cuda.synchronize()
            start = clock()
            step()
            if compute.device.type == "cuda":
                torch.cuda.synchronize()
            times[variant].append(clock() - start)
    return {variant: args.batch / statistics.median(spent) for variant, spent in times.items()}


def _variants(args: argparse.Namespace) -> list[str]:
    if args.method == "supervised":
        return ["unsplit"]
    variants = ["unsplit"]
    for splits in args.splits:
        variants += [f"split-{splits}", f"chunked-{splits}"]
    return variants + (["official"] if args.official else [])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--method", default="moco", choices=["moco", "exemplar", "supervised"])
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--K", type=int, default=65536, help="queue size (a multiple of --batch)")
    parser.add_argument("--splits", type=int, nargs="*", default=[2, 8], help="shuffle-BN splits to compare")
    parser.add_argument(
        "--settings", nargs="*", default=[s[0] for s in SETTINGS], choices=[s[0] for s in SETTINGS]
    )
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--clock", default="wall", choices=["wall", "cpu"])
    parser.add_argument(
        "--official", type=Path, help="a local copy of facebookresearch/moco's moco/builder.py"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if any(args.batch % s for s in args.splits):
        parser.error(f"--batch {args.batch} does not split into {args.splits} equal chunks")
    results: dict[str, dict[str, float]] = {}
    for name, channels_last, precision in SETTINGS:
        if name not in args.settings:
            continue
        compute = Compute.from_spec(
            {"device": args.device, "channels_last": channels_last, "precision": precision}
        )
        measured = measure(args, compute, _variants(args))
        results[name] = {variant: round(value, 2) for variant, value in measured.items()}
        for variant, value in measured.items():
            print(
                f"{args.method} {args.arch} {args.size}px batch {args.batch} on {compute.device}: {name:20s} "
                f"{variant:11s} {value:8.2f} img/s  x{value / measured['unsplit']:.3f} of unsplit",
                flush=True,
            )
    print(json.dumps({**vars(args), "official": str(args.official or ""), "device": str(compute.device),
                      "threads": torch.get_num_threads(), "img_per_s": results}))  # fmt: skip


if __name__ == "__main__":
    main()
