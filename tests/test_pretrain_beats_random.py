"""Every pretraining method of the embedded config learns something: on the embedded ImageNet stand-in,
its linear readout beats that of a randomly initialised backbone.

The runs use config.yaml's own recipes, data and readout, unchanged, one run per recipe (the full
augmentation row where a recipe has several), two one-thread jobs at a time: about 3-4 minutes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from goodtransfer import config as gtc
from goodtransfer.checkpoint import save_backbone
from goodtransfer.data.registry import generate
from goodtransfer.io import read_yaml
from goodtransfer.models.backbone import backbone_state_dict, build_resnet
from tests.workflow import ROOT

RUNS = ("supervised-frcgb", "mocov1", "mocov2-frcgb", "exemplarv1", "exemplarv2", "supcon")
# Top-1 points above the random backbone (49.7). Observed at 8 epochs: supervised +16, MoCo-v1 +13,
# Exemplar-v1 +10, Exemplar-v2 +5, MoCo-v2 +3 (+0.9 at the former 15 epochs), SupCon +3.
MARGIN = 2.0


def _goodtransfer(*args: str) -> None:
    command = [sys.executable, "-m", "goodtransfer", "--threads", "1", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]


def _readout(config: dict, name: str, checkpoint: Path, data: Path, out: Path) -> float:
    spec = json.dumps(gtc.downstream_spec(config, "linear", name))
    metrics = out / f"{name}-linear" / "metrics.json"
    _goodtransfer("downstream", "--spec", spec, "--checkpoint", str(checkpoint), "--data", str(data),
                  "--metrics", str(metrics), "--state-dir", str(metrics.parent / "state"))  # fmt: skip
    return json.loads(metrics.read_text())["top1"]


def _pretrain_and_read_out(config: dict, run: str, data: Path, out: Path) -> float:
    spec = json.dumps(gtc.pretrain_spec(config, run))
    checkpoint = out / run / "checkpoint.pt"
    state, log = out / run / "state", out / run / "log.json"
    _goodtransfer("pretrain", "--spec", spec, "--data", str(data), "--out", str(checkpoint),
                  "--state-dir", str(state), "--train-log", str(log))  # fmt: skip
    return _readout(config, run, checkpoint, data, out)


@pytest.fixture(scope="module")
def readouts(tmp_path_factory) -> dict[str, float]:
    config = read_yaml(ROOT / "config.yaml")
    out = tmp_path_factory.mktemp("beats-random")
    entry = gtc.dataset_of(config, "imagenet")
    data = out / "imagenet"
    generate(entry["kind"], data, config["seed"], entry["generate"])
    torch.manual_seed(config["seed"])
    random_checkpoint = out / "random.pt"
    meta = {"method": "random", "run": "random", "config_hash": "-", "epoch": 0, "arch": "resnet10"}
    save_backbone(random_checkpoint, backbone_state_dict(build_resnet("resnet10")), meta)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {run: pool.submit(_pretrain_and_read_out, config, run, data, out) for run in RUNS}
        futures["random"] = pool.submit(_readout, config, "random", random_checkpoint, data, out)
        results = {name: future.result() for name, future in futures.items()}
    print("linear readout top-1 on the embedded ImageNet stand-in:", json.dumps(results))  # -rP shows it
    return results


@pytest.mark.parametrize("run", RUNS)
def test_pretrained_backbone_reads_out_better_than_a_random_one(readouts, run):
    assert readouts[run] > readouts["random"] + MARGIN, readouts


def test_supervised_pretraining_reads_out_best_on_its_own_labels(readouts):
    # The readout task is the pretraining task of the supervised run, so it must lead (paper Table 1).
    assert readouts["supervised-frcgb"] == max(readouts.values()), readouts
