"""The whole config checked at start-up, beyond the JSON schema: every name, every reference from one
section to another, and the numeric constraints a job would otherwise hit hours later.

The schema checks each value on its own; this checks that they fit together, so a table row naming an
undefined run fails in a second naming the key, even when an old table would let the run finish.
Each failure is an ``InputError`` whose message starts ``config: <dotted key>:`` and says what was
expected. Only light modules are imported (no torch): `snakemake -n` stays fast.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from goodtransfer import config as gtc
from goodtransfer.io import InputError
from goodtransfer.schema import check_task_entry
from goodtransfer.transfer.tasks import TASKS

# A name becomes one path component (results/<protocol>/<run>/...) and one shell word.
NAME = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]*")
NAME_RULE = "letters, digits and . _ + - only, not starting with '.'"
EPOCH_REF = gtc.EPOCH_RUN
# results/<name>/ folders the workflow itself writes: a protocol of that name would share them.
RESERVED = ("pretrain", "datasets", "tables", "figures", "fp_analysis", "inversion", "report", "claims")
NAMED_SECTIONS = ("datasets", "pretrain.recipes", "pretrain.runs", "downstream", "tables", "figures")
# Kinds a run can pretrain on (data.registry.pretraining_images); coco and cityscapes images have one class.
PRETRAIN_KINDS = ("imagefolder", "miniimagenet", "celeba", "coco", "cityscapes")
SINGLE_CLASS_KINDS = ("coco", "cityscapes")
LABELLED = ("supervised", "exemplar", "supcon")  # pretrain.LABELLED: they learn from image-level classes
CONTRASTIVE = ("moco", "exemplar", "supcon")
FP_FIGURES = ("fp_trend", "fp_breakdown")


def check_config(config: Mapping[str, Any]) -> None:
    """Raise ``InputError`` naming the first key that does not fit the rest of the config."""
    check_names(config)
    check_datasets(config)
    check_pretrain(config)
    check_protocols(config)
    check_seeds(config)
    check_tables(config)
    check_figures(config)
    check_report(config)
    from goodtransfer.claims_check import check_claims  # it builds on this module's helpers

    check_claims(config)


def fail(key: str, message: str) -> None:
    raise InputError(f"config: {key}: {message}")


def expect_in(key: str, value: Any, known: Iterable[str], what: str) -> None:
    known = list(known)
    if value not in known:
        fail(key, f"{value!r} is not {what}; expected one of {known}")


def section(config: Mapping[str, Any], dotted: str) -> Mapping[str, Any]:
    node: Any = config
    for part in dotted.split("."):
        node = node.get(part, {}) if isinstance(node, Mapping) else {}
    return node


# Names ------------------------------------------------------------------------------------------------


def check_name(key: str, name: Any) -> None:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        fail(key, f"name {name!r} is not allowed; expected {NAME_RULE}")


def check_names(config: Mapping[str, Any]) -> None:
    for dotted in NAMED_SECTIONS:
        for name in section(config, dotted):
            check_name(dotted, name)
    for name in section(config, "downstream"):
        if name in RESERVED:
            fail(f"downstream.{name}", f"{name!r} is a results/ folder of the workflow; rename it")


# Datasets ---------------------------------------------------------------------------------------------


def check_datasets(config: Mapping[str, Any]) -> None:
    datasets = config["datasets"]
    made: dict[str, str] = {}
    for name, entry in datasets.items():
        key = f"datasets.{name}"
        if entry["kind"] == "voc":
            check_class_names(f"{key}.classes", entry.get("classes"))
        if "pretrain_partitions" in entry and entry["kind"] != "celeba":
            fail(
                f"{key}.pretrain_partitions",
                f"a {entry['kind']!r} dataset has no partitions; expected kind celeba",
            )
        if entry.get("derive"):
            if entry.get("generate"):
                fail(key, "has both generate and derive; expected one way of making it")
            check_derive(datasets, name)
        if entry.get("generate") or entry.get("derive"):
            made[str(entry["root"]).rstrip("/")] = name
    for name, entry in datasets.items():
        other = made.get(str(entry["root"]).rstrip("/"))
        if other is not None and other != name:
            fail(f"datasets.{name}.root", f"{entry['root']!r} is also the folder dataset {other!r} makes")


def check_class_names(key: str, classes: Any) -> None:
    if not classes:
        fail(key, "missing; a voc dataset needs its class names, in label order")
    for index, name in enumerate(classes):
        if not isinstance(name, str) or not name.strip() or name != name.strip() or "\n" in name:
            fail(f"{key}[{index}]", f"{name!r} is not a class name; expected text without surrounding spaces")


def check_derive(datasets: Mapping[str, Any], name: str) -> None:
    key = f"datasets.{name}.derive.from"
    seen = [name]
    source = datasets[name]["derive"]["from"]
    while True:
        expect_in(key, source, datasets, "a dataset")
        if source in seen:
            fail(key, f"derives from itself ({' -> '.join([*seen, source])})")
        seen.append(source)
        if not datasets[source].get("derive"):
            break
        source = datasets[source]["derive"]["from"]
    for dataset in (name, datasets[name]["derive"]["from"]):
        if datasets[dataset]["kind"] != "imagefolder":
            kind = datasets[dataset]["kind"]
            fail(key, f"dataset {dataset!r} is of kind {kind!r}; a subset is of kind 'imagefolder'")


def dataset_kind(config: Mapping[str, Any], key: str, name: Any, kinds: Iterable[str]) -> str:
    """``name`` must be a dataset of one of ``kinds``; returns its kind."""
    expect_in(key, name, config["datasets"], "a dataset")
    kind = config["datasets"][name]["kind"]
    kinds = tuple(kinds)
    if kind not in kinds:
        fail(key, f"dataset {name!r} is of kind {kind!r}; expected a dataset of kind {' or '.join(kinds)}")
    return kind


# Schedules --------------------------------------------------------------------------------------------


def check_milestones(key: str, milestones: Any, length: int, unit: str) -> None:
    """Increasing, each inside the run: one at or after the last epoch/iteration never lowers the lr."""
    milestones = list(milestones or [])
    if milestones != sorted(set(milestones)):
        fail(key, f"{milestones} are not strictly increasing")
    late = [m for m in milestones if not 0 < m < length]
    if late:
        fail(key, f"{late} are outside the run of {length} {unit}; expected each in 1..{length - 1}")


def check_schedule(key: str, spec: Mapping[str, Any], length_key: str, milestones_key: str) -> None:
    unit = "iterations" if length_key == "max_iter" else "epochs"
    if milestones_key == "milestones" and spec.get("schedule") != "step":
        return  # a cosine schedule has no milestones
    if milestones_key in spec:
        check_milestones(f"{key}.{milestones_key}", spec[milestones_key], spec[length_key], unit)


# Pretraining ------------------------------------------------------------------------------------------


def merged_run(config: Mapping[str, Any], run: str) -> dict[str, Any]:
    """defaults <- recipe <- run, before pretrain_spec's resolution (which needs the references sound)."""
    section_ = config["pretrain"]
    recipe = section_["recipes"][section_["runs"][run]["recipe"]]
    return gtc.deep_merge(gtc.deep_merge(section_["defaults"], recipe), section_["runs"][run])


