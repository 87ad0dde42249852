"""The registered transfer tasks run end to end through the real Snakemake workflow on their stand-ins."""

from __future__ import annotations

import json
import math

import pytest

from tests.workflow import copy_workflow, snakemake

PROTOCOL_METRICS = {
    "coco": ("bbox_AP", "bbox_AP50", "bbox_AP75", "segm_AP", "segm_AP50", "segm_AP75"),
    "cityscapes": ("mIoU", "mAcc", "aAcc"),
    "fewshot": ("acc_1shot", "ci95_1shot", "acc_5shot", "ci95_5shot", "base_acc"),
    "mafl": ("error",),
}


@pytest.fixture(scope="module")
def transferred(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("transfer"))
    targets = [f"results/{protocol}/supervised-f/seed0/metrics.json" for protocol in PROTOCOL_METRICS]
    result = snakemake(workdir, *targets, "--configfile", "tiny.yaml", timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir, result


@pytest.mark.parametrize("protocol", sorted(PROTOCOL_METRICS))
def test_each_transfer_protocol_writes_its_metrics_from_a_pretrained_checkpoint(transferred, protocol):
    workdir, _ = transferred
    metrics = json.loads((workdir / f"results/{protocol}/supervised-f/seed0/metrics.json").read_text())
    assert metrics["run"] == "supervised-f"
    assert metrics["checkpoint"] == "results/pretrain/supervised-f/checkpoint.pt"
    for key in PROTOCOL_METRICS[protocol]:
        assert math.isfinite(metrics[key]) and metrics[key] >= 0.0, (key, metrics[key])
        assert key == "error" or metrics[key] <= 100.0, (key, metrics[key])  # landmark error may exceed 100%


def test_each_stand_in_is_generated_and_checked_once(transferred):
    workdir, result = transferred
    stand_ins = {
        "coco2017": "coco",
        "cityscapes": "cityscapes",
        "miniimagenet": "miniimagenet",
        "celeba": "celeba",
    }
    for name, kind in stand_ins.items():
        summary = json.loads((workdir / f"results/datasets/{name}.json").read_text())
        assert summary["kind"] == kind
    assert result.stderr.count("rule generate_coco2017:") == 1


def test_a_task_on_a_dataset_of_the_wrong_kind_fails_naming_both(tmp_path):
    workdir = copy_workflow(tmp_path)
    (workdir / "wrong.yaml").write_text("downstream:\n  fewshot: {dataset: imagenet}\n")
    result = snakemake(
        workdir, "results/fewshot/supervised-f/seed0/metrics.json", "--configfile", "tiny.yaml", "wrong.yaml"
    )
    assert result.returncode != 0
    # Refused at start-up by the config check, before any job runs.
    expected = "config: downstream.fewshot.dataset: dataset 'imagenet' is of kind 'imagefolder'; expected a"
    assert expected in result.stderr and "dataset of kind miniimagenet" in result.stderr
    assert not (workdir / "logs/fewshot").exists()
