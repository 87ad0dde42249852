"""Tables 3-5 (Exemplar vs MoCo on every protocol, few-shot, facial landmarks) end to end through the
real workflow on the tiny slice: table JSON with provenance, and the compiled report shows each table."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.workflow import copy_workflow, snakemake, write_config

TABLES = {
    "table3": ("Exemplar pretraining", ["MoCo-v1", "Exemplar-v1", "MoCo-v2", "Exemplar-v2"]),
    "table4": ("Five-way few-shot recognition", ["Supervised", "MoCo-v2", "Exemplar-v2"]),
    "table5": (
        "Facial landmark error on MAFL",
        ["Scratch", "Supervised (identity)", "MoCo-v2", "Exemplar-v2"],
    ),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("tables"))
    write_config(workdir / "tables.yaml", {"report": {"tables": sorted(TABLES)}})
    done = snakemake(
        workdir, "paper/build/report.pdf", "--configfile", "tiny.yaml", "tables.yaml", timeout=1200
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return workdir


@pytest.mark.parametrize("table", sorted(TABLES))
def test_every_cell_has_our_number_the_papers_and_its_metrics_file(built, table):
    data = json.loads((built / f"results/tables/{table}.json").read_text())
    labels = [row["label"] for group in data["groups"] for row in group["rows"]]
    assert labels == TABLES[table][1]
    for group in data["groups"]:
        for row in group["rows"]:
            for key, cell in row["cells"].items():
                assert isinstance(cell["ours"], float), (table, row["label"], key)
                assert isinstance(cell["paper"], float), (table, row["label"], key)
                assert (built / cell["provenance"]["metrics"]).is_file()


def test_report_pdf_shows_each_tables_caption_and_rows(built):
    text = subprocess.run(
        ["pdftotext", "-layout", str(built / "paper/build/report.pdf"), "-"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    flat = " ".join(text.split())
    for caption, rows in TABLES.values():
        assert caption in flat
        for label in rows:
            assert label in flat, label
