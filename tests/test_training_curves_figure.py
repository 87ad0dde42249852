"""Fig. 4 (training curves) from hand-written VOC metrics: the record holds what the metrics say."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from goodtransfer.io import InputError
from goodtransfer.report.paper_figures import make_training_curves_figure

SPEC = {
    "kind": "training_curves",
    "caption": "AP against pretraining epoch and fine-tuning iteration.",
    "protocol": "voc07",
    "curve_protocol": "voc07_curve",
    "runs": [{"run": "supervised-frcgb", "label": "Supervised"}, {"run": "mocov2-frcgb", "label": "MoCo-v2"}],
    "epochs": [5, 10, 15],
}
EPOCH_AP = {"Supervised": {15: 30.0, 5: 20.0, 10: 25.0}, "MoCo-v2": {10: 35.0, 5: 30.0, 15: 38.0}}
CURVE_AP = {"Supervised": [(3, 10.0), (6, 21.0)], "MoCo-v2": [(3, 15.0), (6, 28.0)]}


def _metrics(ap: float) -> dict[str, float]:
    return {"AP": ap, "AP50": ap + 20, "AP75": ap - 5}


def _write(path: Path, content: dict) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))
    return str(path)


def _inputs(root: Path, epoch_ap=EPOCH_AP, curve_ap=CURVE_AP) -> tuple[dict, dict]:
    epochs = {
        label: {e: _write(root / label / f"epoch{e}.json", _metrics(ap)) for e, ap in by_epoch.items()}
        for label, by_epoch in epoch_ap.items()
    }
    curves = {
        label: _write(
            root / label / "curve.json",
            {**_metrics(points[-1][1]), "curve": [{"iteration": i, **_metrics(ap)} for i, ap in points]},
        )
        for label, points in curve_ap.items()
    }
    return epochs, curves


def test_record_series_are_the_metrics_with_epochs_sorted(tmp_path: Path) -> None:
    epochs, curves = _inputs(tmp_path / "in")
    record = make_training_curves_figure(
        "figure4", SPEC, epochs, curves, tmp_path / "f.pdf", tmp_path / "f.json"
    )
    assert (tmp_path / "f.pdf").read_bytes().startswith(b"%PDF")
    assert json.loads((tmp_path / "f.json").read_text()) == record
    moco = record["ours"]["MoCo-v2"]
    assert moco["pretrain_epochs"] == {"epochs": [5, 10, 15], "AP": [30.0, 35.0, 38.0],
                                       "AP50": [50.0, 55.0, 58.0], "AP75": [25.0, 30.0, 33.0]}  # fmt: skip
    assert moco["finetune_iters"] == {"iterations": [3, 6], "AP": [15.0, 28.0], "AP50": [35.0, 48.0],
                                      "AP75": [10.0, 23.0]}  # fmt: skip
    assert record["ours"]["Supervised"]["pretrain_epochs"]["AP"] == [20.0, 25.0, 30.0]
    assert record["sources"]["Supervised"] == {
        "epochs": {str(e): epochs["Supervised"][e] for e in (5, 10, 15)},
        "curve": curves["Supervised"],
    }


def test_changing_one_input_ap_changes_the_recorded_series(tmp_path: Path) -> None:
    changed = {**EPOCH_AP, "Supervised": {**EPOCH_AP["Supervised"], 10: 26.5}}
    before, after = (
        make_training_curves_figure("figure4", SPEC, *_inputs(tmp_path / k, ap), tmp_path / "f.pdf",
                                    tmp_path / f"{k}.json")["ours"]
        for k, ap in (("a", EPOCH_AP), ("b", changed))
    )  # fmt: skip
    assert before["Supervised"]["pretrain_epochs"]["AP"] == [20.0, 25.0, 30.0]
    assert after["Supervised"]["pretrain_epochs"]["AP"] == [20.0, 26.5, 30.0]
    assert after["MoCo-v2"] == before["MoCo-v2"]


def test_metrics_without_curve_are_refused_naming_the_file(tmp_path: Path) -> None:
    epochs, curves = _inputs(tmp_path)
    _write(Path(curves["MoCo-v2"]), _metrics(28.0))
    with pytest.raises(
        InputError, match=re.escape(f"{curves['MoCo-v2']}: field 'curve' missing; expected the evaluation")
    ):
        make_training_curves_figure("figure4", SPEC, epochs, curves, tmp_path / "f.pdf", tmp_path / "f.json")
    assert not (tmp_path / "f.pdf").exists()


def test_metrics_without_ap75_and_a_missing_epoch_are_named(tmp_path: Path) -> None:
    epochs, curves = _inputs(tmp_path)
    _write(Path(epochs["Supervised"][10]), {"AP": 25.0, "AP50": 45.0})
    with pytest.raises(InputError, match=re.escape(f"{epochs['Supervised'][10]}: field 'AP75' missing")):
        make_training_curves_figure("figure4", SPEC, epochs, curves, tmp_path / "f.pdf", tmp_path / "f.json")
    del epochs["MoCo-v2"][15]
    with pytest.raises(InputError, match=r"figures.figure4: 'MoCo-v2' has metrics for epochs \[5, 10\]"):
        make_training_curves_figure("figure4", SPEC, epochs, curves, tmp_path / "f.pdf", tmp_path / "f.json")


def test_figure_command_plots_training_curves(tmp_path: Path) -> None:
    epochs, curves = _inputs(tmp_path / "in")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "goodtransfer", "figure", "--name", "figure4",
               "--spec", json.dumps(SPEC), "--epoch-metrics", json.dumps(epochs),
               "--curve-metrics", json.dumps(curves),
               "--out-pdf", str(out / "figure4.pdf"), "--out-json", str(out / "figure4.json")]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((out / "figure4.json").read_text())
    assert record["kind"] == "training_curves" and record["pdf"] == str(out / "figure4.pdf")
    assert record["ours"]["Supervised"]["finetune_iters"]["AP"] == [10.0, 21.0]
    command[command.index("--curve-metrics") + 1] = json.dumps({**curves, "MoCo-v2": epochs["MoCo-v2"][5]})
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 2 and f"{epochs['MoCo-v2'][5]}: field 'curve' missing" in done.stderr
