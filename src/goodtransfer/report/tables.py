"""Assemble a paper table from metrics files: every cell carries ours, the paper's and its provenance.

A table is declared in the config: groups of rows (one pretraining run each) and columns (a protocol's
metric). Row i of a group is compared with row i of the same group in the paper's reference table, or, where
the reference rows are one list (Tables 3-5), with the row named by the row's ``reference_row``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from goodtransfer.io import InputError, read_json


def reference_value(
    reference: Mapping[str, Any],
    table: str,
    group: str | None,
    index: int,
    key: str,
    method: str | None = None,
) -> float | None:
    """The paper's ``key`` for a row: row ``index`` of ``group``, or, for a table whose reference rows are
    one list (Tables 3-5), the row whose ``method`` is ``method``."""
    try:
        rows = reference[table]["rows"] if group is None else reference[table]["rows"][group]
    except (KeyError, TypeError):
        raise InputError(f"reference: no rows for table {table!r}, group {group!r}") from None
    if method is not None:
        matches = [row for row in rows if row.get("method") == method]
        if not matches:
            known = [row.get("method") for row in rows]
            raise InputError(f"reference: table {table!r} has no row {method!r}; expected one of {known}")
        row = matches[0]
    elif index >= len(rows):
        raise InputError(
            f"reference: table {table!r} group {group!r} has {len(rows)} rows; asked for row {index}"
        )
    else:
        row = rows[index]
    value = row.get(key)
    return float(value) if isinstance(value, int | float) else None


def _cell(column: Mapping[str, Any], run: str, metrics_files: Mapping[str, str], paper: float | None) -> dict:
    path = metrics_files.get(f"{column['protocol']}/{run}")
    if path is None:
        return {"ours": None, "paper": paper, "provenance": None}
    metrics = read_json(path)
    if column["metric"] not in metrics:
        raise InputError(
            f"{path}: field {column['metric']!r} missing; expected it for column {column['key']!r}"
        )
    return {
        "ours": float(metrics[column["metric"]]),
        "paper": paper,
        "provenance": {
            "run": run,
            "config_hash": metrics.get("config_hash"),
            "checkpoint": metrics.get("checkpoint"),
            "metrics": str(Path(path)),
        },
    }


def build_table(
    name: str,
    declaration: Mapping[str, Any],
    metrics_files: Mapping[str, str],
    reference: Mapping[str, Any],
    notes: list[str],
) -> dict[str, Any]:
    """The table JSON that the renderer reads; ``metrics_files`` maps 'protocol/run' to a metrics.json."""
    columns = declaration["columns"]
    groups = []
    for group in declaration["groups"]:
        rows = []
        for index, row in enumerate(group["rows"]):
            cells = {
                column["key"]: _cell(
                    column,
                    row["run"],
                    metrics_files,
                    reference_value(
                        reference,
                        declaration["reference"],
                        group.get("reference_group"),
                        index,
                        column["key"],
                        row.get("reference_row"),
                    ),
                )
                for column in columns
            }
            rows.append({"label": row["label"], "run": row["run"], "cells": cells})
        groups.append({"label": group["label"], "rows": rows})
    return {
        "name": name,
        "caption": declaration["caption"],
        "row_header": declaration["row_header"],
        "columns": [{k: c[k] for k in ("key", "label", "group")} for c in columns],
        "groups": groups,
        "notes": notes,
    }
