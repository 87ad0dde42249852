"""The start-up check of the whole config: the shipped configs pass; each broken reference, bad name or
impossible number fails naming its key and what was expected."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from goodtransfer.config import deep_merge
from goodtransfer.config_check import check_config
from goodtransfer.io import InputError, read_yaml
from goodtransfer.schema import NESTED_OVERRIDE_HINT, validate_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG = read_yaml(ROOT / "config.yaml")


PAPER, RELEASED, TINY = "presets/paper.yaml", "presets/released.yaml", "tests/configs/tiny.yaml"


@pytest.mark.parametrize(
    "overlays", [(), (TINY,), (PAPER,), (PAPER, RELEASED)], ids=["default", "tiny", "paper", "paper+released"]
)
def test_shipped_configs_pass_the_check(overlays):
    config = CONFIG
    for overlay in overlays:
        config = deep_merge(config, read_yaml(ROOT / overlay))
    validate_config(config)
    check_config(config)


def test_text_standing_for_a_number_fails_the_schema_and_names_the_overlay_file():
    # What `--config 'seeds={default: 3}'` gives the workflow: Snakemake leaves nested values as text.
    with pytest.raises(InputError) as caught:
        validate_config(deep_merge(CONFIG, {"seeds": {"default": "3"}}))
    assert str(caught.value) == (
        f"config: seeds.default: '3' is not of type 'integer'{NESTED_OVERRIDE_HINT} (config.schema.yaml)"
    )
    assert "overlay file" in NESTED_OVERRIDE_HINT and "--configfile" in NESTED_OVERRIDE_HINT


def test_text_that_is_no_number_fails_without_the_overlay_hint():
    with pytest.raises(InputError) as caught:
        validate_config(deep_merge(CONFIG, {"seeds": {"default": "many"}}))
    assert str(caught.value) == "config: seeds.default: 'many' is not of type 'integer' (config.schema.yaml)"


def _fails(edit, *fragments):
    config = copy.deepcopy(CONFIG)
    edit(config)
    with pytest.raises(InputError) as caught:
        check_config(config)
    message = str(caught.value)
    assert message.startswith("config: "), message
    assert all(fragment in message for fragment in fragments), message


def test_table_row_naming_an_undefined_run_names_the_row():
    def edit(config):
        config["tables"]["table1"]["groups"][0]["rows"][1]["run"] = "nosuch"

    _fails(edit, "tables.table1.groups[0].rows[1].run: 'nosuch' is not a pretraining run", "'supervised-f'")


@pytest.mark.parametrize("name", ["a/b", "..", ".hidden", "r$(touch X)", "two words", "run@ep5", ""])
def test_run_names_outside_letters_digits_dot_underscore_plus_minus_fail(name):
    def edit(config):
        config["pretrain"]["runs"][name] = config["pretrain"]["runs"]["mocov2-f"]

    _fails(edit, "pretrain.runs: name", "letters, digits and . _ + -")


def test_run_on_an_undefined_dataset_fails():
    _fails(
        lambda config: config["pretrain"]["runs"]["mocov2-f"].update(dataset="nosuch"),
        "pretrain.runs.mocov2-f.dataset: 'nosuch' is not a dataset",
    )


def test_pretrain_partitions_on_a_dataset_without_partitions_fail():
    _fails(
        lambda config: config["datasets"]["imagenet"].update(pretrain_partitions=["train"]),
        "datasets.imagenet.pretrain_partitions: a 'imagefolder' dataset has no partitions",
    )


def test_queue_not_a_multiple_of_the_batch_fails():
    _fails(
        lambda config: config["pretrain"]["runs"]["mocov2-f"].update(moco={"K": 100}),
        "pretrain.runs.mocov2-f.moco.K: 100 is not a multiple of batch_size 64",
    )


def test_batch_not_split_by_shuffle_bn_fails():
    _fails(
        lambda config: config["pretrain"]["runs"]["mocov2-f"].update(moco={"shuffle_bn_splits": 3}),
        "pretrain.runs.mocov2-f.batch_size: 64 does not split into 3",
    )


def test_milestone_past_the_last_epoch_fails():
    _fails(
        lambda config: config["pretrain"]["runs"]["mocov1"].update(milestones=[5, 8]),
        "pretrain.runs.mocov1.milestones: [8] are outside the run of 8 epochs",
    )


def test_detection_step_past_max_iter_fails():
    _fails(
        lambda config: config["downstream"]["voc07"].update(max_iter=150, steps=[100, 150]),
        "downstream.voc07.steps: [150] are outside the run of 150 iterations",
    )


def test_inherited_protocol_is_checked_against_its_task_settings_naming_the_key():
    _fails(
        lambda config: config["downstream"]["voc07_curve"].update(eval_periodd=3),
        "downstream.voc07_curve: Additional properties are not allowed ('eval_periodd' was unexpected) "
        "(the settings of task 'voc_detection', inherit applied)",
    )
    _fails(
        lambda config: config["downstream"]["voc0712"].update(rpn={"pre_nms_topk_train": "10"}),
        "downstream.voc0712.rpn.pre_nms_topk_train: '10' is not of type 'integer'",
    )
    _fails(lambda config: config["downstream"]["mafl"].update(task="landmark"), "downstream.mafl.task")


def test_figure_epoch_no_backbone_is_kept_at_fails():
    _fails(
        lambda config: config["figures"]["figure4"].update(epochs=[3, 5]),
        "figures.figure4.epochs[1]: run 'supervised-frcgb' keeps no backbone at epoch 5",
    )


def test_kept_backbone_row_is_taken_by_tables_but_not_by_inversion_figures():
    config = copy.deepcopy(CONFIG)
    config["tables"]["table1"]["groups"][0]["rows"][0]["run"] = "supervised-frcgb@ep6"
    check_config(config)
    _fails(
        lambda config: config["figures"]["figure2"]["runs"][0].update(run="supervised-frcgb@ep6"),
        "figures.figure2.runs[0].run: 'supervised-frcgb@ep6': a kept backbone",
    )


def test_inherit_loop_and_undefined_extra_train_dataset_fail():
    _fails(
        lambda config: config["downstream"]["voc07"].update(inherit="voc0712"),
        "downstream.voc07.inherit: inherits from itself",
    )
    _fails(
        lambda config: config["downstream"]["voc0712"].update(
            extra_train=[{"dataset": "voc13", "split": "x"}]
        ),
        "downstream.voc0712.extra_train[0].dataset: 'voc13' is not a dataset",
    )


def test_report_naming_an_undeclared_table_or_figure_fails():
    _fails(
        lambda config: config["report"].update(tables=["table1", "table9x"]), "report.tables[1]: 'table9x'"
    )
    _fails(lambda config: config["report"].update(figures=["figure9"]), "report.figures[0]: 'figure9'")


@pytest.mark.parametrize("arch", ["resnet10-w64", "resnet10-w032", "resnet12-w32"])
def test_an_arch_that_is_not_one_canonical_name_fails_the_schema_naming_the_key(arch):
    with pytest.raises(InputError, match=rf"config: pretrain\.defaults\.arch: '{arch}' does not match"):
        validate_config(deep_merge(CONFIG, {"pretrain": {"defaults": {"arch": arch}}}))
