"""The downstream task registry: one schema per task, specs checked at job start, side files bound to
their metrics by SHA-256."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from goodtransfer import config as gtc
from goodtransfer.io import InputError, write_json
from goodtransfer.schema import config_schema, task_entry
from goodtransfer.transfer.tasks import TASKS, file_beside
from tests.workflow import ROOT, protocol_spec


def test_every_task_has_one_definition_and_every_protocol_resolves_to_it():
    schema = config_schema()
    declared = schema["properties"]["downstream"]["additionalProperties"]["properties"]["task"]["enum"]
    assert sorted(declared) == sorted(TASKS)
    for name in TASKS:
        assert schema["$defs"][name]["properties"]["task"] == {"const": name}
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    paper = gtc.deep_merge(config, yaml.safe_load((ROOT / "presets/paper.yaml").read_text()))
    for layer in (config, paper):
        for protocol in gtc.downstream_protocols(layer):
            spec = gtc.downstream_spec(layer, protocol, "supervised-f")
            assert spec["data_kind"] == TASKS[spec["task"]].data_kind, protocol
            # what the job gets back to its entry is exactly the entry resolved for its run
            assert task_entry(spec) == gtc.downstream_run_entry(layer, protocol, "supervised-f"), protocol


def test_a_spec_with_a_misspelled_key_fails_at_job_start_naming_protocol_and_key(tmp_path):
    spec = protocol_spec("voc07", "r", base_lrr=0.01)
    command = [
        sys.executable, "-m", "goodtransfer", "downstream", "--spec", json.dumps(spec), "--checkpoint",
        str(tmp_path / "none.pt"), "--data", str(tmp_path), "--metrics", str(tmp_path / "out/metrics.json"),
        "--state-dir", str(tmp_path / "out/state"),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 2
    assert "config: downstream.voc07: Additional properties are not allowed ('base_lrr' was unexpected)" in (
        done.stderr
    )
    assert not (tmp_path / "out").exists()


def test_a_side_file_is_read_only_with_the_digest_its_metrics_recorded(tmp_path):
    from goodtransfer.resume import file_digest

    detections = tmp_path / "detections.json"
    write_json(detections, {"classes": ["cat"], "detections": []})
    metrics = tmp_path / "metrics.json"
    write_json(metrics, {"AP": 1.0, "files": {"detections.json": file_digest(detections)}})
    assert file_beside(metrics, "detections.json") == detections
    write_json(detections, {"classes": ["cat"], "detections": [{"image": "x"}]})  # another run's file
    with pytest.raises(InputError, match=r"detections.json: not the file its job wrote .*rerun the job"):
        file_beside(metrics, "detections.json")
    detections.unlink()
    with pytest.raises(InputError, match=r"detections.json: missing"):
        file_beside(metrics, "detections.json")
    write_json(metrics, {"AP": 1.0})
    with pytest.raises(InputError, match=r"lists no detections.json"):
        file_beside(metrics, "detections.json")