def check_pretrain(config: Mapping[str, Any]) -> None:
    recipes = config["pretrain"]["recipes"]
    for run, entry in config["pretrain"]["runs"].items():
        key = f"pretrain.runs.{run}"
        expect_in(f"{key}.recipe", entry["recipe"], recipes, "a recipe of pretrain.recipes")
        merged = merged_run(config, run)
        if merged.get("import_from"):
            gtc.pretrain_spec(config, run)
            continue
        check_run_data(config, key, merged)
        check_run_task(config, key, merged)
        check_run_numbers(key, gtc.pretrain_spec(config, run))


def check_run_data(config: Mapping[str, Any], key: str, merged: Mapping[str, Any]) -> None:
    kind = dataset_kind(config, f"{key}.dataset", merged.get("dataset"), PRETRAIN_KINDS)
    if merged.get("method") in LABELLED and kind in SINGLE_CLASS_KINDS:
        fail(
            f"{key}.method",
            f"{merged['method']!r} learns from image-level classes but dataset {merged['dataset']!r} (kind "
            f"{kind!r}) has one class; expected method 'task' (a detector/segmenter) or 'moco'",
        )


def check_run_task(config: Mapping[str, Any], key: str, merged: Mapping[str, Any]) -> None:
    if merged.get("method") != "task":
        for name in ("task", "task_protocol", "task_settings", "init_from"):
            if merged.get(name):
                fail(f"{key}.{name}", f"is used only by method 'task', not {merged.get('method')!r}")
        return
    task = merged.get("task")
    if task is None or not (merged.get("task_protocol") or merged.get("task_settings")):
        fail(key, "method 'task' needs task and task_protocol (or task_settings)")
    if merged.get("task_protocol"):
        protocol = merged["task_protocol"]
        expect_in(f"{key}.task_protocol", protocol, section(config, "downstream"), "a downstream protocol")
        if (declared := gtc.downstream_entry(config, protocol).get("task")) != task:
            fail(f"{key}.task_protocol", f"{protocol!r} is a {declared} protocol; expected a {task} one")
    dataset_kind(config, f"{key}.dataset", merged["dataset"], [TASKS[task].data_kind])
    init = re.fullmatch(r"results/pretrain/([^/]+)/checkpoint\.pt", str(merged.get("init_from") or ""))
    if init:
        expect_in(f"{key}.init_from", init[1], config["pretrain"]["runs"], "a pretraining run")


