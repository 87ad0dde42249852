"""Config and name cases of the bad-input matrix: each runs the real `snakemake` on a copy of the workflow
with one overlay config, and must stop at start-up naming the key and what was expected, also when old
outputs exist (the report must never be rebuilt from an old table with a row silently gone)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.bad_inputs.common import Case, Outcome
from tests.workflow import copy_workflow, snakemake, write_config

_WORKFLOW: list[Path] = []


def _workflow() -> Path:
    """One copy of the workflow for every dry-run case (each writes its own overlay file)."""
    if not _WORKFLOW:
        _WORKFLOW.append(copy_workflow(Path(tempfile.mkdtemp(prefix="config-cases-"))))
    return _WORKFLOW[0]


def _run(workdir: Path, kind: str, overlay: dict[str, Any], *targets: str, dry: bool = True) -> Outcome:
    write_config(workdir / f"{kind}.yaml", overlay)
    flags = ["-n"] if dry else []
    done = snakemake(workdir, *targets, *flags, "--configfile", f"{kind}.yaml", timeout=120)
    return Outcome(done.returncode, done.stdout + done.stderr)


def dry(kind: str, overlay: dict[str, Any]) -> Callable[[Path], Outcome]:
    """`snakemake -n` (the default target, the report) with ``overlay`` on config.yaml."""
    return lambda tmp_path: _run(_workflow(), kind, overlay)


def with_old_outputs(kind: str, overlay: dict[str, Any], olds: tuple[str, ...], *allowed: str):
    """A real (not dry) run for ``olds[0]`` after fake finished outputs ``olds`` were written: it must stop
    at start-up and leave them untouched. ``--allowed-rules`` keeps a regression from training anything."""

    def make(tmp_path: Path) -> Outcome:
        workdir = copy_workflow(tmp_path / "workflow")
        for name in olds:
            (workdir / name).parent.mkdir(parents=True, exist_ok=True)
            (workdir / name).write_text(f"old {name}\n")
        outcome = _run(workdir, kind, overlay, olds[0], "--allowed-rules", *allowed, dry=False)
        touched = [name for name in olds if not _unchanged(workdir / name, f"old {name}\n")]
        if touched:  # fail the case: a rebuilt (or removed) old output means the run went on
            return Outcome(0, f"old outputs rebuilt or removed: {touched}\n{outcome.message}")
        return Outcome(outcome.returncode, outcome.message, [workdir / "X"])

    return make


def _unchanged(path: Path, text: str) -> bool:
    return path.is_file() and path.read_text() == text


def _rows(*runs: str) -> dict[str, Any]:
    """tables.table1 with one group of ``runs`` (lists replace, so the overlay states the whole group)."""
    rows = [{"run": run, "label": run} for run in runs]
    return {
        "tables": {
            "table1": {"groups": [{"label": "Supervised", "reference_group": "supervised", "rows": rows}]}
        }
    }


def _run_entry(name: str, **keys: Any) -> dict[str, Any]:
    return {"pretrain": {"runs": {name: {"recipe": "mocov2", "augment": ["flip"], **keys}}}}


REPORT_OUTPUTS = (
    "paper/build/report.pdf", "paper/build/report.tex", "results/report/context.json",
    "results/tables/table1.json", "paper/build/tables/table1.tex",
)  # fmt: skip
REPORT_RULES = ("report", "report_context", "table_json", "table_tex", "table1")
RUN_OUTPUTS = ("results/pretrain/mocov2-f/checkpoint.pt", "results/pretrain/mocov2-f/train_log.json")
NOT_A_NAME = "letters, digits and . _ + - only, not starting with '.'"

CASES: list[Case] = [
    Case(
        "config-row-undefined-run",
        dry("config-row-undefined-run", _rows("supervised-f", "nosuch")),
        (
            "config: tables.table1.groups[0].rows[1].run: 'nosuch' is not a pretraining run",
            "expected one of [",
        ),
    ),
    Case(
        "config-row-undefined-run-old-outputs",
        with_old_outputs(
            "config-row-undefined-run-old-outputs", _rows("nosuch"), REPORT_OUTPUTS, *REPORT_RULES
        ),
        ("config: tables.table1.groups[0].rows[0].run: 'nosuch' is not a pretraining run", "'supervised-f'"),
    ),
    Case(
        "config-run-undefined-dataset",
        dry("config-run-undefined-dataset", _run_entry("mocov2-f", dataset="imagenet-21k")),
        ("config: pretrain.runs.mocov2-f.dataset: 'imagenet-21k' is not a dataset", "'imagenet'"),
    ),
    Case(
        "config-run-undefined-dataset-old-outputs",
        with_old_outputs(
            "config-run-undefined-dataset-old-outputs",
            _run_entry("mocov2-f", dataset="nosuch"),
            RUN_OUTPUTS,
            "pretrain",
        ),
        ("config: pretrain.runs.mocov2-f.dataset: 'nosuch' is not a dataset", "expected one of ["),
    ),
    Case(
        "name-run-slash-old-outputs",
        with_old_outputs(
            "name-run-slash-old-outputs",
            {**_run_entry("a/b"), **_rows("a/b")},
            REPORT_OUTPUTS,
            *REPORT_RULES,
        ),
        ("config: pretrain.runs: name 'a/b' is not allowed", NOT_A_NAME),
    ),
    Case(
        "config-run-undefined-recipe",
        dry("config-run-undefined-recipe", _run_entry("mocov2-f", recipe="mocov3")),
        ("config: pretrain.runs.mocov2-f.recipe: 'mocov3' is not a recipe of pretrain.recipes", "'mocov2'"),
    ),
    Case(
        "config-queue-not-multiple-of-batch",
        dry("config-queue-not-multiple-of-batch", _run_entry("mocov2-f", moco={"K": 500})),
        (
            "config: pretrain.runs.mocov2-f.moco.K: 500 is not a multiple of batch_size 64",
            "K % batch_size == 0",
        ),
    ),
    Case(
        "config-batch-not-split-by-shuffle-bn",
        dry(
            "config-batch-not-split-by-shuffle-bn",
            _run_entry("mocov2-f", batch_size=96, moco={"K": 480, "shuffle_bn_splits": 5}),
        ),
        (
            "config: pretrain.runs.mocov2-f.batch_size: 96 does not split into 5",
            "batch_size % shuffle_bn_splits == 0",
        ),
    ),
    Case(
        "config-milestone-past-epochs",
        dry("config-milestone-past-epochs", {"pretrain": {"recipes": {"mocov1": {"milestones": [5, 20]}}}}),
        (
            "config: pretrain.runs.mocov1.milestones: [20] are outside the run of 8 epochs",
            "expected each in 1..7",
        ),
    ),
    Case(
        "config-detection-step-past-max-iter",
        dry("config-detection-step-past-max-iter", {"downstream": {"voc0712": {"steps": [225, 300]}}}),
        (
            "config: downstream.voc0712.steps: [300] are outside the run of 300 iterations",
            "expected each in 1..299",
        ),
    ),
    Case(
        "config-inherit-undefined-protocol",
        dry("config-inherit-undefined-protocol", {"downstream": {"voc07_curve": {"inherit": "voc08"}}}),
        ("config: downstream.voc07_curve.inherit: 'voc08' is not a downstream protocol", "'voc07'"),
    ),
    Case(
        "config-extra-train-undefined-dataset",
        dry(
            "config-extra-train-undefined-dataset",
            {"downstream": {"voc0712": {"extra_train": [{"dataset": "voc2013", "split": "trainval"}]}}},
        ),
        ("config: downstream.voc0712.extra_train[0].dataset: 'voc2013' is not a dataset", "'voc2012'"),
    ),
    Case(
        "config-derive-from-undefined-dataset",
        dry(
            "config-derive-from-undefined-dataset",
            {"datasets": {"imagenet100": {"derive": {"from": "imagenet1k"}}}},
        ),
        ("config: datasets.imagenet100.derive.from: 'imagenet1k' is not a dataset", "'imagenet'"),
    ),
    Case(
        "config-report-undefined-table",
        dry("config-report-undefined-table", {"report": {"tables": ["table1", "table11"]}}),
        ("config: report.tables[1]: 'table11' is not a table of tables", "'table10'"),
    ),
    Case(
        "config-report-undefined-figure",
        dry("config-report-undefined-figure", {"report": {"figures": ["figure1", "figure3"]}}),
        ("config: report.figures[1]: 'figure3' is not a figure of figures", "'figure4'"),
    ),
    Case(
        "config-column-undefined-protocol",
        dry(
            "config-column-undefined-protocol",
            {
                "tables": {
                    "table10": {
                        "columns": [
                            {
                                "key": "Acc",
                                "label": "Acc",
                                "group": "ImageNet",
                                "protocol": "lincls",
                                "metric": "top1",
                            }
                        ]
                    }
                }
            },
        ),  # fmt: skip
        ("config: tables.table10.columns[0].protocol: 'lincls' is not a protocol", "'linear'"),
    ),
    Case(
        "config-task-protocol-undefined",
        dry(
            "config-task-protocol-undefined",
            {"pretrain": {"recipes": {"coco-detection": {"task_protocol": "coco14"}}}},
        ),
        (
            "config: pretrain.runs.supervised-coco.task_protocol: 'coco14' is not a downstream protocol",
            "'coco'",
        ),
    ),
    Case(
        "config-transfer-dataset-wrong-kind",
        dry("config-transfer-dataset-wrong-kind", {"downstream": {"mafl": {"dataset": "imagenet"}}}),
        (
            "config: downstream.mafl.dataset: dataset 'imagenet' is of kind 'imagefolder'",
            "dataset of kind celeba",
        ),
    ),
    Case(
        "config-figure-epoch-not-kept",
        dry("config-figure-epoch-not-kept", {"figures": {"figure4": {"epochs": [3, 7]}}}),
        (
            "config: figures.figure4.epochs[1]: run 'supervised-frcgb' keeps no backbone at epoch 7",
            "keep_every",
        ),
    ),
    Case(
        "config-figure-class-not-in-dataset",
        dry("config-figure-class-not-in-dataset", {"figures": {"figure1": {"classes": ["cat"]}}}),
        ("config: figures.figure1.classes[0]: 'cat' is not a class of dataset 'voc2007'", "'aeroplane'"),
    ),
    Case(
        "config-seeds-undefined-protocol",
        dry("config-seeds-undefined-protocol", {"seeds": {"default": 1, "voc7": 5}}),
        ("config: seeds: 'voc7' is not a protocol (or default)", "'voc07'"),
    ),
    Case(
        "name-run-dotdot",
        dry("name-run-dotdot", {**_run_entry(".."), **_rows("..")}),
        ("config: pretrain.runs: name '..' is not allowed", NOT_A_NAME),
    ),
    Case(
        "name-run-shell-code",
        with_old_outputs(
            "name-run-shell-code",
            {**_run_entry("r$(touch X)"), **_rows("r$(touch X)")},
            RUN_OUTPUTS,
            "pretrain",
        ),
        ("config: pretrain.runs: name 'r$(touch X)' is not allowed", NOT_A_NAME),
    ),
    Case(
        "name-dataset-space",
        dry(
            "name-dataset-space",
            {"datasets": {"image net": {"kind": "imagefolder", "root": "data/x", "generate": False}}},
        ),
        ("config: datasets: name 'image net' is not allowed", NOT_A_NAME),
    ),
    Case(
        "name-epoch-suffix-where-not-meant",
        dry(
            "name-epoch-suffix-where-not-meant",
            {"figures": {"figure2": {"runs": [{"run": "mocov2-frcgb@ep10", "label": "x"}]}}},
        ),
        (
            "config: figures.figure2.runs[0].run: 'mocov2-frcgb@ep10': a kept backbone",
            "expected a pretraining run",
        ),
    ),
    Case(
        "name-row-epoch-not-kept",
        dry("name-row-epoch-not-kept", _rows("mocov2-frcgb@ep7")),
        (
            "config: tables.table1.groups[0].rows[0].run: run 'mocov2-frcgb' keeps no backbone at epoch 7",
            "keep_every",
        ),
    ),
]
