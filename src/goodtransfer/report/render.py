"""Render table JSON files into LaTeX tables and a full report that sets our numbers beside the paper's.

Usage::

    python -m goodtransfer.report.render table --table-json results/tables/table1.json --out-tex t1.tex
    python -m goodtransfer.report.render report --tables a.json b.json --context ctx.json \\
        --out-tex report.tex --out-pdf report.pdf

The templates only lay out; all structure that needs counting (column spans, cmidrule ranges) is computed
here, and every string from the JSON is escaped by the environment (see :mod:`goodtransfer.report.latex`).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2

from goodtransfer.io import InputError, read_json, sweep_leftovers, unwind_on_sigterm, write_text
from goodtransfer.report.claims_view import claims_view
from goodtransfer.report.latex import (
    LatexError,
    LatexSafe,
    compile_pdf,
    format_number,
    make_environment,
)

__all__ = ["DEFAULT_TEMPLATE_DIR", "main", "render_report", "render_table", "table_view"]

DEFAULT_TEMPLATE_DIR = Path(__file__).resolve().parents[3] / "paper"
TABLE_TEMPLATE = "tables/table.tex.j2"
REPORT_TEMPLATE = "report.tex.j2"
DEFAULT_DECIMALS = 1

# Each metric gets one sub-column per source; the published number comes first so a row reads
# "what the paper says, what we got".
SUBCOLUMNS: tuple[dict[str, str], ...] = (
    {"key": "paper", "label": "paper"},
    {"key": "ours", "label": "ours"},
)

# A table of more metrics than this is wide: it goes on a landscape page at the body's font size, each
# row's paper numbers on a line under ours (one LaTeX column per metric), instead of being shrunk.
WIDE_METRICS = 7

_SCALAR = (str, int, float)
DEVIATION_MARK_TEX = "$^{*}$"  # the table note (report/tolerance.py MARK) explains it


def _need(obj: Any, key: str, where: str, kind: type | tuple[type, ...]) -> Any:
    """``obj[key]`` checked for presence and type; the error names the field and where it was expected."""
    if not isinstance(obj, dict):
        raise InputError(f"{where}: expected an object, got {type(obj).__name__}")
    if key not in obj:
        raise InputError(f"{where}: missing field '{key}'")
    value = obj[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise InputError(f"{where}.{key}: expected {names}, got {type(value).__name__}")
    return value


def _number_or_none(cell: dict[str, Any], key: str, where: str) -> int | float | None:
    value = cell.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise InputError(f"{where}.{key}: expected a number or null, got {value!r}")
    return value


def _columns_view(table: dict[str, Any], where: str, span: int) -> list[dict[str, Any]]:
    columns = _need(table, "columns", where, list)
    if not columns:
        raise InputError(f"{where}.columns: expected at least one column")
    view = []
    for index, column in enumerate(columns):
        here = f"{where}.columns[{index}]"
        decimals = column.get("decimals", DEFAULT_DECIMALS) if isinstance(column, dict) else DEFAULT_DECIMALS
        if isinstance(decimals, bool) or not isinstance(decimals, int) or not 0 <= decimals <= 6:
            raise InputError(f"{here}.decimals: expected an integer 0..6, got {decimals!r}")
        group = column.get("group") or "" if isinstance(column, dict) else ""
        if not isinstance(group, str):
            raise InputError(f"{here}.group: expected a string, got {type(group).__name__}")
        first = 2 + index * span  # LaTeX column numbers; column 1 holds the row labels
        view.append(
            {
                "key": _need(column, "key", here, str),
                "label": _need(column, "label", here, str),
                "group": group,
                "decimals": decimals,
                "first": first,
                "last": first + span - 1,
            }
        )
    keys = [column["key"] for column in view]
    if len(set(keys)) != len(keys):
        raise InputError(f"{where}.columns: duplicate keys in {keys}")
    return view


def _header_groups(columns: list[dict[str, Any]], width: int) -> list[dict[str, Any]]:
    """Runs of adjacent columns sharing a group, as LaTeX column ranges (column 1 holds the row labels);
    each metric spans ``width`` LaTeX columns."""
    spans: list[dict[str, Any]] = []
    for index, column in enumerate(columns):
        if spans and spans[-1]["label"] == column["group"]:
            spans[-1]["width"] += width
        else:
            spans.append({"label": column["group"], "width": width, "first": 2 + index * width})
    for span in spans:
        span["last"] = span["first"] + span["width"] - 1
    return spans


def _row_view(row: dict[str, Any], columns: list[dict[str, Any]], where: str) -> dict[str, Any]:
    label = _need(row, "label", where, str)
    cells = _need(row, "cells", where, dict)
    known = {column["key"] for column in columns}
    stray = sorted(set(cells) - known)
    if stray:
        # A cell whose column is not declared would silently vanish from the report.
        raise InputError(f"{where}.cells: keys {stray} are not among the table's columns {sorted(known)}")
    cell_views = []
    for column in columns:
        cell = cells.get(column["key"]) or {}
        here = f"{where}.cells.{column['key']}"
        if not isinstance(cell, dict):
            raise InputError(f"{here}: expected an object with 'ours'/'paper', got {type(cell).__name__}")
        view = {sub["key"]: _number_or_none(cell, sub["key"], here) for sub in SUBCOLUMNS}
        view["decimals"] = column["decimals"]
        view["std"] = _number_or_none(cell, "std", here)
        view["text"] = _cell_text(view, bool(cell.get("deviates")))
        cell_views.append(view)
    run = row.get("run")
    return {"label": label, "run": run if isinstance(run, str) else "", "cells": cell_views}


def _cell_text(cell: dict[str, Any], deviates: bool) -> dict[str, LatexSafe]:
    """What each sub-column prints: the paper's number; our mean, +- the std over seeds when there are
    several, and a mark when it is further from the paper's than the seeds explain."""
    decimals = cell["decimals"]
    ours = format_number(cell["ours"], decimals)
    if cell["std"] is not None:
        ours = LatexSafe(f"{ours}\\,{{\\scriptsize$\\pm${format_number(cell['std'], decimals)}}}")
    if deviates and cell["ours"] is not None:
        ours = LatexSafe(f"{ours}{DEVIATION_MARK_TEX}")
    return {"paper": format_number(cell["paper"], decimals), "ours": ours}


