"""`snakemake claims` through the real workflow on the tiny slice: one claim (Table 3, Exemplar-v2 against
MoCo-v2 by ImageNet linear readout) asks for two seeds, the runs are pretrained and read out for real, and
results/claims.json follows an edit of one seed's metrics file; a null metric stops the job."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.workflow import copy_workflow, snakemake, warm_jobs, write_config

CLAIM = "table3-exemplarv2-imagenet"
FIGURE_CLAIMS = ["figure7-supervised-more-localisation-errors", "figure6-moco-reconstructs-closer"]
OVERRIDES = {
    "claims": {CLAIM: {"seeds": 2}},
    # The report: the claims and one small table (Table 3's readout of the two compared runs).
    "tables": {"table3": {
        "columns": [{"key": "ImageNet_Acc", "label": "Acc", "group": "ImageNet", "protocol": "linear",
                     "metric": "top1"}],
        "groups": [{"label": "Instance discrimination", "rows": [
            {"run": "mocov2-frcgb", "label": "MoCo-v2", "reference_row": "MoCo-v2"},
            {"run": "exemplarv2", "label": "Exemplar-v2", "reference_row": "Exemplar-v2"}]}],
    }},
    "report": {"tables": ["table3"], "figures": [], "claims": [CLAIM, *FIGURE_CLAIMS]},
}  # fmt: skip


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("claims"))
    write_config(workdir / "claims.yaml", OVERRIDES)
    with warm_jobs(workdir) as warm:
        done = snakemake(
            workdir, "paper/build/report.pdf", "--configfile", "tiny.yaml", "claims.yaml", env=warm
        )
    assert done.returncode == 0, done.stderr[-4000:]
    return workdir


def _records(workdir) -> dict[str, dict]:
    claims = json.loads((workdir / "results/claims.json").read_text())["claims"]
    return {record["id"]: record for record in claims}


def _claim(workdir) -> dict:
    return _records(workdir)[CLAIM]


def test_figure_claims_pair_classes_and_images_of_the_real_analyses(workdir):
    records = _records(workdir)
    shares = records["figure7-supervised-more-localisation-errors"]
    assert shares["unit"] == "classes" and set(shares["units"]) <= {"aeroplane", "bicycle"}
    assert shares["provenance"] == [
        "results/fp_analysis/voc07/mocov2-frcgb.json", "results/fp_analysis/voc07/supervised-frcgb.json"
    ]  # fmt: skip
    analyses = {
        run: json.loads((workdir / f"results/fp_analysis/voc07/{run}.json").read_text())["classes"]
        for run in ("mocov2-frcgb", "supervised-frcgb")
    }
    for name, difference in shares["units"].items():
        loc = {run: 100 * classes[name]["fractions"]["Loc"] for run, classes in analyses.items()}
        assert difference == pytest.approx(loc["supervised-frcgb"] - loc["mocov2-frcgb"])
    distance = records["figure6-moco-reconstructs-closer"]
    inversion = json.loads((workdir / "results/inversion/figure6/metrics.json").read_text())
    assert distance["ours"]["n"] == 2 and distance["provenance"] == ["results/inversion/figure6/metrics.json"]
    assert distance["ours"]["mean"] == pytest.approx(
        inversion["MoCo-v2"]["lpips_mean"] - inversion["Supervised"]["lpips_mean"]
    )
    assert distance["paper_effect"] == pytest.approx(5.59 - 6.43)


def test_report_has_the_claims_section(workdir):
    text = subprocess.run(
        ["pdftotext", "-layout", str(workdir / "paper/build/report.pdf"), "-"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    flat = " ".join(text.split())
    assert "1 Claims" in flat and all(name in flat for name in (CLAIM, *FIGURE_CLAIMS))
    assert "inconclusive at this n" in flat and "one-sided paired t test over seeds" in flat
    claims = json.loads((workdir / "results/claims.json").read_text())["claims"]
    same = sum(claim["same_sign_as_paper"] is True for claim in claims)
    signed = sum(claim["same_sign_as_paper"] is not None for claim in claims)
    assert f"Same sign as the paper: {same} of {signed} claims" in flat


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
