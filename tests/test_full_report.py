"""The whole report through the real workflow on the tiny slice: all ten paper tables and the five data
figures (1, 2, 4, 6, 7) in one compiled PDF, every page rendered to PNG; tables of several seeds show
mean +- std, cells further from the paper's than the seeds explain are marked; figures follow their inputs.

Rows are fewer than in config.yaml (each kind of run still appears: derived ImageNet subsets, the
Places, COCO and Synthia stand-ins, the detector- and segmenter-trained backbones, kept epochs, VOC07+12,
the periodically evaluated VOC07 run), so the suite stays short."""

from __future__ import annotations

import hashlib
import json
import subprocess

import pytest

from tests.workflow import copy_workflow, snakemake, warm_jobs, write_config

TABLES = ["table1", "table2", "table3", "table4", "table5", "table6", "table7", "table8", "table9", "table10"]
FIGURES = ["figure1", "figure2", "figure4", "figure6", "figure7"]
AUGMENTATION_ROWS = [
    {"label": "Supervised", "reference_group": "supervised",
     "rows": [{"run": "supervised-f", "label": "+RandomHorizontalFlip"}]},
    {"label": "MoCo-v2", "reference_group": "unsupervised_mocov2",
     "rows": [{"run": "mocov2-f", "label": "+RandomHorizontalFlip"}]},
]  # fmt: skip
DATA_ROWS = [
    {"label": "Supervised", "reference_group": "supervised", "rows": [
        {"run": "supervised-imagenet10pct", "label": "ImageNet-10%", "reference_row": "ImageNet-10%"},
        {"run": "supervised-coco", "label": "COCO", "reference_row": "COCO"},
        {"run": "supervised-synthia", "label": "Synthia", "reference_row": "Synthia"},
    ]},
    {"label": "MoCo-v2", "reference_group": "unsupervised_mocov2", "rows": [
        {"run": "mocov2-imagenet100", "label": "ImageNet-100", "reference_row": "ImageNet-100"},
        {"run": "mocov2-places", "label": "Places", "reference_row": "Places"},
        {"run": "mocov2-coco", "label": "COCO", "reference_row": "COCO"},
        {"run": "mocov2-synthia", "label": "Synthia", "reference_row": "Synthia"},
    ]},
]  # fmt: skip
OVERRIDES = {
    "seeds": {"default": 1, "linear": 2},
    "tables": {
        "table7": {"groups": AUGMENTATION_ROWS},
        "table2": {"groups": DATA_ROWS},
        "table8": {"groups": DATA_ROWS},
        "table6": {"groups": [{"label": "Pretraining length", "rows": [
            {"run": "supervised-90ep", "label": "Supervised 1 epoch", "reference_row": "supervised 90ep"},
            {"run": "mocov2-frcgb", "label": "MoCo-v2 2 epochs", "reference_row": "MoCo-v2 200ep"},
        ]}]},
        "table10": {"groups": [{"label": "Ablations", "rows": [
            {"run": "mocov1", "label": "MoCo-v1 (512, 0.07)"},
            {"run": "mocov1-k1m", "label": "MoCo-v1 (1024, 0.07)"},
        ]}]},
    },
    "report": {"tables": TABLES, "figures": FIGURES},
}  # fmt: skip


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("report"))
    write_config(workdir / "full.yaml", OVERRIDES)
    with warm_jobs(workdir) as warm:
        targets = ("paper/build/report.pdf", "--configfile", "tiny.yaml", "full.yaml")
        done = snakemake(workdir, *targets, timeout=1800, env=warm)
    assert done.returncode == 0, done.stderr[-4000:]
    return workdir