def _latex_label(name: str) -> LatexSafe:
    # \label keys cannot hold specials; keep a readable, stable key.
    return LatexSafe("tab:" + (re.sub(r"[^A-Za-z0-9:.-]+", "-", name).strip("-") or "table"))


def table_view(table: dict[str, Any]) -> dict[str, Any]:
    """Validate a table JSON object and reshape it into what the template lays out."""
    name = table.get("name") if isinstance(table, dict) else None
    where = f"table {name!r}" if isinstance(name, str) else "table"
    name = _need(table, "name", where, str)
    metrics = _need(table, "columns", where, list)
    stacked = len(metrics) > WIDE_METRICS
    span = 1 if stacked else len(SUBCOLUMNS)
    columns = _columns_view(table, where, span)
    groups = []
    for g_index, group in enumerate(_need(table, "groups", where, list)):
        g_where = f"{where}.groups[{g_index}]"
        rows = _need(group, "rows", g_where, list)
        groups.append(
            {
                "label": _need(group, "label", g_where, str),
                "rows": [_row_view(row, columns, f"{g_where}.rows[{i}]") for i, row in enumerate(rows)],
            }
        )
    notes = table.get("notes") or []
    if not isinstance(notes, list) or not all(isinstance(note, str) for note in notes):
        raise InputError(f"{where}.notes: expected a list of strings")
    header_groups = _header_groups(columns, span)
    return {
        "name": name,
        "caption": _need(table, "caption", where, str),
        "row_header": _need(table, "row_header", where, str),
        "label": _latex_label(name),
        "number": paper_number(name, "table"),
        "columns": columns,
        "subcolumns": list(SUBCOLUMNS),
        "header_groups": header_groups,
        "has_column_groups": any(span["label"] for span in header_groups),
        "total_columns": 1 + len(columns) * span,
        "span": span,
        "stacked": stacked,
        "landscape": stacked,
        "groups": groups,
        "runs": [{"group": group["label"], **row} for group in groups for row in group["rows"]],
        "notes": notes,
    }


