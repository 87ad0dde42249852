"""Job specs: each job sees only what affects it, so a config edit reruns exactly its dependants."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from goodtransfer import config as gtc
from goodtransfer.io import InputError, read_yaml, spec_hash

ROOT = Path(__file__).resolve().parents[1]
CONFIG = read_yaml(ROOT / "config.yaml")


def _hashes(config):
    return {run: spec_hash(gtc.pretrain_spec(config, run)) for run in gtc.pretrain_runs(config)}


def test_recipe_and_run_override_defaults():
    spec = gtc.pretrain_spec(CONFIG, "supervised-fr")
    assert spec["method"] == "supervised"
    assert spec["augmentations"]["crop"]["scale"] == [0.08, 1.0]  # footnote 1: 0.08 for supervised
    assert gtc.pretrain_spec(CONFIG, "mocov2-fr")["augmentations"]["crop"]["scale"] == [0.2, 1.0]


def test_run_keeps_only_parameters_of_its_own_transforms():
    assert set(gtc.pretrain_spec(CONFIG, "mocov2-f")["augmentations"]) == {"flip"}


def test_editing_blur_changes_only_runs_that_blur():
    edited = copy.deepcopy(CONFIG)
    edited["pretrain"]["augmentations"]["blur"]["p"] = 0.25
    before, after = _hashes(CONFIG), _hashes(edited)
    changed = {run for run in before if before[run] != after[run]}
    blurring = {run for run, entry in CONFIG["pretrain"]["runs"].items() if "blur" in entry["augment"]}
    assert changed == blurring
    assert {"supervised-frcgb", "mocov2-frcgb"} <= changed and "mocov2-frcg" not in changed


def test_editing_one_run_changes_only_that_run():
    edited = copy.deepcopy(CONFIG)
    edited["pretrain"]["runs"]["mocov2-frc"]["augmentations"] = {"color": {"p": 0.5}}
    before, after = _hashes(CONFIG), _hashes(edited)
    assert {run for run in before if before[run] != after[run]} == {"mocov2-frc"}


def test_table1_has_ten_runs_five_per_family():
    runs = gtc.table_runs(CONFIG, "table1")
    assert len(runs) == 10 and len(set(runs)) == 10
    assert sum(r.startswith("supervised") for r in runs) == 5


def test_spec_command_prints_what_the_workflow_passes(tmp_path, monkeypatch, capsys):
    import json

    from goodtransfer.cli import main

    monkeypatch.chdir(ROOT)
    assert main(["spec", "pretrain", "mocov2-frcgb", "--configfile", "presets/paper.yaml"]) == 0
    printed = json.loads(capsys.readouterr().out)
    paper = gtc.deep_merge(CONFIG, read_yaml(ROOT / "presets/paper.yaml"))
    assert printed == gtc.pretrain_spec(paper, "mocov2-frcgb")
    assert printed["moco"]["K"] == 65536 and printed["arch"] == "resnet50"


PAPER = gtc.deep_merge(CONFIG, read_yaml(ROOT / "presets/paper.yaml"))


def test_paper_readout_lr_follows_the_pretraining_method_of_each_run():
    lr = {run: gtc.downstream_spec(PAPER, "linear", run)["lr"] for run in gtc.pretrain_runs(PAPER)}
    # lincls's 30 for contrastive features; supervised backbones (also imported ones and @epN) read at 0.1
    assert lr["mocov2-frcgb"] == lr["exemplarv2"] == lr["supcon"] == lr["mocov1"] == 30.0
    assert lr["supervised-frcgb"] == lr["supervised-coco"] == lr["mafl-scratch"] == 0.1
    assert gtc.downstream_spec(PAPER, "linear", "supervised-frcgb@ep10")["lr"] == 0.1
    assert "lr_by_method" not in gtc.downstream_spec(PAPER, "linear", "supervised-frcgb")


def test_editing_a_family_readout_lr_reruns_only_that_family():
    edited = copy.deepcopy(CONFIG)
    edited["downstream"]["linear"]["lr_by_method"] = {"supervised": 0.5}
    runs = gtc.pretrain_runs(CONFIG)
    before = {run: spec_hash(gtc.downstream_spec(CONFIG, "linear", run)) for run in runs}
    after = {run: spec_hash(gtc.downstream_spec(edited, "linear", run)) for run in runs}
    changed = {run for run in runs if before[run] != after[run]}
    assert changed == {run for run in runs if gtc.pretrain_spec(CONFIG, run)["method"] == "supervised"}
    assert "supervised-frcgb" in changed and "mocov2-frcgb" not in changed


def test_readout_lr_by_method_needs_a_pretraining_run():
    with pytest.raises(
        InputError, match=r"downstream\.linear\.lr_by_method: 'nope' is not a pretraining run"
    ):
        gtc.downstream_spec(PAPER, "linear", "nope")