def _pdf_text(path) -> str:
    text = subprocess.run(
        ["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True
    )
    return " ".join(text.stdout.replace("\u2019", "'").split())  # LaTeX sets ' as a right quote


def _declared_labels(built, table: str) -> list[str]:
    from goodtransfer.config import deep_merge
    from goodtransfer.io import read_yaml

    config = read_yaml(built / "config.yaml")
    for name in ("tiny.yaml", "full.yaml"):
        config = deep_merge(config, read_yaml(built / name))
    return [row["label"] for group in config["tables"][table]["groups"] for row in group["rows"]]


@pytest.mark.parametrize("table", TABLES)
def test_every_cell_has_our_mean_the_papers_number_and_its_metrics_files(built, table):
    data = json.loads((built / f"results/tables/{table}.json").read_text())
    assert [row["label"] for group in data["groups"] for row in group["rows"]] == _declared_labels(
        built, table
    )
    for group in data["groups"]:
        for row in group["rows"]:
            if row["run"] is None:  # Table 4's Baseline: the paper's numbers, quoted; nothing of ours
                assert all(cell["ours"] is None for cell in row["cells"].values())
                continue
            for key, cell in row["cells"].items():
                assert isinstance(cell["ours"], float), (table, row["label"], key)
                assert all((built / path).is_file() for path in cell["provenance"]["metrics"])
                if isinstance(cell["paper"], float) and cell["tolerance"] is not None:
                    assert cell["deviates"] == (abs(cell["ours"] - cell["paper"]) > cell["tolerance"])
                if cell["paper"] is None:  # SupCon, the control the paper lacks: nothing to judge against
                    assert cell["tolerance"] is None and cell["deviates"] is None
                elif key == "VOC07_AP" and cell["n"] == 1:  # MoCo's VOC std 0.2 over 5 runs, ours one run
                    assert cell["tolerance"] == pytest.approx(1.959964 * (0.2**2 + 0.2**2 / 5) ** 0.5)
                if key == "ImageNet_Acc" and cell["n"] == 1:  # no reported spread: one run is not judged
                    assert cell["tolerance"] is None and cell["deviates"] is None


def test_two_seeds_give_a_mean_and_a_standard_deviation(built):
    data = json.loads((built / "results/tables/table10.json").read_text())
    cell = data["groups"][0]["rows"][0]["cells"]["ImageNet_Acc"]
    assert cell["n"] == 2 and [p.split("/")[-2] for p in cell["provenance"]["metrics"]] == ["seed0", "seed1"]
    values = [json.loads((built / p).read_text())["top1"] for p in cell["provenance"]["metrics"]]
    assert cell["ours"] == pytest.approx(sum(values) / 2)
    assert cell["std"] == pytest.approx(abs(values[0] - values[1]) / 2**0.5)
    voc = json.loads((built / "results/tables/table1.json").read_text())["groups"][0]["rows"][0]["cells"]
    assert voc["VOC07_AP"]["n"] == 1 and voc["VOC07_AP"]["std"] is None


def test_report_pdf_has_every_table_and_figure_with_captions_rows_and_paper_numbering(built, tmp_path):
    pdf = built / "paper/build/report.pdf"
    subprocess.run(["pdftoppm", "-r", "40", "-png", str(pdf), str(tmp_path / "page")], check=True)
    pages = sorted(tmp_path.glob("page*.png"))
    assert len(pages) >= 8 and all(page.read_bytes().startswith(b"\x89PNG") for page in pages)
    flat = _pdf_text(pdf)
    for table in TABLES:
        data = json.loads((built / f"results/tables/{table}.json").read_text())
        number = table.removeprefix("table")
        assert f"Table {number}: {' '.join(data['caption'].split()[:6])}" in flat, table
        for label in _declared_labels(built, table):
            assert label in flat, (table, label)
    for figure in FIGURES:
        record = json.loads((built / f"results/figures/{figure}.json").read_text())
        number = figure.removeprefix("figure")
        assert f"Figure {number}: {' '.join(record['caption'].split()[:5])}" in flat, figure
    assert "our mean differs from the paper's by more than the seeds explain" in flat
    assert "±" in flat  # Table 10's two-seed readouts


def test_figure4_plots_kept_epochs_and_the_evaluation_curve_and_follows_its_inputs(built):
    record = json.loads((built / "results/figures/figure4.json").read_text())
    assert set(record["ours"]) == {"Supervised", "MoCo-v2"}
    moco = record["ours"]["MoCo-v2"]
    assert moco["pretrain_epochs"]["epochs"] == [1, 2] and moco["finetune_iters"]["iterations"] == [3, 6]
    kept = built / "results/voc07/mocov2-frcgb@ep1/seed0/metrics.json"
    metrics = json.loads(kept.read_text())
    assert metrics["checkpoint"].endswith("results/pretrain/mocov2-frcgb/epochs/epoch_0001.pt")
    metrics["AP"] = 99.0
    kept.write_text(json.dumps(metrics))
    done = snakemake(built, "figure4", "--configfile", "tiny.yaml", "full.yaml")
    assert done.returncode == 0, done.stderr[-3000:]
    after = json.loads((built / "results/figures/figure4.json").read_text())["ours"]["MoCo-v2"]
    epochs_before, epochs_after = moco["pretrain_epochs"]["AP"], after["pretrain_epochs"]["AP"]
    assert epochs_after[0] == 99.0 and epochs_after[1] == epochs_before[1]


def test_fp_figures_are_drawn_from_the_first_seeds_detections_and_follow_them(built):
    record = json.loads((built / "results/figures/figure7.json").read_text())
    assert record["runs"]["MoCo-v2"]["analysis"] == "results/fp_analysis/voc07/mocov2-frcgb.json"
    detections = built / "results/voc07/mocov2-frcgb/seed0/detections.json"
    payload = json.loads(detections.read_text())
    for det in payload["detections"]:  # every detection moved far away: all become background errors
        det["box"] = [0.0, 0.0, 1.0, 1.0]
    detections.write_text(json.dumps(payload))
    # Edited by hand, the detections no longer match their metrics' record: the analysis refuses them.
    analysis = "results/fp_analysis/voc07/mocov2-frcgb.json"
    done = snakemake(built, analysis, "-f", "--configfile", "tiny.yaml", "full.yaml")
    log = (built / "logs/fp_analysis/voc07/mocov2-frcgb.log").read_text()
    assert done.returncode != 0 and "detections.json: not the file its job wrote" in log
    # As a rerun of the fine-tune writes them: new detections and their digest in new metrics.
    metrics_path = detections.parent / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    metrics["files"]["detections.json"] = hashlib.sha256(detections.read_bytes()).hexdigest()
    metrics_path.write_text(json.dumps(metrics))
    done = snakemake(built, "figure7", "--configfile", "tiny.yaml", "full.yaml")
    assert done.returncode == 0, done.stderr[-3000:]
    after = json.loads((built / "results/figures/figure7.json").read_text())["ours"]["MoCo-v2"]
    assert after != record["ours"]["MoCo-v2"]
    assert all(shares["BG"] == 100.0 for shares in after.values())


def test_inversion_figures_record_a_perceptual_distance_per_backbone(built):
    for figure in ("figure2", "figure6"):
        record = json.loads((built / f"results/figures/{figure}.json").read_text())
        assert record["kind"] == "inversion" and len(record["images"]) == 2
        assert set(record["ours"]) == {"Supervised", "MoCo-v2"}
        assert all(value > 0 for value in record["means"]["ours"].values())
        assert all(len(values) == 2 for values in record["ours"].values())
    paper = json.loads((built / "results/figures/figure6.json").read_text())["paper"]
    assert set(paper) == {"Supervised", "MoCo-v2"} and len(paper["MoCo-v2"]) == 1000  # the paper's scatter


def test_figures_1_4_6_7_hold_the_papers_series_beside_ours_and_the_report_its_departures(built):
    for figure in ("figure1", "figure4", "figure6", "figure7"):
        record = json.loads((built / f"results/figures/{figure}.json").read_text())
        assert set(record["ours"]) == set(record["paper"]) == {"Supervised", "MoCo-v2"}, figure
        assert record["paper_values"] == f"paper/reference/figures/fig{figure[-1]}_values.json"
    flat = _pdf_text(built / "paper/build/report.pdf")
    assert "Departures from the paper" in flat and "embedded scale (embedded_scale)" in flat


def test_snakemake_report_html_lists_tables_figures_and_the_report_with_captions(built):
    done = snakemake(built, "--report", "report.html", "--configfile", "tiny.yaml", "full.yaml")
    assert done.returncode == 0, done.stderr[-3000:]
    html = (built / "report.html").read_text(encoding="utf-8")
    for text in ("Figures", "Tables", "figure7.pdf", "figure4.pdf", "table10.json", "report.pdf"):
        assert text in html, text