def check_run_numbers(key: str, spec: Mapping[str, Any]) -> None:
    if "train_samples" in spec:
        check_sample_run(key, spec)
    else:
        check_schedule(key, spec, "epochs", "milestones")
    if spec.get("method") in CONTRASTIVE:
        moco, batch = spec["moco"], spec["batch_size"]
        if moco["K"] % batch:
            fail(
                f"{key}.moco.K",
                f"{moco['K']} is not a multiple of batch_size {batch} (the queue takes whole batches); "
                "expected K % batch_size == 0",
            )
        if batch % moco["shuffle_bn_splits"]:
            fail(
                f"{key}.batch_size",
                f"{batch} does not split into {moco['shuffle_bn_splits']} equal chunks (shuffle-BN); "
                "expected batch_size % shuffle_bn_splits == 0",
            )
    settings = spec.get("task_settings")
    if settings and "max_iter" in settings:
        check_schedule(f"{key}.task_settings", settings, "max_iter", "steps")


def check_sample_run(key: str, spec: Mapping[str, Any]) -> None:
    """A run of ``train_samples`` learns its epochs only when it has read its images: nothing may name one."""
    if spec.get("method") in ("task", "scratch"):
        fail(f"{key}.train_samples", f"method {spec['method']!r} trains no epochs; expected no train_samples")
    if spec.get("keep_every"):
        fail(f"{key}.keep_every", "the epochs of a train_samples run are computed when it runs; expected 0")
    if spec.get("schedule") == "step" and spec.get("milestones"):
        fail(f"{key}.milestones", "epoch milestones of a train_samples run (its epochs are computed when it "
             "runs); expected schedule cosine, or epochs instead of train_samples")  # fmt: skip


def check_run_ref(config: Mapping[str, Any], key: str, ref: Any, epochs_allowed: bool) -> None:
    """A downstream reference: a pretraining run, or ``run@epN`` (its backbone kept at epoch N)."""
    runs = config["pretrain"]["runs"]
    match = EPOCH_REF.fullmatch(ref) if isinstance(ref, str) else None
    if match is None:
        expect_in(key, ref, runs, "a pretraining run")
        return
    if not epochs_allowed:
        fail(key, f"{ref!r}: a kept backbone (run@epN) is not taken here; expected a pretraining run")
    expect_in(key, match["run"], runs, "a pretraining run")
    check_kept_epoch(config, key, match["run"], int(match["epoch"]))


