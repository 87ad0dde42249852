"""Seconds per training iteration of the VOC07 Faster R-CNN R50-C4 at the paper's input sizes.

Random 500x375 images (a typical VOC size) resized by the model's transform to a shortest side drawn
from the preset's 480..800, up to 4 boxes each; one SGD step per iteration.

    python bench/voc_c4_iteration.py --batch 2 --iters 2 --configfile presets/paper.yaml
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from goodtransfer import config as gtc
from goodtransfer.device import Compute
from goodtransfer.io import read_yaml
from goodtransfer.models.backbone import build_resnet
from goodtransfer.transfer.c4 import build_c4_detector


def _batch(size: int, classes: int, generator: torch.Generator) -> tuple[list, list]:
    images = [torch.rand(3, 375, 500, generator=generator) for _ in range(size)]
    targets = []
    for _ in range(size):
        corners = torch.rand(4, 2, generator=generator) * torch.tensor([250.0, 180.0])
        boxes = torch.cat([corners, corners + 60 + torch.rand(4, 2, generator=generator) * 120], dim=1)
        targets.append({"boxes": boxes, "labels": torch.randint(1, classes + 1, (4,), generator=generator)})
    return images, targets


def measure(spec: dict, compute: Compute, batch: int, iters: int) -> float:
    torch.manual_seed(0)
    model = compute.module(build_c4_detector(build_resnet("resnet50"), len(spec["classes"]), spec)).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    times = []
    for step in range(iters + 1):  # the first iteration is warm-up
        images, targets = _batch(batch, len(spec["classes"]), generator)
        targets = [{k: v.to(compute.device) for k, v in t.items()} for t in targets]
        start = time.perf_counter()
        with compute.autocast():
            loss = sum(model([compute.images(i) for i in images], targets).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if compute.device.type == "cuda":
            torch.cuda.synchronize()
        if step:
            times.append(time.perf_counter() - start)
    return sum(times) / len(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configfile", default="presets/paper.yaml")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    config = gtc.deep_merge(read_yaml("config.yaml"), read_yaml(args.configfile))
    spec = gtc.downstream_spec(config, "voc07", "bench")
    results = {}
    for name, channels_last, precision in (("fp32", False, "fp32"), ("channels_last+bf16", True, "bf16")):
        compute = Compute.from_spec(
            {"device": args.device, "channels_last": channels_last, "precision": precision}
        )
        results[name] = round(measure(spec, compute, args.batch, args.iters), 2)
        print(
            f"VOC07 R50-C4 batch {args.batch} on {compute.device}: {name:20s} {results[name]:7.2f} s/iter",
            flush=True,
        )
    print(
        json.dumps(
            {
                **vars(args),
                "device": str(compute.device),
                "threads": torch.get_num_threads(),
                "roi_batch": spec["roi_heads"]["batch_size_per_image"],
                "s_per_iter": results,
            }
        )
    )


if __name__ == "__main__":
    main()
