"""The registry of departures from the paper (paper/reference/deviations.yaml): every departure the plan
makes is in it, a table's note names those that touch it, and the report's appendix lists every entry."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

from goodtransfer.cli import main
from goodtransfer.config import deep_merge
from goodtransfer.config_check import check_config
from goodtransfer.io import InputError, read_yaml
from goodtransfer.report import deviations as dv
from goodtransfer.report.render import render_report
from tests.test_report import TEMPLATES, sample_context, sample_table

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = ROOT / "paper/reference/deviations.yaml"
CONFIG = read_yaml(ROOT / "config.yaml")
PAPER = deep_merge(CONFIG, read_yaml(ROOT / "presets/paper.yaml"))
RELEASED = deep_merge(PAPER, read_yaml(ROOT / "presets/released.yaml"))
# The departures issue 15 names, each of which the registry must hold.
NAMED = ("queue_2_20", "imagenet100_cmc_classes", "imported_supervised_coco_synthia", "miniimagenet_images",
         "bf16", "embedded_scale")  # fmt: skip


def test_registry_holds_every_named_departure_and_names_only_what_each_scale_has():
    entries = dv.load_registry(REGISTRY)
    ids = [entry["id"] for entry in entries]
    assert set(NAMED) <= set(ids)
    dv.check_references(dv.at_scale(entries, "paper"), PAPER, "paper")
    dv.check_references(dv.at_scale(entries, "embedded"), CONFIG, "embedded")
    dv.check_references(dv.at_scale(entries, "released"), RELEASED, "released")
    assert RELEASED["report"]["deviations"]["scale"] == "released"
    released = {entry["id"] for entry in dv.at_scale(entries, "released")}  # the authors' own pretraining
    assert "imported_supervised_coco_synthia" in released and "queue_2_20" not in released
    assert [e["id"] for e in dv.at_scale(entries, "embedded") if e["id"] in NAMED] == [
        "embedded_scale",
        "bf16",
    ]
    assert (
        CONFIG["report"]["deviations"]["scale"] == "embedded"
        and PAPER["report"]["deviations"]["scale"] == "paper"
    )
    # The paper-scale report touches a table or figure of the paper plan with every entry of its scale.
    for item in dv.appendix(entries, "paper", PAPER):
        assert not item["here"] or item["tables"] or item["figures"], item["id"]


def _table_notes(tmp_path: Path, table: str, scale: str) -> list[str]:
    out = tmp_path / f"{table}-{scale}.json"
    code = main(["table", "--name", table, "--declaration", json.dumps(PAPER["tables"][table]),
                 "--metrics", "{}", "--reference", str(ROOT / "paper/reference/reference_results.yaml"),
                 "--deviations", str(REGISTRY), "--scale", scale, "--out", str(out)])  # fmt: skip
    assert code == 0
    notes = json.loads(out.read_text())["notes"]
    return [note for note in notes if note.startswith("Departs from the paper")]


def test_a_table_note_names_the_departures_that_touch_it(tmp_path):
    (table3,) = _table_notes(tmp_path, "table3", "paper")
    assert '"1M" queue is 2^20 [queue_2_20]' in table3 and "bf16 autocast [bf16]" in table3
    assert "imported_supervised_coco_synthia" not in table3 and "embedded_scale" not in table3
    (table2,) = _table_notes(tmp_path, "table2", "paper")
    assert "[imported_supervised_coco_synthia]" in table2 and "[imagenet100_cmc_classes]" in table2
    assert "[linear_readout]" in table2 and "queue_2_20" not in table2  # through its linear column
    (table4,) = _table_notes(tmp_path, "table4", "paper")
    assert "[miniimagenet_images]" in table4 and "[table4_baseline_row]" in table4
    (embedded,) = _table_notes(tmp_path, "table3", "embedded")
    assert (
        "[embedded_scale]" in embedded and "[queue_1m_embedded]" in embedded and "queue_2_20" not in embedded
    )


def _tex(word: str) -> str:
    return word.replace("_", r"\_")


@pytest.mark.parametrize("scale", ["paper", "embedded"])
def test_report_appendix_lists_every_registry_entry(scale):
    config = PAPER if scale == "paper" else CONFIG
    entries = dv.load_registry(REGISTRY)
    context = {
        **sample_context(),
        "deviations": dv.appendix(entries, scale, config),
        "deviations_scale": scale,
    }
    tex = render_report([sample_table()], context, TEMPLATES)
    appendix = tex[tex.index(r"\section{Departures from the paper}") : tex.index(r"\section{Provenance}")]
    for entry in entries:
        assert "(\\texttt{" + _tex(entry["id"]) + "})" in appendix, entry["id"]
    held = appendix.split(r"\subsection*{Registry entries of the other scales}")[0]
    assert all(_tex(entry["id"]) in held for entry in dv.at_scale(entries, scale))
    assert ("This report is of the embedded scale" in appendix) == (scale == "embedded")
    if scale == "paper":
        assert r"\emph{Touches:} Table 3, Table 9, Table 10." in appendix  # queue_2_20's


def test_a_broken_registry_is_refused_naming_the_file_entry_and_field(tmp_path):
    raw = read_yaml(REGISTRY)
    bad = copy.deepcopy(raw)
    del bad["deviations"][2]["why"]
    path = tmp_path / "deviations.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(InputError, match=re.escape(f"{path}: deviation 'queue_2_20': field 'why' missing")):
        dv.load_registry(path)
    bad = copy.deepcopy(raw)
    bad["deviations"][1]["touches"] = {"runs": ["exemplarv9"]}
    path.write_text(yaml.safe_dump(bad))
    config = copy.deepcopy(CONFIG)
    config["report"]["deviations"]["registry"] = str(path)
    expected = "config: report.deviations: deviation 'queue_1m_embedded'.touches.runs: ['exemplarv9'] are not"
    with pytest.raises(InputError, match=re.escape(expected)):
        check_config(config)
