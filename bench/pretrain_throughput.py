"""Pretraining throughput (img/s) of one training step, MoCo-v2 by default, on the CPU or a GPU.

Measures the steady-state step (forward of both encoders, backward, SGD, momentum update, enqueue) on
random tensors, so data loading is excluded. Each variant: fp32; channels_last; channels_last + bf16.

    python bench/pretrain_throughput.py --arch resnet50 --size 224 --batch 32 --steps 5
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from goodtransfer.device import Compute
from goodtransfer.pretrain import build_method


def _spec(args: argparse.Namespace, method: str) -> dict:
    moco = {"dim": 128, "K": 65536, "m": 0.999, "T": 0.2, "mlp": True, "shuffle_bn_splits": 1}
    return {"method": method, "arch": args.arch, "moco": moco}


def measure(args: argparse.Namespace, compute: Compute) -> float:
    torch.manual_seed(0)
    model = compute.module(build_method(_spec(args, args.method), num_classes=1000)).train()
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

    for _ in range(args.warmup):
        step()
    if compute.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if compute.device.type == "cuda":
        torch.cuda.synchronize()
    return args.batch * args.steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--method", default="moco", choices=["moco", "exemplar", "supervised"])
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {}
    for name, channels_last, precision in (
        ("fp32", False, "fp32"),
        ("channels_last", True, "fp32"),
        ("channels_last+bf16", True, "bf16"),
    ):
        compute = Compute.from_spec(
            {"device": args.device, "channels_last": channels_last, "precision": precision}
        )
        results[name] = round(measure(args, compute), 2)
        print(
            f"{args.method} {args.arch} {args.size}px batch {args.batch} on {compute.device}: "
            f"{name:20s} {results[name]:8.2f} img/s",
            flush=True,
        )
    print(
        json.dumps(
            {
                **vars(args),
                "device": str(compute.device),
                "threads": torch.get_num_threads(),
                "img_per_s": results,
            }
        )
    )


if __name__ == "__main__":
    main()