def check_kept_epoch(config: Mapping[str, Any], key: str, run: str, epoch: int) -> None:
    spec = gtc.pretrain_spec(config, run)
    if "train_samples" in spec:
        fail(key, f"run {run!r} computes its epochs from train_samples when it runs; expected the run itself")
    final, keep = spec["epochs"], spec.get("keep_every", 0)
    if epoch == final or (keep and epoch % keep == 0 and 0 < epoch < final):
        return
    fail(
        key,
        f"run {run!r} keeps no backbone at epoch {epoch} (epochs {final}, keep_every {keep}); "
        f"expected an epoch up to {final} with pretrain.runs.{run}.keep_every dividing it",
    )


# Downstream protocols ---------------------------------------------------------------------------------


def check_protocols(config: Mapping[str, Any]) -> None:
    downstream = section(config, "downstream")
    for protocol in downstream:
        key, chain = f"downstream.{protocol}", [protocol]
        while "inherit" in downstream[chain[-1]]:
            parent = downstream[chain[-1]]["inherit"]
            expect_in(f"downstream.{chain[-1]}.inherit", parent, downstream, "a downstream protocol")
            if parent in chain:
                fail(f"{key}.inherit", f"inherits from itself ({' -> '.join([*chain, parent])})")
            chain.append(parent)
        entry = gtc.downstream_entry(config, protocol)
        if "task" not in entry or "dataset" not in entry:
            fail(key, "names no task and dataset, nor inherits them; expected `task:` and `dataset:`")
        task = entry["task"]
        check_task_entry(key, task, entry)
        dataset_kind(config, f"{key}.dataset", entry["dataset"], [TASKS[task].data_kind])
        check_protocol_numbers(config, key, entry)


def check_protocol_numbers(config: Mapping[str, Any], key: str, entry: Mapping[str, Any]) -> None:
    task = entry["task"]
    if task in ("voc_detection", "coco_instance"):
        check_schedule(key, entry, "max_iter", "steps")
    if task == "voc_detection":
        classes = config["datasets"][entry["dataset"]]["classes"]
        for index, item in enumerate(entry.get("extra_train", [])):
            where = f"{key}.extra_train[{index}].dataset"
            dataset_kind(config, where, item["dataset"], ["voc"])
            if config["datasets"][item["dataset"]]["classes"] != classes:
                fail(
                    where,
                    f"{item['dataset']!r} has other classes than {entry['dataset']!r}; expected the same",
                )
        if entry.get("eval_period", 0) > entry["max_iter"]:
            fail(
                f"{key}.eval_period",
                f"{entry['eval_period']} is past max_iter {entry['max_iter']}; expected fewer",
            )
    elif task == "linear":
        check_schedule(key, entry, "epochs", "milestones")
    elif task == "fewshot":
        check_schedule(key, entry, "base_epochs", "base_milestones")
    elif task == "landmarks":
        if entry["schedule"] == "step" and "milestones" not in entry:
            fail(f"{key}.milestones", "missing; schedule 'step' needs its milestones (epochs)")
        check_schedule(key, entry, "epochs", "milestones")


def detection_protocols(config: Mapping[str, Any]) -> list[str]:
    """The protocols of task voc_detection (the false-positive and training-curve figures read them)."""
    return [
        p for p in section(config, "downstream") if gtc.downstream_entry(config, p)["task"] == "voc_detection"
    ]


def check_seeds(config: Mapping[str, Any]) -> None:
    known = ["default", "claims", *section(config, "downstream")]
    for name in config.get("seeds", {}):
        expect_in("seeds", name, known, "a protocol (or default)")


# Tables, figures, report ------------------------------------------------------------------------------