def runs_index(views: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """The runs behind the tables' rows, one line per run: where it appears, e.g. "Tables 1, 7
    (Supervised / +Blur); Table 2 (Supervised / ImageNet)", in the order runs first appear."""
    places: dict[str, dict[str, list[str]]] = {}
    for view in views:
        number = view["number"]
        where = str(number) if number else view["name"]
        for row in view["runs"]:
            label = f"{row['group']} / {row['label']}" if row["group"] else row["label"]
            tables = places.setdefault(row["run"] or "(none recorded)", {}).setdefault(label, [])
            if where not in tables:
                tables.append(where)
    return [
        {
            "run": run,
            "rows": "; ".join(
                f"{'Tables' if len(tables) > 1 else 'Table'} {', '.join(tables)} ({label})"
                for label, tables in labels.items()
            ),
        }
        for run, labels in places.items()
    ]


def _render(env: jinja2.Environment, template: str, what: str, **context: Any) -> str:
    try:
        return env.get_template(template).render(**context)
    except jinja2.UndefinedError as err:
        # StrictUndefined's message already names the attribute; say which document it broke.
        raise InputError(f"{what}: missing field: {err.message}") from None
    except jinja2.TemplateNotFound as err:
        searched = getattr(env.loader, "searchpath", "?")
        raise InputError(f"template {err.name!r} not found in {searched}") from None


def render_table(table: dict[str, Any], template_dir: str | os.PathLike[str] = DEFAULT_TEMPLATE_DIR) -> str:
    """LaTeX source of one table (a ``table`` float) from a table JSON object."""
    view = table_view(table)
    return _render(make_environment(template_dir), TABLE_TEMPLATE, f"table {view['name']!r}", table=view)


def _context_view(context: dict[str, Any]) -> dict[str, Any]:
    where = "report context"
    scale_note = _need(context, "scale_note", where, str)
    provenance = []
    for index, item in enumerate(_need(context, "provenance", where, list)):
        here = f"{where}.provenance[{index}]"
        provenance.append(
            {
                "key": str(_need(item, "key", here, _SCALAR)),
                "value": str(_need(item, "value", here, _SCALAR)),
            }
        )
    date = context.get("date", "")
    return {
        "scale_note": scale_note,
        "provenance": provenance,
        "date": date if isinstance(date, str) else "",
        "deviations": [
            _deviation_view(item, f"{where}.deviations[{index}]")
            for index, item in enumerate(context.get("deviations") or [])
        ],
        "deviations_scale": context.get("deviations_scale") or "",
    }


def _deviation_view(item: dict[str, Any], where: str) -> dict[str, Any]:
    """A registry entry for the appendix (report/deviations.py ``appendix``), with what it touches named
    as the report numbers it ("Table 3", "Figure 6")."""
    view = {key: _need(item, key, where, str) for key in ("id", "title", "ours", "paper", "why")}
    touched = []
    for key, kind in (("tables", "table"), ("figures", "figure")):
        numbers = {str(name): paper_number(str(name), kind) for name in _need(item, key, where, list)}
        for name, number in sorted(
            numbers.items(), key=lambda pair: (pair[1] is None, pair[1] or 0, pair[0])
        ):
            touched.append(f"{kind.capitalize()} {number}" if number else name)
    return {**view, "here": bool(item.get("here")), "touches": ", ".join(touched) or "no table or figure"}


_FIGURE_PATH = re.compile(r"^[A-Za-z0-9_./-]+\.pdf$")


def figure_view(record: dict[str, Any], tex_dir: Path, where: str) -> dict[str, Any]:
    """A figure record (``paper_figures.make_figure``) as the template needs it: the PDF's path relative
    to the report (it is put in the LaTeX verbatim, so only plain path characters are allowed)."""
    name, caption, pdf = (_need(record, key, where, str) for key in ("name", "caption", "pdf"))
    relative = os.path.relpath(Path(pdf).resolve(), tex_dir.resolve())
    if not _FIGURE_PATH.match(relative):
        raise InputError(f"{where}: figure path {relative!r} has characters LaTeX would misread")
    label = LatexSafe("fig:" + (re.sub(r"[^A-Za-z0-9:.-]+", "-", name).strip("-") or "figure"))
    return {
        "name": name,
        "caption": caption,
        "path": LatexSafe(relative),
        "label": label,
        "number": paper_number(name, "figure"),
    }


def paper_number(name: str, kind: str) -> int | None:
    """'table7' -> 7: the report numbers a paper table or figure as the paper does (else in order)."""
    match = re.fullmatch(rf"{kind}([0-9]+)", name)
    return int(match.group(1)) if match else None


def render_report(
    tables: Sequence[dict[str, Any]],
    context: dict[str, Any],
    template_dir: str | os.PathLike[str] = DEFAULT_TEMPLATE_DIR,
    figures: Sequence[dict[str, Any]] = (),
    claims: dict[str, Any] | None = None,
) -> str:
    """LaTeX source of the whole report: intro, the claims, every table and figure, a provenance appendix."""
    env = make_environment(template_dir)
    views = [table_view(table) for table in tables]
    names = [view["name"] for view in views]
    if len(set(names)) != len(names):
        raise InputError(f"report: duplicate table names {names}")
    rendered = [
        {"view": view, "tex": LatexSafe(_render(env, TABLE_TEMPLATE, f"table {view['name']!r}", table=view))}
        for view in views
    ]
    context_view = _context_view(context)
    raw = context.get("deviations") or []
    figure_views = [
        {
            **figure,
            "deviations": [d["title"] for d in raw if d.get("here") and figure["name"] in d["figures"]],
        }
        for figure in figures
    ]
    return _render(
        env,
        REPORT_TEMPLATE,
        "report",
        tables=rendered,
        figures=figure_views,
        context=context_view,
        claims=None if claims is None else claims_view(claims),
        runs=runs_index(views),
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m goodtransfer.report.render", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    table = sub.add_parser("table", help="render one table JSON to a .tex fragment")
    table.add_argument("--table-json", required=True, type=Path)
    table.add_argument("--out-tex", required=True, type=Path)
    report = sub.add_parser("report", help="render the full report (.tex, and .pdf with --out-pdf)")
    report.add_argument("--tables", required=True, nargs="+", type=Path)
    report.add_argument("--context", required=True, type=Path, help="JSON with scale_note and provenance")
    report.add_argument("--out-tex", required=True, type=Path)
    report.add_argument("--out-pdf", type=Path, help="also compile with latexmk (shell escape off)")
    report.add_argument("--figures", nargs="*", type=Path, default=[], help="figure records (JSON)")
    report.add_argument("--claims", type=Path, help="results/claims.json: adds the Claims section")
    for command in (table, report):
        command.add_argument(
            "--templates",
            type=Path,
            default=DEFAULT_TEMPLATE_DIR,
            help=f"template directory (default: {DEFAULT_TEMPLATE_DIR})",
        )
    return parser


def _read_table(path: Path) -> dict[str, Any]:
    table = read_json(path)
    if not isinstance(table, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(table).__name__}")
    return table


def _run(args: argparse.Namespace) -> None:
    if args.command == "table":
        try:
            tex = render_table(_read_table(args.table_json), args.templates)
        except InputError as err:
            raise InputError(f"{args.table_json}: {err}") from None
        write_text(args.out_tex, tex)
        return
    tables = []
    for path in args.tables:
        table = _read_table(path)
        try:
            table_view(table)
        except InputError as err:
            raise InputError(f"{path}: {err}") from None
        tables.append(table)
    context = read_json(args.context)
    if not isinstance(context, dict):
        raise InputError(f"{args.context}: expected a JSON object")
    figures = [figure_view(read_json(path), args.out_tex.parent, str(path)) for path in args.figures]
    claims = None if args.claims is None else read_json(args.claims)
    write_text(args.out_tex, render_report(tables, context, args.templates, figures, claims))
    if args.out_pdf is not None:
        compile_pdf(args.out_tex, args.out_pdf)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns a process exit status (0 ok, 2 bad input, 1 LaTeX failure)."""
    args = _parser().parse_args(argv)
    unwind_on_sigterm()  # a killed job removes its temporary files and LaTeX build folder
    sweep_leftovers([path for path in (args.out_tex, getattr(args, "out_pdf", None)) if path])
    try:
        _run(args)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except LatexError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
