"""A published run (its checkpoint tracked by DVC) counts as done only while the config still describes it.

Snakemake does not retrain a published run, so nothing else would notice that its settings changed: the
downstream jobs would fine-tune the old backbone under the new label. The training log records the whole
resolved spec (``train_log.json``'s ``spec``); this module compares it with the spec the config resolves to.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from goodtransfer.io import InputError, read_json, spec_hash

# How a run was executed, not what it computed: a laptop may read a run trained on a GPU cluster.
EXECUTION_KEYS = ("device", "workers", "log_every")


def flatten(spec: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'moco': {'K': 65536}} -> {'moco.K': 65536}."""
    flat: dict[str, Any] = {}
    for key, value in spec.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def differing_keys(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """'key (published X, config Y)' for every dotted key whose value differs, execution keys aside."""
    old, new = flatten(recorded), flatten(current)
    missing = object()
    lines = []
    for key in sorted(set(old) | set(new)):
        if key.split(".")[0] in EXECUTION_KEYS:
            continue
        before, after = old.get(key, missing), new.get(key, missing)
        if before != after:
            shown = ["unset" if value is missing else repr(value) for value in (before, after)]
            lines.append(f"{key} (published {shown[0]}, config {shown[1]})")
    return lines


def check_published_run(run: str, spec: Mapping[str, Any], checkpoint: Path, train_log: Path) -> None:
    """Fail, naming the run, the differing keys and both ways out, if the published run was made from
    another spec than ``spec``."""
    record = read_json(train_log) if train_log.is_file() else {}
    if "spec" in record:
        changed = differing_keys(record["spec"], spec)
    elif record.get("config_hash") not in (None, spec_hash(spec)):
        changed = [f"config_hash (published {record['config_hash']}, config {spec_hash(spec)}; {train_log} "
                   "records no spec, so the keys cannot be named)"]  # fmt: skip
    else:
        changed = []
    if changed:
        raise InputError(
            f"config: pretrain.runs.{run}: {checkpoint} is published with DVC ({checkpoint}.dvc) but was "
            f"trained with other settings: {'; '.join(changed)}. Either delete {checkpoint}.dvc and "
            f"{train_log}.dvc (and the files) to retrain {run} with the current settings, or restore the "
            "published settings in the config."
        )
