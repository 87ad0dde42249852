"""The report readable at a glance: a wide table (Table 9's 13 metrics) on a landscape page at the body's
font size with the paper's numbers under ours, and the runs behind the rows as one compact table."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from goodtransfer.io import write_text
from goodtransfer.report.latex import compile_pdf
from goodtransfer.report.render import WIDE_METRICS, render_report, render_table, runs_index, table_view
from tests.test_report import TEMPLATES, sample_context, sample_table


def wide_table() -> dict:
    """Table 9's shape: 13 metrics in four groups, two runs."""
    groups = {"ImageNet": ["Acc"], "VOC07": ["AP", "AP50", "AP75"], "COCO box": ["AP", "AP50", "AP75"],
              "COCO mask": ["AP", "AP50", "AP75"], "Cityscapes": ["mIoU", "mAcc", "aAcc"]}  # fmt: skip
    columns = [
        {"key": f"{g}_{m}".replace(" ", "_"), "label": m, "group": g} for g, ms in groups.items() for m in ms
    ]
    cells = {c["key"]: {"ours": 10.0 + i, "paper": 70.0 + i} for i, c in enumerate(columns)}
    moco = {**cells, "ImageNet_Acc": {"ours": 12.34}}
    rows = [{"label": "Exemplar-v2", "run": "exemplarv2", "cells": cells},
            {"label": "MoCo-v2", "run": "mocov2-frcgb", "cells": moco}]  # fmt: skip
    return {"name": "table9", "caption": "Exemplar against MoCo on every protocol", "row_header": "Method",
            "columns": columns, "groups": [{"label": "", "rows": rows}], "notes": []}  # fmt: skip


def test_a_wide_table_is_stacked_on_a_landscape_page_at_body_size():
    table = wide_table()
    assert len(table["columns"]) > WIDE_METRICS
    view = table_view(table)
    assert view["landscape"] and view["stacked"] and view["total_columns"] == 14
    assert [(s["label"], s["first"], s["last"]) for s in view["header_groups"]][:2] == [
        ("ImageNet", 2, 2),
        ("VOC07", 3, 5),
    ]
    tex = render_table(table, TEMPLATES)
    assert tex.index(r"\begin{landscape}") < tex.index(r"\begin{table}") and r"\end{landscape}" in tex
    assert r"\small" not in tex  # the body's font size
    assert r"\quad Exemplar-v2 & 10.0 & 11.0" in tex and r"\quad\quad\textit{paper} & \textit{70.0}" in tex
    narrow = table_view(sample_table())
    assert not narrow["landscape"] and narrow["total_columns"] == 9
    assert r"\small" in render_table(sample_table(), TEMPLATES)


def test_runs_index_gives_one_line_per_run_with_every_row_it_fills():
    first, again = wide_table(), copy.deepcopy(wide_table())
    again["name"] = "table3"
    index = runs_index([table_view(first), table_view(again), table_view(sample_table())])
    assert index[0] == {"run": "exemplarv2", "rows": "Tables 9, 3 (Exemplar-v2)"}
    assert {"run": "supervised_aug1", "rows": "Table 1 (Supervised / +RandomHorizontalFlip(0.5))"} in index
    assert len(index) == len({item["run"] for item in index}) == 6


@pytest.mark.skipif(shutil.which("latexmk") is None or shutil.which("pdfinfo") is None, reason="needs TeX")
def test_report_pdf_puts_the_wide_table_on_a_rotated_page_and_the_runs_in_one_table(tmp_path: Path):
    tex = tmp_path / "report.tex"
    write_text(tex, render_report([sample_table(), wide_table()], sample_context(), TEMPLATES))
    assert tex.read_text().count(r"\begin{longtable}") == 1 and r"\begin{itemize}" not in tex.read_text()
    pdf = tmp_path / "report.pdf"
    compile_pdf(tex, pdf)
    info = subprocess.run(["pdfinfo", "-f", "1", "-l", "20", str(pdf)], capture_output=True, text=True).stdout
    rotations = re.findall(r"Page +(\d+) rot: +(\d+)", info)
    assert ("90" in {rot for _, rot in rotations}) and ("0" in {rot for _, rot in rotations}), rotations
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True).stdout
    assert re.search(r"Exemplar-v2 +10\.0 +11\.0", text) and re.search(r"paper +70\.0 +71\.0", text)
    assert re.search(r"exemplarv2 +Table 9 \(Exemplar-v2\)", text)
