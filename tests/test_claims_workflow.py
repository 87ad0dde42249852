"""`snakemake claims` through the real workflow on the tiny slice: one claim (Table 3, Exemplar-v2 against
MoCo-v2 by ImageNet linear readout) asks for two seeds, the runs are pretrained and read out for real, and
results/claims.json follows an edit of one seed's metrics file; a null metric stops the job."""

from __future__ import annotations

import json
import os

import pytest

from tests.workflow import copy_workflow, snakemake, write_config

CLAIM = "table3-exemplarv2-imagenet"
OVERRIDES = {
    "claims": {CLAIM: {"seeds": 2}},
    "report": {"claims": [CLAIM]},
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("claims"))
    write_config(workdir / "claims.yaml", OVERRIDES)
    done = snakemake(workdir, "claims", "--configfile", "tiny.yaml", "claims.yaml")
    assert done.returncode == 0, done.stderr[-4000:]
    return workdir


def _claim(workdir) -> dict:
    (record,) = json.loads((workdir / "results/claims.json").read_text())["claims"]
    return record


def test_claim_pairs_two_seeds_of_real_runs_and_lists_their_files(workdir):
    record = _claim(workdir)
    assert record["id"] == CLAIM and record["ours"]["n"] == 2 and set(record["units"]) == {"0", "1"}
    assert record["paper_effect"] == pytest.approx(68.9 - 67.5)
    assert sorted(record["provenance"]) == [
        f"results/linear/{run}/seed{seed}/metrics.json"
        for run in ("exemplarv2", "mocov2-frcgb")
        for seed in (0, 1)
    ]
    top1 = {path: json.loads((workdir / path).read_text())["top1"] for path in record["provenance"]}
    for seed in ("0", "1"):
        expected = top1[f"results/linear/exemplarv2/seed{seed}/metrics.json"]
        expected -= top1[f"results/linear/mocov2-frcgb/seed{seed}/metrics.json"]
        assert record["units"][seed] == pytest.approx(expected)
    assert record["ours"]["low"] is not None and record["verdict"] in (
        "reproduced", "not reproduced", "inconclusive at this n"
    )  # fmt: skip


def test_editing_one_seeds_metrics_changes_the_interval_and_reruns_only_the_claims(workdir):
    before = _claim(workdir)
    path = workdir / "results/linear/exemplarv2/seed1/metrics.json"
    metrics = json.loads(path.read_text())
    metrics["top1"] += 40.0
    path.write_text(json.dumps(metrics))
    os.utime(path)  # newer than results/claims.json
    done = snakemake(workdir, "claims", "--configfile", "tiny.yaml", "claims.yaml")
    assert done.returncode == 0, done.stderr[-4000:]
    assert "rule downstream" not in done.stdout + done.stderr  # only the claim is recomputed
    after = _claim(workdir)
    assert after["units"]["1"] == pytest.approx(before["units"]["1"] + 40.0)
    assert after["ours"]["mean"] == pytest.approx(before["ours"]["mean"] + 20.0)
    assert (after["ours"]["low"], after["ours"]["high"]) != (before["ours"]["low"], before["ours"]["high"])


def test_a_null_metric_stops_the_claims_job_naming_the_file(workdir):
    path = workdir / "results/linear/mocov2-frcgb/seed0/metrics.json"
    metrics = json.loads(path.read_text())
    metrics["top1"] = None
    path.write_text(json.dumps(metrics))
    done = snakemake(workdir, "claims", "--configfile", "tiny.yaml", "claims.yaml")
    assert done.returncode != 0
    log = (workdir / "logs/report/claims.log").read_text()
    assert "results/linear/mocov2-frcgb/seed0/metrics.json: field 'top1' is null" in log
