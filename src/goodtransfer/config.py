"""Resolve the workflow config into one self-contained, JSON-serialisable spec per job.

Each job sees only the keys that affect it, so its spec (passed to Snakemake as ``params``) changes
exactly when its result would: editing one run's augmentation reruns that run and what depends on it.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from goodtransfer.io import InputError


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``, recursively for mappings; lists and scalars are replaced."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _lookup(config: Mapping[str, Any], *path: str) -> Any:
    node: Any = config
    for depth, key in enumerate(path):
        if not isinstance(node, Mapping) or key not in node:
            raise InputError(f"config: key {'.'.join(path[: depth + 1])} not found")
        node = node[key]
    return node


def pretrain_runs(config: Mapping[str, Any]) -> list[str]:
    return list(config["pretrain"]["runs"])


def pretrain_spec(config: Mapping[str, Any], run: str) -> dict[str, Any]:
    """defaults <- recipe <- run; augmentation parameters kept only for the transforms the run uses. The
    run's length is ``epochs`` or ``train_samples``, whichever the most specific of the three states."""
    section = config["pretrain"]
    run_cfg = dict(_lookup(config, "pretrain", "runs", run))
    recipe_name = run_cfg.pop("recipe")
    recipe = _lookup(config, "pretrain", "recipes", recipe_name)
    spec = deep_merge(deep_merge(section["defaults"], recipe), run_cfg)
    levels = {"pretrain.defaults": section["defaults"], f"pretrain.recipes.{recipe_name}": recipe}
    spec.pop(_other_length(levels | {f"pretrain.runs.{run}": run_cfg}), None)
    augmentations = deep_merge(section["augmentations"], spec.get("augmentations", {}))
    spec["augmentations"] = {name: augmentations[name] for name in spec.get("augment", ())}
    _check_contrastive(spec, run)
    if spec.get("task_protocol"):
        spec["task_settings"] = _task_settings(config, spec, run)
    if not spec.get("import_from"):
        dataset = dataset_of(config, spec["dataset"])
        spec["data_kind"] = dataset["kind"]
        if "pretrain_partitions" in dataset:  # CelebA: which of list_eval_partition.txt's partitions
            spec["partitions"] = dataset["pretrain_partitions"]
    seed = config["seed"] + spec.pop("seed_offset", 0)  # a pretrain_seeds replica's own seed
    return {**spec, **config["compute"], "run": run, "recipe": recipe_name, "seed": seed}


REPLICA = re.compile(r"(?P<run>.+)\+s(?P<index>[0-9]+)")


def pretrain_replicas(config: Mapping[str, Any], run: str) -> list[str]:
    """``run`` and its ``pretrain_seeds`` replicas: 'exemplarv2', 'exemplarv2+s1', 'exemplarv2+s2' for 3."""
    count = (config.get("pretrain_seeds") or {}).get(run, 1)
    return [run, *(f"{run}+s{index}" for index in range(1, count))]


def add_pretrain_replicas(config: dict[str, Any]) -> None:
    """Add each ``pretrain_seeds`` replica to ``pretrain.runs`` (in place, as the Snakefile loads the config):
    the run's entry with ``seed_offset`` k, so it pretrains from seed + k and is otherwise the same run."""
    runs = config["pretrain"]["runs"]
    for run, count in (config.get("pretrain_seeds") or {}).items():
        if run not in runs:
            raise InputError(f"config: pretrain_seeds: {run!r} is not a run of pretrain.runs")
        for index in range(1, count):
            runs.setdefault(f"{run}+s{index}", {**runs[run], "seed_offset": index})


LENGTH_KEYS = ("epochs", "train_samples")


def _other_length(levels: Mapping[str, Mapping[str, Any]]) -> str:
    """Of ``epochs`` and ``train_samples``, the one the run does not go by: the most specific level (key ->
    its settings, general first) that states one decides; one level stating both is refused, since a
    preset's ``epochs`` over a run's ``train_samples`` would otherwise be silently ignored."""
    for where, settings in reversed(list(levels.items())):
        stated = [key for key in LENGTH_KEYS if key in settings]
        if len(stated) == 2:
            raise InputError(
                f"config: {where}: states both epochs and train_samples (after merging the config files); "
                "expected one: train_samples decides the epochs from the images the run reads"
            )
        if stated:
            return LENGTH_KEYS[1 - LENGTH_KEYS.index(stated[0])]
    return "train_samples"


def _task_settings(config: Mapping[str, Any], spec: dict[str, Any], run: str) -> dict[str, Any]:
    """Method task: the downstream protocol ``task_protocol``'s settings (without its task and dataset)
    with the run's ``task_settings`` on top."""
    protocol = spec.pop("task_protocol")
    entry = downstream_entry(config, protocol)
    task = entry.pop("task")
    if task != spec.get("task"):
        raise InputError(
            f"config: pretrain.runs.{run}: task_protocol {protocol!r} is a {task} protocol "
            f"but the run's task is {spec.get('task')!r}"
        )
    entry.pop("dataset")
    return deep_merge(entry, spec.get("task_settings", {}))


CONTRASTIVE_KEYS = ("dim", "K", "m", "T", "mlp", "shuffle_bn_splits")


def _check_contrastive(spec: Mapping[str, Any], run: str) -> None:
    if spec.get("method") not in ("moco", "exemplar", "supcon"):
        return
    missing = [key for key in CONTRASTIVE_KEYS if key not in spec.get("moco", {})]
    if missing:
        raise InputError(
            f"config: pretrain.runs.{run}: moco settings {missing} missing after merging "
            "defaults, recipe and run; expected them in the recipe"
        )


