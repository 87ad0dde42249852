"""The config schema (``config.schema.yaml`` beside this module): the Snakefile validates the whole config
with it at start-up (``validate_config``), and each downstream protocol's resolved settings are checked
against their task's definition, ``$defs/<task>``, both at start-up (``config_check``) and when a job starts
(a spec passed by hand). One place says which keys a task takes; no module repeats the list.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from goodtransfer.io import InputError

if TYPE_CHECKING:
    from jsonschema import ValidationError

# What config.downstream_spec adds to a protocol's entry: the compute settings and the job's identity.
JOB_KEYS = ("data_kind", "protocol", "run", "seed", "classes")


def schema_path() -> Path:
    """The schema file of the installed package (Snakemake's ``validate`` takes a path)."""
    return Path(str(files("goodtransfer").joinpath("config.schema.yaml")))


@cache
def config_schema() -> dict[str, Any]:
    return yaml.safe_load(schema_path().read_text())


# Snakemake parses a --config value that is a mapping as YAML text, leaving every value in it a string.
NESTED_OVERRIDE_HINT = (
    "; a value nested in --config (key={...}) arrives as text: put the change in an overlay file, a YAML "
    "with only the keys to change, and pass it last, e.g. --configfile presets/paper.yaml overlay.yaml"
)


def describe(error: ValidationError) -> str:
    """The schema's message, and how to override a nested value where its text stands for a number, a flag
    or a list (``'3'``, ``'true'``, ``'[1, 2]'``: what a nested --config value becomes)."""
    if error.validator == "type" and error.validator_value != "string" and isinstance(error.instance, str):
        try:
            meant = yaml.safe_load(error.instance)
        except yaml.YAMLError:
            meant = error.instance
        if not isinstance(meant, str):
            return error.message + NESTED_OVERRIDE_HINT
    return error.message


def deepest_first(validator: Any, instance: Any) -> list[ValidationError]:
    return sorted(validator.iter_errors(instance), key=lambda error: -len(error.absolute_path))


def validate_config(config: Mapping[str, Any]) -> None:
    """Raise ``InputError`` naming the deepest key of the whole config that the schema rejects."""
    from jsonschema import Draft202012Validator

    errors = deepest_first(Draft202012Validator(config_schema()), dict(config))
    if errors:
        where = ".".join(map(str, errors[0].absolute_path)) or "(top level)"
        raise InputError(f"config: {where}: {describe(errors[0])} (config.schema.yaml)")


def task_entry_errors(task: str, entry: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every way ``entry`` (a resolved protocol entry, ``inherit`` applied) differs from ``$defs/<task>``:
    (dotted key inside the entry, or '' for the entry itself; message), deepest first."""
    from jsonschema import Draft202012Validator

    definitions = config_schema()["$defs"]
    if task not in definitions:
        return [("task", f"{task!r} has no definition in config.schema.yaml")]
    validator = Draft202012Validator({"$defs": definitions, "$ref": f"#/$defs/{task}"})
    return [
        (".".join(map(str, error.absolute_path)), describe(error))
        for error in deepest_first(validator, entry)
    ]


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
