"""Assemble a paper table from metrics files: every cell carries ours, the paper's and its provenance.

A table is declared in the config: groups of rows (one pretraining run each) and columns (a protocol's
metric). A cell is the mean (and sample standard deviation) over the run's seeds. A row is compared with
the paper's row named by its ``reference_row`` (the reference table's first column), else with the row at
the same position of the same group; a cell further from the paper's number than the seeds can explain
is marked (:mod:`goodtransfer.report.tolerance`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from goodtransfer.io import InputError, is_finite_number, read_json
from goodtransfer.report.tolerance import MARK, Tolerance


def reference_value(
    reference: Mapping[str, Any],
    table: str,
    group: str | None,
    index: int,
    key: str,
    method: str | None = None,
) -> float | None:
    """The paper's ``key`` for a row: row ``index`` of ``group``, or the row whose label (the reference
    table's first column: its method, pretraining, ...) is ``method``."""
    try:
        rows = reference[table]["rows"] if group is None else reference[table]["rows"][group]
    except (KeyError, TypeError):
        raise InputError(f"reference: no rows for table {table!r}, group {group!r}") from None
    if method is not None:
        label_key = (reference[table].get("columns") or ["method"])[0]  # 'method', 'pretraining', ...
        matches = [row for row in rows if row.get(label_key) == method]
        if not matches:
            known = [row.get(label_key) for row in rows]
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


def _mean_and_std(values: list[float]) -> tuple[float, float | None]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _cell(
    column: Mapping[str, Any],
    run: str,
    metrics_files: Mapping[str, str | Sequence[str]],
    paper: float | None,
    tolerance: Tolerance | None,
) -> dict:
    """Our mean over the seeds' metrics files (sample std when there are several), the paper's number,
    whether they differ by more than the seeds can explain, and which files the cell came from."""
    paths = metrics_files.get(f"{column['protocol']}/{run}")
    if isinstance(paths, str):
        paths = [paths]
    if not paths:
        empty = {"ours": None, "std": None, "n": 0, "tolerance": None, "deviates": None, "provenance": None}
        return {**empty, "paper": paper}
    runs = [read_json(path) for path in paths]
    values = [_metric(metrics, column, path) for path, metrics in zip(paths, runs, strict=True)]
    provenance = {
        "run": run,
        "config_hash": runs[0].get("config_hash"),
        "checkpoint": runs[0].get("checkpoint"),
        "metrics": [str(Path(path)) for path in paths],
    }
    if None in values:  # the metric is undefined for this data (null and why in the file): no number
        path, metrics = next((p, m) for p, m, v in zip(paths, runs, values, strict=True) if v is None)
        reason = (metrics.get("undefined") or {}).get(column["metric"], "no value recorded")
        undefined = {
            "ours": None,
            "std": None,
            "tolerance": None,
            "deviates": None,
            "undefined": f"{reason} ({path})",
        }
        return {**undefined, "n": len(values), "values": values, "paper": paper, "provenance": provenance}
    mean, std = _mean_and_std(values)
    allowed = (
        None if tolerance is None or paper is None else tolerance.allowed(column["key"], std, len(values))
    )
    return {
        "ours": mean,
        "std": std,
        "n": len(values),
        "values": values,
        "paper": paper,
        "tolerance": allowed,
        "deviates": None if allowed is None else abs(mean - paper) > allowed,
        "provenance": provenance,
    }


def _metric(metrics: Mapping[str, Any], column: Mapping[str, Any], path: str) -> float | None:
    """A finite number, or None where the metrics file says null (undefined for its data)."""
    if column["metric"] not in metrics:
        raise InputError(
            f"{path}: field {column['metric']!r} missing; expected it for column {column['key']!r}"
        )
    value = metrics[column["metric"]]
    if value is None:
        return None
    if not is_finite_number(value):
        raise InputError(f"{path}: field {column['metric']!r} is {value!r}; expected a finite number or null")
    return float(value)


def _undefined_notes(groups: list[dict[str, Any]], columns: Sequence[Mapping[str, Any]]) -> list[str]:
    """A note for each cell printed as a dash because its metric is undefined: where, and why."""
    labels = {column["key"]: column["label"] for column in columns}
    return [
        f"-- {row['label']}, {labels[key]}: undefined, {cell['undefined']}"
        for group in groups
        for row in group["rows"]
        for key, cell in row["cells"].items()
        if cell.get("undefined")
    ]


def _row_notes(declaration: Mapping[str, Any]) -> list[str]:
    """What a quoted row or a row the paper lacks is, so that its empty cells are not read as missing."""
    notes = []
    for group in declaration["groups"]:
        for row in group["rows"]:
            if row.get("quoted"):
                notes.append(f"{row['label']}: the paper's numbers, which it quotes; not run here.")
            if not row.get("in_paper", True):
                notes.append(f"{row['label']}: not in the paper; our run only, as a control.")
    return notes


def _tolerance_note(tolerance: Tolerance | None, columns: Sequence[Mapping[str, Any]]) -> list[str]:
    if tolerance is None:
        return []
    labels = [(column["key"], f"{column.get('group', '')} {column['label']}".strip()) for column in columns]
    return [f"{MARK} {tolerance.rule(labels)}"]


def build_table(
    name: str,
    declaration: Mapping[str, Any],
    metrics_files: Mapping[str, str],
    reference: Mapping[str, Any],
    notes: list[str],
    tolerance: Tolerance | None = None,
) -> dict[str, Any]:
    """The table JSON that the renderer reads; ``metrics_files`` maps 'protocol/run' to the metrics.json of
    each seed (or one path). ``tolerance``: cells further from the paper's than the seeds explain are
    marked."""
    columns = declaration["columns"]
    groups = []
    for group in declaration["groups"]:
        rows = []
        in_paper = [row for row in group["rows"] if row.get("in_paper", True)]
        for row in group["rows"]:
            # A row the paper lacks has no paper numbers, and the rows after it keep their paper positions.
            paper_index = in_paper.index(row) if row in in_paper else None
            cells = {
                column["key"]: _cell(
                    column,
                    row.get("run", ""),
                    metrics_files,
                    None
                    if paper_index is None
                    else reference_value(
                        reference,
                        declaration["reference"],
                        group.get("reference_group"),
                        paper_index,
                        column["key"],
                        row.get("reference_row"),
                    ),
                    tolerance,
                )
                for column in columns
            }
            rows.append({"label": row["label"], "run": row.get("run"), "cells": cells})
        groups.append({"label": group["label"], "rows": rows})
    return {
        "name": name,
        "caption": declaration["caption"],
        "row_header": declaration["row_header"],
        "columns": [{k: c[k] for k in ("key", "label", "group")} for c in columns],
        "groups": groups,
        "tolerance": None if tolerance is None else tolerance.as_dict(),
        "notes": [
            *notes,
            *_tolerance_note(tolerance, columns),
            *_row_notes(declaration),
            *_undefined_notes(groups, columns),
        ],
    }
