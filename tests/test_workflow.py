"""The spine end to end through real Snakemake: generated data -> pretraining -> readout and VOC07
detection -> Table 1 -> LaTeX -> PDF, on a one-minute slice of the embedded default."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml

from tests.workflow import copy_workflow, planned_jobs, snakemake, write_config

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("workflow"))
    done = snakemake(workdir, "table1", "paper/build/report.pdf", "--configfile", "tiny.yaml")
    assert done.returncode == 0, done.stderr[-4000:]
    return workdir


def test_table1_cells_carry_our_number_the_paper_number_and_provenance(built):
    table = json.loads((built / "results/tables/table1.json").read_text())
    assert [g["label"] for g in table["groups"]] == ["Supervised", "MoCo-v2"]
    cell = table["groups"][1]["rows"][0]["cells"]["VOC07_AP"]
    assert cell["paper"] == 32.3  # MoCo-v2 flip-only VOC07 AP, paper Table 1
    metrics = json.loads((built / cell["provenance"]["metrics"][0]).read_text())
    assert cell["ours"] == metrics["AP"] and cell["n"] == 1 and cell["std"] is None
    assert cell["provenance"]["config_hash"] == metrics["config_hash"]
    assert (built / cell["provenance"]["checkpoint"]).is_file()
    accuracy = table["groups"][0]["rows"][0]["cells"]["ImageNet_Acc"]
    assert accuracy["paper"] == 70.9 and 0.0 <= accuracy["ours"] <= 100.0


def test_report_pdf_shows_the_table_with_our_numbers(built):
    pdf = built / "paper/build/report.pdf"
    assert pdf.read_bytes().startswith(b"%PDF")
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) not installed")
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True).stdout
    table = json.loads((built / "results/tables/table1.json").read_text())
    ours = table["groups"][0]["rows"][0]["cells"]["ImageNet_Acc"]["ours"]
    assert "Pretraining augmentations" in text and "+RandomHorizontalFlip" in text
    assert f"{ours:.1f}" in text and "70.9" in text


def test_second_run_has_nothing_to_do(built):
    done = snakemake(built, "table1", "paper/build/report.pdf", "-n", "--configfile", "tiny.yaml")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Nothing to be done" in done.stdout + done.stderr


def test_editing_one_runs_augmentation_reruns_only_its_downstream_jobs(built):
    config = yaml.safe_load((built / "tiny.yaml").read_text())
    config["pretrain"]["runs"]["mocov2-f"] = {"augmentations": {"flip": {"p": 0.25}}}
    write_config(built / "edited.yaml", config)
    done = snakemake(built, "table1", "paper/build/report.pdf", "-n", "--configfile", "edited.yaml")
    assert done.returncode == 0, done.stderr[-2000:]
    jobs = planned_jobs(done.stdout)
    trained = {wildcards for rule, wildcards in jobs if rule in {"pretrain", "downstream"}}
    assert trained == {
        "run=mocov2-f",
        "protocol=linear, run=mocov2-f, seed=0",
        "protocol=voc07, run=mocov2-f, seed=0",
    }
    assert {rule for rule, _ in jobs} == {
        "pretrain",
        "downstream",
        "table_json",
        "table_tex",
        "table1",
        "report_context",
        "report",
    }


def test_report_provenance_names_commit_config_hash_and_each_runs_wall_time(built):
    context = json.loads((built / "results/report/context.json").read_text())
    provenance = {item["key"]: item["value"] for item in context["provenance"]}
    assert {"git commit", "config hash", "torch", "hardware"} <= set(provenance)
    times = provenance["wall time mocov2-f"]
    assert times.startswith("pretrain ") and "linear " in times and "voc07 " in times
