"""CPU seconds (user + system) of a tiny pretraining and a linear readout, run fresh and through the warm
server (goodtransfer.warm): fresh is the job's process; warm is the client's process plus the forked child's
CPU from the server's log (a child's CPU is charged to the server). Median of ``--repeats`` runs each:

    PYTHONPATH=src:. python bench/warm_cpu.py --repeats 3   # from the repository root (tests.workflow)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from goodtransfer.data.synthetic.imagenet import generate_imagenet
from goodtransfer.follow import ONE_THREAD
from tests.workflow import FP32_CPU, pretrain_command, protocol_spec, tiny_moco_spec


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(command: list[str], env: dict[str, str]) -> float:
    before = _children_cpu()
    subprocess.run(command, env=env, check=True, capture_output=True)
    return _children_cpu() - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="warm-cpu-") as folder:
        measure(Path(folder), args.repeats)


def measure(work: Path, repeats: int) -> None:
    data = work / "imagenet"
    generate_imagenet(data, num_classes=2, train_per_class=12, val_per_class=4, image_size=36, seed=0)
    pretrain = tiny_moco_spec(run="bench-pretrain", epochs=2)
    linear = protocol_spec("linear", "bench-readout", epochs=2, milestones=[1], batch_size=8, **FP32_CPU)
    backbone = work / "backbone"
    env = {**os.environ, **ONE_THREAD}
    env.pop("GOODTRANSFER_WARM", None)
    subprocess.run(pretrain_command(pretrain, data, backbone), env=env, check=True, capture_output=True)

    def jobs(out: Path) -> dict[str, list[str]]:
        readout = [sys.executable, "-m", "goodtransfer", "--threads", "1", "downstream",
                   "--spec", json.dumps(linear), "--checkpoint", str(backbone / "checkpoint.pt"),
                   "--data", str(data), "--metrics", str(out / "linear/metrics.json"),
                   "--state-dir", str(out / "linear/state")]  # fmt: skip
        return {"pretrain": pretrain_command(pretrain, data, out / "pretrain"), "linear": readout}

    fresh = {name: [] for name in ("pretrain", "linear")}
    for i in range(repeats):
        for name, command in jobs(work / f"fresh{i}").items():
            fresh[name].append(_timed(command, env))
    address, log = work / "socket", work / "warm.log"
    server_command = [sys.executable, "-m", "goodtransfer.warm", "serve", str(address), "--log", str(log)]
    server = subprocess.Popen(server_command, env=env, stderr=subprocess.DEVNULL)
    while not address.exists():
        assert server.poll() is None, "the warm server did not start"
        time.sleep(0.1)
    client = {name: [] for name in fresh}
    try:
        for i in range(repeats):
            for name, command in jobs(work / f"warm{i}").items():
                client[name].append(_timed(command, {**env, "GOODTRANSFER_WARM": str(address)}))
    finally:
        server.terminate()
        server.wait()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    child = {"pretrain": [j["cpu_s"] for j in lines if j["command"] == "pretrain"],
             "linear": [j["cpu_s"] for j in lines if j["command"] == "downstream linear"]}  # fmt: skip
    print(f"{'job':10} {'fresh':>8} {'client':>8} {'child':>8} {'warm':>8}   (CPU seconds, median)")
    for name in fresh:
        med = {
            k: statistics.median(v[name]) for k, v in (("fresh", fresh), ("client", client), ("child", child))
        }
        print(f"{name:10} {med['fresh']:8.2f} {med['client']:8.2f} {med['child']:8.2f} "
              f"{med['client'] + med['child']:8.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
