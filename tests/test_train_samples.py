"""Table 2's runs train for as many samples as 200 ImageNet epochs, not for epochs typed from the paper's
image counts: a run of ``train_samples`` computes its epochs from the images it actually reads."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import pytest

from goodtransfer import config as gtc
from goodtransfer.checkpoint import load_backbone
from goodtransfer.config_check import check_config
from goodtransfer.data.synthetic.imagenet import generate_imagenet
from goodtransfer.io import InputError, read_yaml
from tests.workflow import pretrain_command, tiny_moco_spec

ROOT = Path(__file__).resolve().parents[1]
CONFIG = read_yaml(ROOT / "config.yaml")
PAPER = gtc.deep_merge(CONFIG, read_yaml(ROOT / "presets/paper.yaml"))
SAMPLES = 40  # batch 8: 20 images -> 2 steps (16 samples) an epoch -> 3 epochs; 30 images -> 24 -> 2


@pytest.mark.parametrize(("images_per_class", "epochs"), [(10, 3), (15, 2)])
def test_a_run_of_train_samples_computes_its_epochs_from_the_images_it_reads(
    tmp_path, images_per_class, epochs
):
    data = tmp_path / "imagenet"
    generate_imagenet(data, num_classes=2, train_per_class=images_per_class, val_per_class=1, image_size=36,
                      seed=0)  # fmt: skip
    spec = tiny_moco_spec(
        run="subset-test", train_samples=SAMPLES, moco={**tiny_moco_spec()["moco"], "K": 16}
    )
    del spec["epochs"]
    done = subprocess.run(pretrain_command(spec, data, tmp_path), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    log = json.loads((tmp_path / "log.json").read_text())
    per_epoch = (2 * images_per_class // 8) * 8  # whole batches only
    assert (log["images"], log["samples_per_epoch"], log["epochs"]) == (
        2 * images_per_class,
        per_epoch,
        epochs,
    )
    assert len(log["history"]) == epochs and epochs * per_epoch >= SAMPLES > (epochs - 1) * per_epoch
    assert log["spec"] == spec  # the log keeps the spec as resolved; the epochs beside it
    assert load_backbone(tmp_path / "checkpoint.pt")[1]["epoch"] == epochs


def test_paper_table2_runs_train_for_the_samples_of_200_imagenet_epochs():
    samples = 200 * (1281167 // 256) * 256
    for run in ("imagenet10pct", "imagenet100", "places", "celeba", "coco", "synthia"):
        spec = gtc.pretrain_spec(PAPER, f"mocov2-{run}")
        assert spec["train_samples"] == samples and "epochs" not in spec, run
    for run in ("imagenet10pct", "imagenet100", "places", "celeba"):
        assert gtc.pretrain_spec(PAPER, f"supervised-{run}")["train_samples"] == samples, run
    # Table 5 states 1,400 epochs; Table 1 runs keep their 200.
    assert gtc.pretrain_spec(PAPER, "mafl-mocov2")["epochs"] == 1400
    assert "train_samples" not in gtc.pretrain_spec(PAPER, "mafl-mocov2")
    assert gtc.pretrain_spec(PAPER, "mocov2-frcgb")["epochs"] == 200


def test_epochs_and_train_samples_on_one_run_fail_naming_it():
    config = copy.deepcopy(CONFIG)
    config["pretrain"]["runs"]["mocov2-places"]["epochs"] = 2  # e.g. a preset's epochs over train_samples
    with pytest.raises(
        InputError, match=r"pretrain\.runs\.mocov2-places: states both epochs and train_samples"
    ):
        check_config(config)


def test_the_most_specific_level_decides_between_epochs_and_train_samples():
    config = copy.deepcopy(CONFIG)
    config["pretrain"]["recipes"]["mocov2"]["train_samples"] = 1000
    assert "epochs" not in gtc.pretrain_spec(config, "mocov2-f")  # recipe over defaults
    config["pretrain"]["runs"]["mocov2-f"]["epochs"] = 3
    spec = gtc.pretrain_spec(config, "mocov2-f")  # run over recipe
    assert spec["epochs"] == 3 and "train_samples" not in spec
    config["pretrain"]["runs"]["mocov2-frcgb"]["epochs"] = 8  # Figure 4 names its kept epochs: it may
    check_config(config)


def test_a_kept_epoch_of_a_train_samples_run_fails():
    config = copy.deepcopy(CONFIG)
    config["tables"]["table1"]["groups"][1]["rows"][0]["run"] = "mocov2-places@ep5"
    with pytest.raises(InputError, match=r"'mocov2-places' computes its epochs from train_samples"):
        check_config(config)
