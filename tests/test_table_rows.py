"""Rows that are not one run against one paper row: Table 4's Baseline, quoted by the paper from Chen et al.
(its numbers, no run), and SupCon in Tables 3 and 9, a control the paper does not have (our run, no paper
numbers). The rows after them keep their paper numbers."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest

from goodtransfer import config as gtc
from goodtransfer.config_check import check_config
from goodtransfer.io import read_yaml
from goodtransfer.report.render import render_table
from goodtransfer.report.tables import build_table
from goodtransfer.report.tolerance import Tolerance
from goodtransfer.schema import config_schema
from tests.test_report import TEMPLATES

ROOT = Path(__file__).resolve().parents[1]
CONFIG = read_yaml(ROOT / "config.yaml")
REFERENCE = read_yaml(ROOT / "paper/reference/reference_results.yaml")


def _metrics(tmp_path: Path, table: str, values: dict[str, float]) -> dict[str, str]:
    """One metrics.json per protocol and run of ``table``, every metric at its run's value."""
    declaration = CONFIG["tables"][table]
    files = {}
    for run in gtc.table_runs(CONFIG, table):
        for protocol in {column["protocol"] for column in declaration["columns"]}:
            path = tmp_path / protocol / run / "metrics.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({column["metric"]: values[run] for column in declaration["columns"]}))
            files[f"{protocol}/{run}"] = str(path)
    return files


def test_table4_baseline_row_has_the_papers_numbers_and_no_run(tmp_path):
    runs = {"fewshot-supervised": 40.0, "fewshot-mocov2": 41.0, "fewshot-exemplarv2": 42.0}
    table = build_table(
        "table4", CONFIG["tables"]["table4"], _metrics(tmp_path, "table4", runs), REFERENCE, []
    )
    baseline, supervised = table["groups"][0]["rows"][:2]
    assert baseline["label"].startswith("Baseline") and baseline["run"] is None
    assert baseline["cells"]["novel_1shot_acc"]["paper"] == 51.75
    assert all(cell["ours"] is None and cell["provenance"] is None for cell in baseline["cells"].values())
    acc = supervised["cells"]["base_classes_Acc"]
    assert (acc["ours"], acc["paper"]) == (40.0, 83.6)  # the Supervised row keeps its paper numbers
    assert any(
        note.startswith("Baseline (Chen et al.; quoted): the paper's numbers") for note in table["notes"]
    )
    assert (
        "fewshot-supervised" in gtc.table_runs(CONFIG, "table4")
        and len(gtc.table_runs(CONFIG, "table4")) == 3
    )


@pytest.mark.parametrize("name", ["table3", "table9"])
def test_supcon_row_is_ours_only_and_marked_not_in_the_paper(tmp_path, name):
    runs = {"mocov1": 1.0, "exemplarv1": 2.0, "mocov2-frcgb": 3.0, "exemplarv2": 4.0, "supcon": 5.0}
    tolerance = Tolerance.from_dict(CONFIG["report"]["tolerance"])
    metrics = _metrics(tmp_path, name, runs)
    table = build_table(name, CONFIG["tables"][name], metrics, REFERENCE, [], tolerance)
    rows = {row["run"]: row for row in table["groups"][0]["rows"]}
    supcon = rows["supcon"]
    assert supcon["label"] == "SupCon (not in the paper)"
    assert all(
        c["ours"] == 5.0 and c["paper"] is None and c["deviates"] is None for c in supcon["cells"].values()
    )
    assert rows["exemplarv2"]["cells"]["ImageNet_Acc"]["paper"] == 68.9  # Exemplar-v2's own paper row
    assert "SupCon (not in the paper): not in the paper; our run only, as a control." in table["notes"]
    assert r"\quad SupCon (not in the paper)" in render_table(table, TEMPLATES)


def test_a_quoted_row_with_a_run_or_without_a_reference_row_is_refused():
    for row in ({"label": "B", "quoted": True, "run": "mocov1", "reference_row": "MoCo-v1"},
                {"label": "B", "quoted": True}, {"label": "B"}):  # fmt: skip
        config = copy.deepcopy(CONFIG)
        config["tables"]["table3"]["groups"][0]["rows"].append(row)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(config, config_schema())
    jsonschema.validate(CONFIG, config_schema())  # the shipped rows pass, and their names fit the config
    check_config(CONFIG)
