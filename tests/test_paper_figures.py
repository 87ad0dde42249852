"""Figures 1, 4, 6 and 7 beside the paper's: each reads the paper's values shipped in
paper/reference/figures, draws them beside ours, and its record holds both series."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from goodtransfer.io import InputError, write_json
from goodtransfer.report.paper_figures import make_figure, make_inversion_figure, make_training_curves_figure
from tests.test_error_analysis import _analyses
from tests.test_training_curves_figure import SPEC as CURVES_SPEC
from tests.test_training_curves_figure import _inputs as curve_inputs

VALUES = Path(__file__).resolve().parents[1] / "paper/reference/figures"
RUNS = [{"run": "supervised-frcgb", "label": "Supervised"}, {"run": "mocov2-frcgb", "label": "MoCo-v2"}]
PAPER_LABELS = {"MoCo-v2": "MoCo"}  # "Supervised" is the paper's name too


def _paper(figure: int) -> dict:
    return {"values": str(VALUES / f"fig{figure}_values.json"), "labels": PAPER_LABELS}


def _analysis_files(tmp_path: Path) -> list[Path]:
    """Our analyses (error_analysis.analyse of hand-placed detections, classes cat and dog) as files."""
    analyses = _analyses()
    paths = []
    for label, ours in (("Supervised", "Supervised"), ("MoCo-v2", "MoCo")):
        paths.append(tmp_path / f"{label}.json")
        write_json(paths[-1], analyses[ours])
    return paths


def _pdf_text(path: Path) -> str:
    done = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True)
    return " ".join(done.stdout.split())


def test_figure7_record_holds_our_bars_and_the_papers_with_their_mean_localisation_share(tmp_path):
    spec = {
        "kind": "fp_breakdown",
        "caption": "FP types.",
        "runs": RUNS,
        "classes": ["cat"],
        "paper": _paper(7),
    }
    record = make_figure(
        "figure7", spec, _analysis_files(tmp_path), tmp_path / "f7.pdf", tmp_path / "f7.json"
    )
    assert json.loads((tmp_path / "f7.json").read_text()) == record
    assert record["ours"]["MoCo-v2"]["cat"] == pytest.approx(
        {"Loc": 200 / 3, "Sim": 100 / 3, "Oth": 0, "BG": 0}
    )
    assert len(record["paper"]["MoCo-v2"]) == 20  # every VOC class, as the paper's pies
    assert record["paper"]["Supervised"]["dog"] == {"Loc": 73.0, "Sim": 22.0, "Oth": 1.0, "BG": 4.0}
    # the paper's text: the mean Loc share is 53.3% supervised vs 45.7% MoCo
    assert record["loc_share"]["paper"] == pytest.approx({"Supervised": 53.25, "MoCo-v2": 45.7})
    assert record["loc_share"]["ours"] == pytest.approx({"Supervised": 0.0, "MoCo-v2": 200 / 3})
    text = _pdf_text(tmp_path / "f7.pdf")
    assert "paper: mean Loc share Supervised 53.2%, MoCo-v2 45.7%" in text
    assert "ours: mean Loc share Supervised 0.0%, MoCo-v2 66.7%" in text


def test_figure1_record_holds_our_trend_and_the_papers_three_classes(tmp_path):
    spec = {"kind": "fp_trend", "caption": "FP trend.", "runs": RUNS, "classes": ["cat"], "paper": _paper(1)}
    record = make_figure(
        "figure1", spec, _analysis_files(tmp_path), tmp_path / "f1.pdf", tmp_path / "f1.json"
    )
    assert record["ours"]["MoCo-v2"]["cat"]["Loc"] == pytest.approx([100.0, 50.0])
    assert record["paper_points"] == [25, 50, 100, 200, 400]
    assert sorted(record["paper"]["MoCo-v2"]) == ["cat", "sheep", "tvmonitor"]
    assert record["paper"]["Supervised"]["cat"]["Loc"] == [83.3, 68.7, 64.6, 64.4, 56.1]
    assert set(record["loc_share"]["paper"]) == {"Supervised", "MoCo-v2"}
    assert "tvmonitor / MoCo-v2 (paper)" in _pdf_text(tmp_path / "f1.pdf")


def test_figure4_record_overlays_the_papers_curves(tmp_path):
    epochs, curves = curve_inputs(tmp_path / "in")
    spec = {**CURVES_SPEC, "paper": _paper(4)}
    record = make_training_curves_figure(
        "figure4", spec, epochs, curves, tmp_path / "f4.pdf", tmp_path / "f4.json"
    )
    assert record["ours"]["MoCo-v2"]["pretrain_epochs"]["AP"] == [30.0, 35.0, 38.0]
    paper = record["paper"]["MoCo-v2"]
    assert (
        paper["pretrain_epochs"]["epochs"][:2] == [10.0, 20.0] and paper["pretrain_epochs"]["AP"][0] == 36.6
    )
    assert paper["finetune_iters"]["iterations"][-1] == 9000.0 and paper["finetune_iters"]["AP"][-1] == 46.59
    assert record["paper"]["Supervised"]["pretrain_epochs"]["AP"][-1] == 46.2
    text = _pdf_text(tmp_path / "f4.pdf")
    assert "MoCo-v2 (paper)" in text and "paper's pretraining epoch" in text  # a top axis: other schedule


def _inversion_metrics(tmp_path: Path, supervised: list[float], moco: list[float]) -> Path:
    metrics = {
        label: {"lpips_mean": sum(v) / len(v), "lpips_per_image": v, "images": ["a.png", "b.png", "c.png"],
                "checkpoint": f"{label}.pt"}
        for label, v in (("Supervised", supervised), ("MoCo-v2", moco))
    }  # fmt: skip
    path = tmp_path / "metrics.json"
    write_json(path, metrics)
    (tmp_path / "grid.pdf").write_bytes(b"%PDF-1.4 grid")
    return path


def test_figure6_is_the_per_image_scatter_beside_the_papers_with_means_and_share_below_diagonal(tmp_path):
    spec = {"kind": "inversion", "caption": "Distances.", "runs": RUNS, "paper": _paper(6)}
    metrics = _inversion_metrics(tmp_path, [0.5, 0.4, 0.3], [0.2, 0.6, 0.1])
    record = make_inversion_figure("figure6", spec, metrics, tmp_path / "grid.pdf", tmp_path / "f6.pdf",
                                   tmp_path / "f6.json")  # fmt: skip
    assert record["ours"] == {"Supervised": [0.5, 0.4, 0.3], "MoCo-v2": [0.2, 0.6, 0.1]}
    assert len(record["paper"]["Supervised"]) == len(record["paper"]["MoCo-v2"]) == 1000
    # the paper's text: mean distance 6.43 supervised, 5.59 MoCo
    assert record["means"]["paper"] == pytest.approx({"Supervised": 6.431, "MoCo-v2": 5.590}, abs=1e-3)
    assert record["scatter"]["ours"]["below_diagonal"] == pytest.approx(2 / 3)
    assert record["scatter"]["paper"]["below_diagonal"] == pytest.approx(0.806)
    pdf = (tmp_path / "f6.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and pdf != (tmp_path / "grid.pdf").read_bytes()
    assert "81% below the diagonal" in _pdf_text(tmp_path / "f6.pdf")


def test_a_label_the_papers_file_lacks_is_named_with_the_file(tmp_path):
    paper = {"values": str(VALUES / "fig7_values.json"), "labels": {"MoCo-v2": "MoCo-v3"}}
    spec = {"kind": "fp_breakdown", "caption": "FP types.", "runs": RUNS, "classes": ["cat"], "paper": paper}
    with pytest.raises(InputError, match=re.escape("fig7_values.json: no series 'MoCo-v3'")):
        make_figure("figure7", spec, _analysis_files(tmp_path), tmp_path / "f.pdf", tmp_path / "f.json")
    spec["paper"]["labels"] = {"MoCo": "MoCo"}
    with pytest.raises(InputError, match=r"figures.figure7.paper.labels: \['MoCo'\] are not among its run"):
        make_figure("figure7", spec, _analysis_files(tmp_path), tmp_path / "f.pdf", tmp_path / "f.json")