def check_tables(config: Mapping[str, Any]) -> None:
    protocols = list(section(config, "downstream"))
    for table, entry in config["tables"].items():
        key = f"tables.{table}"
        keys = [column["key"] for column in entry["columns"]]
        if len(set(keys)) != len(keys):
            fail(f"{key}.columns", f"keys {keys} repeat; expected each column key once")
        for index, column in enumerate(entry["columns"]):
            expect_in(f"{key}.columns[{index}].protocol", column["protocol"], protocols, "a protocol")
        if entry.get("reference_file") and not Path(entry["reference_file"]).is_file():
            fail(
                f"{key}.reference_file",
                f"{entry['reference_file']!r} not found; expected a YAML file of numbers",
            )
        for g, group in enumerate(entry["groups"]):
            for r, row in enumerate(group["rows"]):
                if "run" in row:  # else a quoted row: the paper's numbers only (schema: reference_row)
                    check_run_ref(config, f"{key}.groups[{g}].rows[{r}].run", row["run"], epochs_allowed=True)


def check_figures(config: Mapping[str, Any]) -> None:
    analyses: dict[str, tuple[str, Any]] = {}
    for figure, entry in section(config, "figures").items():
        key = f"figures.{figure}"
        kind = entry["kind"]
        for index, item in enumerate(entry["runs"]):
            check_run_ref(config, f"{key}.runs[{index}].run", item["run"], epochs_allowed=kind in FP_FIGURES)
        if kind in FP_FIGURES:
            check_fp_figure(config, key, entry)
            first = analyses.setdefault(entry["protocol"], (figure, entry.get("analysis", {})))
            if first[1] != entry.get("analysis", {}):
                fail(f"{key}.analysis", f"differs from figures.{first[0]}.analysis on the same protocol; "
                     "expected one analysis per protocol")  # fmt: skip
        elif kind == "inversion":
            dataset_kind(config, f"{key}.images.dataset", entry["images"]["dataset"], ["imagefolder"])
        elif kind == "training_curves":
            check_curves_figure(config, key, entry)


def check_fp_figure(config: Mapping[str, Any], key: str, entry: Mapping[str, Any]) -> None:
    expect_in(f"{key}.protocol", entry["protocol"], detection_protocols(config), "a voc_detection protocol")
    if entry["classes"] == "all":
        return
    dataset = gtc.downstream_entry(config, entry["protocol"])["dataset"]
    known = config["datasets"][dataset]["classes"]
    for index, name in enumerate(entry["classes"]):
        expect_in(f"{key}.classes[{index}]", name, known, f"a class of dataset {dataset!r}")


def check_curves_figure(config: Mapping[str, Any], key: str, entry: Mapping[str, Any]) -> None:
    detection = detection_protocols(config)
    expect_in(f"{key}.protocol", entry["protocol"], detection, "a voc_detection protocol")
    expect_in(f"{key}.curve_protocol", entry["curve_protocol"], detection, "a voc_detection protocol")
    if not gtc.downstream_entry(config, entry["curve_protocol"]).get("eval_period"):
        fail(f"{key}.curve_protocol", f"{entry['curve_protocol']!r} has no eval_period; expected one > 0")
    for index, epoch in enumerate(entry["epochs"]):
        for item in entry["runs"]:
            check_kept_epoch(config, f"{key}.epochs[{index}]", item["run"], epoch)


def check_report(config: Mapping[str, Any]) -> None:
    report = config["report"]
    for index, table in enumerate(report["tables"]):
        expect_in(f"report.tables[{index}]", table, config["tables"], "a table of tables")
    for index, figure in enumerate(report.get("figures", [])):
        expect_in(f"report.figures[{index}]", figure, section(config, "figures"), "a figure of figures")
    if "deviations" in report:
        from goodtransfer.report import deviations  # no torch: reads one YAML file

        entries = deviations.load_registry(report["deviations"]["registry"])
        scale = report["deviations"]["scale"]
        deviations.check_references(deviations.at_scale(entries, scale), config, "config: report.deviations")
