"""Figures 1 and 7 through the real workflow: analyses of real VOC07 detections, PDFs in the report, and
figure data that follow their input."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.workflow import copy_workflow, snakemake, write_config

RUNS = [{"run": "supervised-f", "label": "Supervised"}, {"run": "mocov2-f", "label": "MoCo-v2"}]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("figures"))
    overrides = {
        "figures": {
            "figure1": {"runs": RUNS},
            "figure7": {"runs": RUNS},
            "figure2": {"runs": RUNS, "images": {"count": 2}, "settings": {"iterations": 20}},
        },
        "report": {"tables": ["table1"], "figures": ["figure1", "figure2", "figure7"]},
    }
    write_config(workdir / "figures.yaml", overrides)
    done = snakemake(
        workdir, "paper/build/report.pdf", "--configfile", "tiny.yaml", "figures.yaml", timeout=900
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return workdir


def test_each_figure_is_a_pdf_with_its_plotted_data_recorded(built):
    for name, kind in (("figure1", "fp_trend"), ("figure7", "fp_breakdown")):
        record = json.loads((built / f"results/figures/{name}.json").read_text())
        assert record["kind"] == kind and set(record["heights"]) == {"Supervised", "MoCo-v2"}
        assert (built / f"paper/build/figures/{name}.pdf").read_bytes().startswith(b"%PDF")
        assert record["runs"]["MoCo-v2"]["analysis"] == "results/fp_analysis/voc07/mocov2-f.json"


def test_report_includes_both_figures_with_their_captions(built):
    text = subprocess.run(
        ["pdftotext", str(built / "paper/build/report.pdf"), "-"], capture_output=True, text=True, check=True
    ).stdout
    flat = " ".join(text.split())
    assert "Figure 1: False positives of VOC07 detectors" in flat
    assert "Figure 2: Images reconstructed from the res5 features" in flat
    assert "Figure 3: False-positive types among each class" in flat


def test_inversion_figure_records_a_perceptual_distance_per_backbone(built):
    record = json.loads((built / "results/figures/figure2.json").read_text())
    assert record["kind"] == "inversion" and len(record["images"]) == 2
    assert set(record["heights"]) == {"Supervised", "MoCo-v2"}
    assert all(value > 0 for value in record["heights"].values())
    assert len(list((built / "results/inversion/figure2/reconstructions/MoCo-v2").glob("*.png"))) == 2


def test_changed_detections_change_the_figure_data(built):
    detections = built / "results/voc07/mocov2-f/detections.json"
    before = json.loads((built / "results/figures/figure7.json").read_text())["heights"]["MoCo-v2"]
    payload = json.loads(detections.read_text())
    for det in payload["detections"]:  # every detection moved far away: all become background errors
        det["box"] = [0.0, 0.0, 1.0, 1.0]
    detections.write_text(json.dumps(payload))
    done = snakemake(built, "figure7", "--configfile", "tiny.yaml", "figures.yaml")
    assert done.returncode == 0, done.stderr[-3000:]
    after = json.loads((built / "results/figures/figure7.json").read_text())["heights"]["MoCo-v2"]
    assert after != before
    assert all(shares["BG"] == 100.0 for shares in after.values())


def test_snakemake_report_html_lists_tables_figures_and_the_report_with_captions(built):
    done = snakemake(built, "--report", "report.html", "--configfile", "tiny.yaml", "figures.yaml")
    assert done.returncode == 0, done.stderr[-3000:]
    html = (built / "report.html").read_text(encoding="utf-8")
    for text in ("Figures", "Tables", "figure7.pdf", "table1.json", "report.pdf", "False-positive types"):
        assert text in html, text