def dataset_of(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    return dict(_lookup(config, "datasets", name))


def downstream_seeds(config: Mapping[str, Any], protocol: str, run: str | None = None) -> list[int]:
    """The seeds of a protocol's repeated runs: ``seeds.<protocol>`` (else ``seeds.default``, else 1) runs,
    seeded ``seed``, ``seed`` + 1, ...; a table cell is their mean and standard deviation. A ``run`` that
    a claim compares on ``protocol`` gets at least the claim's ``seeds`` (else ``seeds.claims.<protocol>``):
    claims pair runs by seed, so a few rows get seeds without multiplying every table's jobs."""
    counts = config.get("seeds", {})
    count = counts.get(protocol, counts.get("default", 1))
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise InputError(f"config: seeds.{protocol}: expected a whole number of runs >= 1, got {count!r}")
    if run is not None:
        count = max(count, claim_seeds(config, protocol, run))
    return [config["seed"] + index for index in range(count)]


def claim_runs(claim: Mapping[str, Any]) -> list[str]:
    """The pretraining runs a table-cell claim (kind difference or spread) compares; [] for the others."""
    if claim.get("kind", "difference") not in ("difference", "spread"):
        return []
    baseline = claim.get("baseline") or {}
    sides = [claim.get("a"), claim.get("b"), baseline.get("a"), baseline.get("b")]
    return [run for side in sides if side for run in (side if isinstance(side, list) else [side])]


def claim_replicas(config: Mapping[str, Any], claim: Mapping[str, Any]) -> list[str]:
    """``claim_runs`` with each run's ``pretrain_seeds`` replicas."""
    return [replica for run in claim_runs(claim) for replica in pretrain_replicas(config, run)]


def checked_claims(config: Mapping[str, Any]) -> list[str]:
    """The claims the workflow checks (``report.claims``, in order); the others are only declared."""
    return list(config.get("report", {}).get("claims", []))


def claim_seeds(config: Mapping[str, Any], protocol: str, run: str) -> int:
    """The most seeds a checked claim asks of ``run`` on ``protocol`` (0: none compares it there)."""
    default = config.get("seeds", {}).get("claims", {}).get(protocol, 0)
    claims = config.get("claims") or {}
    return max(
        (
            max(claims[name].get("seeds", 0), default)
            for name in checked_claims(config)
            if claims[name].get("protocol") == protocol and run in claim_replicas(config, claims[name])
        ),
        default=0,
    )


def _seed(config: Mapping[str, Any], seed: int | None) -> int:
    return config["seed"] if seed is None else int(seed)


def downstream_protocols(config: Mapping[str, Any]) -> list[str]:
    return list(config["downstream"])


def downstream_entry(config: Mapping[str, Any], protocol: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """A protocol's settings; ``inherit: <protocol>`` starts from another protocol's entry (e.g. Figure 4's
    VOC07 run that is also evaluated every ``eval_period`` iterations) and changes some keys."""
    entry = dict(_lookup(config, "downstream", protocol))
    parent = entry.pop("inherit", None)
    if parent is None:
        return entry
    if parent in (*seen, protocol):
        raise InputError(f"config: downstream.{protocol}.inherit: {parent!r} inherits from itself")
    return deep_merge(downstream_entry(config, parent, (*seen, protocol)), entry)


EPOCH_RUN = re.compile(r"(?P<run>.+)@ep(?P<epoch>[0-9]+)")


def pretrain_method(config: Mapping[str, Any], run: str, where: str) -> str:
    """The method of the pretraining run behind a downstream ``run`` (``run@epN``: that run's); an imported
    run's is its recipe's (supervised-coco: supervised). ``where`` names the key that asks, in errors."""
    match = EPOCH_RUN.fullmatch(run)
    base = run if match is None else match["run"]
    if base not in config["pretrain"]["runs"]:
        raise InputError(
            f"config: {where}: {run!r} is not a pretraining run of pretrain.runs; the setting depends on "
            "the run's pretraining method"
        )
    return pretrain_spec(config, base)["method"]


def downstream_run_entry(config: Mapping[str, Any], protocol: str, run: str) -> dict[str, Any]:
    """A protocol's settings for one run: ``lr_by_method`` gives way to the lr of the run's pretraining
    method (the linear readout's lr per family), so a job's spec holds the one lr it trains with."""
    entry = downstream_entry(config, protocol)
    by_method = entry.pop("lr_by_method", None)
    if by_method:
        method = pretrain_method(config, run, f"downstream.{protocol}.lr_by_method")
        entry["lr"] = by_method.get(method, entry["lr"])
    return entry


def downstream_spec(
    config: Mapping[str, Any], protocol: str, run: str, seed: int | None = None
) -> dict[str, Any]:
    """One run of a downstream protocol: its entry resolved for the run, the compute settings, what the
    data is (the dataset's kind; a VOC dataset's class names, in label order) and which run and seed."""
    entry = downstream_run_entry(config, protocol, run)
    dataset = dataset_of(config, entry["dataset"])
    spec = {**entry, **config["compute"], "data_kind": dataset["kind"], "protocol": protocol, "run": run}
    if dataset["kind"] == "voc":
        spec["classes"] = dataset["classes"]
    return {**spec, "seed": _seed(config, seed)}


def extra_train_sets(config: Mapping[str, Any], protocol: str) -> list[tuple[str, str]]:
    """(root, split) of each additional training set of a protocol (VOC07+12's VOC2012 trainval)."""
    extra = downstream_entry(config, protocol).get("extra_train", [])
    return [(dataset_of(config, item["dataset"])["root"], item["split"]) for item in extra]


def table_runs(config: Mapping[str, Any], table: str) -> list[str]:
    """Every pretraining run that appears as a row of ``table`` (a quoted row has none)."""
    declaration = _lookup(config, "tables", table)
    return [row["run"] for group in declaration["groups"] for row in group["rows"] if "run" in row]
