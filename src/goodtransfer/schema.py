"""The config schema (``config.schema.yaml`` beside this module): Snakemake validates the whole config with it
at start-up, and each downstream protocol's resolved settings are checked against their task's definition,
``$defs/<task>``, both at start-up (``config_check``) and when a job starts (a spec passed by hand). One
place says which keys a task takes; no module repeats the list.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from goodtransfer.io import InputError

# What config.downstream_spec adds to a protocol's entry: the compute settings and the job's identity.
JOB_KEYS = ("data_kind", "protocol", "run", "seed", "classes")


def schema_path() -> Path:
    """The schema file of the installed package (Snakemake's ``validate`` takes a path)."""
    return Path(str(files("goodtransfer").joinpath("config.schema.yaml")))


@cache
def config_schema() -> dict[str, Any]:
    return yaml.safe_load(schema_path().read_text())


def task_entry_errors(task: str, entry: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every way ``entry`` (a resolved protocol entry, ``inherit`` applied) differs from ``$defs/<task>``:
    (dotted key inside the entry, or '' for the entry itself; message), deepest first."""
    from jsonschema import Draft202012Validator

    definitions = config_schema()["$defs"]
    if task not in definitions:
        return [("task", f"{task!r} has no definition in config.schema.yaml")]
    validator = Draft202012Validator({"$defs": definitions, "$ref": f"#/$defs/{task}"})
    errors = sorted(validator.iter_errors(dict(entry)), key=lambda error: -len(error.absolute_path))
    return [(".".join(map(str, error.absolute_path)), error.message) for error in errors]


def check_task_entry(key: str, task: str, entry: Mapping[str, Any]) -> None:
    """Raise ``InputError`` naming the first key of ``entry`` that task ``task`` does not take as it is."""
    errors = task_entry_errors(task, entry)
    if errors:
        inner, message = errors[0]
        where = f"{key}.{inner}" if inner else key
        raise InputError(f"config: {where}: {message} (the settings of task {task!r}, inherit applied)")


def task_entry(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A job's spec without what ``config.downstream_spec`` adds (the compute settings, the job's identity):
    the protocol's entry, to check as such."""
    added = {*JOB_KEYS, *config_schema()["properties"]["compute"]["properties"]}
    return {key: value for key, value in spec.items() if key not in added}
