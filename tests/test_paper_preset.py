"""The paper preset: its plan through real Snakemake (dry run) and the paper's settings."""

from __future__ import annotations

from collections import Counter

import pytest
import yaml

from goodtransfer import config as gtc
from tests.workflow import ROOT, copy_workflow, planned_jobs, snakemake


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    # LPIPS's weights come from rule fetch_lpips_weights (paper/reference/lpips_weights.yaml).
    return copy_workflow(tmp_path_factory.mktemp("paper"))


def test_paper_preset_plans_every_job_of_the_report(workdir):
    done = snakemake(workdir, "paper/build/report.pdf", "-n", "--configfile", "presets/paper.yaml")
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = planned_jobs(done.stdout)
    rules = Counter(rule for rule, _ in jobs)
    # 32 ImageNet-scale pretrainings + 2 released detector/segmenter backbones (Table 2) = the paper's 34,
    # + SupCon (Tables 3 and 9, not in the paper); 3 Mini-ImageNet and 4 CelebA runs (Scratch included);
    # one linear readout per ImageNet-scale model.
    protocols = Counter(
        wildcards.split(",")[0].removeprefix("protocol=") for rule, wildcards in jobs if rule == "downstream"
    )
    # pretrain_seeds: MoCo-v2 and Exemplar-v2 twice more each (4 replicas, read out linearly too); SupCon
    # (Tables 3 and 9's control, not in the paper) once.
    # Figure 2's InstDisc and SimCLR: OpenMMLab's released backbones, fetched and imported (no readout).
    assert (rules["pretrain"], rules["fetch_released_checkpoint"], protocols["linear"]) == (
        42 + 4 + 2,
        4,
        35 + 4,
    )
    fetched = {wildcards for rule, wildcards in jobs if rule == "fetch_released_checkpoint"}
    assert {"name=npid_resnet50_8xb32-steplr-200e_in1k_20220825-a67c5440",
            "name=simclr_resnet50_16xb256-coslr-200e_in1k_20220825-4d9cce50"} < fetched  # fmt: skip
    assert rules["fetch_lpips_weights"] == 2  # LPIPS's SqueezeNet and its linear layers (Figures 2 and 6)
    # VOC07: 29 models (Tables 1, 2, 3, 6) and the 4 replicas x 5 seeds + 38 Figure 4 epochs; VOC07+12: 5 x 5
    # seeds. COCO and Cityscapes: 26 models once, the 2 claim-bearing models of Table 3 and their 4
    # replicas 3 times (seeds.claims).
    assert protocols == {
        "linear": 39, "voc07": (29 + 4) * 5 + 38, "voc07_curve": 2, "voc0712": 5 * 5,
        "coco": 24 + 6 * 3, "cityscapes": 24 + 6 * 3, "fewshot": 3, "mafl": 4,
    }  # fmt: skip
    # 374 + claims 61, LPIPS fetches 2, SupCon 9, Figure 2's two imported backbones and their fetches 4
    assert rules["claims"] == 1 and len(jobs) == 450
    assert rules["table_json"] == 10 and all(rules[f"figure{n}"] == 1 for n in (1, 2, 4, 6, 7))
    assert not any(rule.startswith("generate_") for rule, _ in jobs)  # real datasets are checked, not made


def _paper_config() -> dict:
    base = yaml.safe_load((ROOT / "config.yaml").read_text())
    return gtc.deep_merge(base, yaml.safe_load((ROOT / "presets/paper.yaml").read_text()))


def test_paper_preset_keeps_the_papers_settings():
    # The preset states only what differs from config.yaml: check what the jobs get after the merge.
    paper = _paper_config()
    moco = gtc.pretrain_spec(paper, "mocov2-frcgb")
    assert (moco["lr"], moco["moco"]["K"], moco["moco"]["m"], moco["moco"]["T"]) == (0.03, 65536, 0.999, 0.2)
    assert (moco["epochs"], moco["batch_size"]) == (200, 256)
    voc = gtc.downstream_spec(paper, "voc07", "run")
    assert (voc["max_iter"], voc["ims_per_batch"], voc["base_lr"], voc["steps"]) == (
        9000,
        16,
        0.02,
        [6000, 8000],
    )
    assert voc["roi_heads"]["pooler_resolution"] == 14 and voc["roi_heads"]["batch_size_per_image"] == 512


def test_paper_preset_lists_every_pretraining_run_of_tables_1_2_3_6_10(workdir):
    done = snakemake(workdir, "pretraining", "-n", "--configfile", "presets/paper.yaml")
    assert done.returncode == 0, done.stderr[-3000:]
    runs = {
        wildcards.removeprefix("run=") for rule, wildcards in planned_jobs(done.stdout) if rule == "pretrain"
    }
    table1 = {
        f"{family}-{level}"
        for family in ("supervised", "mocov2")
        for level in ("f", "fr", "frc", "frcg", "frcgb")
    }
    table2 = {
        f"{family}-{data}"
        for family in ("supervised", "mocov2")
        for data in ("imagenet10pct", "imagenet100", "places", "celeba", "coco", "synthia")
    }
    table3 = {"mocov1", "exemplarv1", "exemplarv2"}
    table6 = {"supervised-90ep", "supervised-400ep", "supervised-800ep"}
    table10 = {
        "mocov1-k1m",
        "exemplarv1-t0.1",
        "mocov2-k1m-t0.1",
        "mocov2-k1m-t0.2",
        "exemplarv2-t0.07",
        "exemplarv2-t0.2",
    }
    table4 = {"fewshot-supervised", "fewshot-mocov2", "fewshot-exemplarv2"}
    table5 = {"mafl-scratch", "mafl-supervised", "mafl-mocov2", "mafl-exemplarv2"}
    replicas = {
        f"{run}+s{index}" for run in ("mocov2-frcgb", "exemplarv2") for index in (1, 2)
    }  # pretrain_seeds
    figure2 = {"instdisc-mmselfsup", "simclr-mmselfsup"}  # imported, not trained
    assert (
        table1 | table2 | table3 | table4 | table5 | table6 | table10 | {"supcon"} | replicas | figure2
        == runs
    )
    assert len(runs) == 42 + 4 + 2
    labels = [entry["label"] for entry in _paper_config()["figures"]["figure2"]["runs"]]
    assert labels == ["Supervised", "InstDisc", "SimCLR", "MoCo-v2"]  # the paper's Figure 2 columns


def test_exemplar_and_table10_settings_follow_the_paper():
    merged = _paper_config()
    v1, v2 = gtc.pretrain_spec(merged, "exemplarv1"), gtc.pretrain_spec(merged, "exemplarv2")
    assert (v1["method"], v1["moco"]["K"], v1["moco"]["T"], v1["moco"]["mlp"]) == (
        "exemplar",
        2**20,
        0.07,
        False,
    )
    assert (v2["method"], v2["moco"]["K"], v2["moco"]["T"], v2["moco"]["mlp"]) == (
        "exemplar",
        2**20,
        0.1,
        True,
    )
    assert gtc.pretrain_spec(merged, "mocov1")["milestones"] == [120, 160]
    assert gtc.pretrain_spec(merged, "exemplarv2-t0.2")["moco"]["T"] == 0.2
    assert gtc.pretrain_spec(merged, "mocov2-k1m-t0.1")["moco"]["K"] == 2**20
    assert gtc.pretrain_spec(merged, "supervised-800ep")["epochs"] == 800


def test_voc0712_protocol_adds_voc2012_trainval_with_the_24k_schedule():
    voc = gtc.downstream_spec(_paper_config(), "voc0712", "run")
    assert voc["extra_train"] == [{"dataset": "voc2012", "split": "trainval"}]
    assert (voc["max_iter"], voc["steps"], voc["test_split"]) == (24000, [18000, 22000], "test")


def test_paper_preset_plans_each_downstream_task_with_the_papers_settings(workdir):
    targets = [
        "results/coco/mocov2-frcgb/seed0/metrics.json",
        "results/cityscapes/mocov2-frcgb/seed0/metrics.json",
        "results/fewshot/fewshot-exemplarv2/seed0/metrics.json",
        "results/mafl/mafl-mocov2/seed0/metrics.json",
    ]
    done = snakemake(workdir, *targets, "-n", "-p", "--configfile", "presets/paper.yaml")
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = planned_jobs(done.stdout)
    transfers = sorted(w for rule, w in jobs if rule == "downstream")
    assert transfers == sorted(
        f"protocol={t.split('/')[1]}, run={t.split('/')[2]}, seed=0" for t in targets
    ), transfers
    assert {w for rule, w in jobs if rule == "check_dataset"} >= {
        f"dataset={name}" for name in ("coco2017", "cityscapes", "miniimagenet", "celeba")
    }
    for setting in ('"max_iter": 90000', '"max_iter": 40000', '"episodes": 600', '"epochs": 200'):
        assert setting in done.stdout, setting
    pretrain_lines = [
        line for line in done.stdout.splitlines() if "goodtransfer" in line and " pretrain " in line
    ]
    fewshot = next(line for line in pretrain_lines if "fewshot-exemplarv2" in line)
    assert '"arch": "resnet18"' in fewshot and '"data_kind": "miniimagenet"' in fewshot
    assert '"epochs": 2000' in fewshot and '"K": 27648' in fewshot


def test_paper_only_tables_6_and_10_plan_their_runs_and_protocols(workdir):
    done = snakemake(workdir, "table6", "table10", "-n", "--configfile", "presets/paper.yaml")
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = planned_jobs(done.stdout)
    voc0712 = {w for rule, w in jobs if rule == "downstream" and "voc0712" in w}
    assert len(voc0712) == 5 * 5  # five models, five seeds each
    readouts = {
        w.removeprefix("protocol=linear, run=").removesuffix(", seed=0")
        for rule, w in jobs
        if rule == "downstream" and w.startswith("protocol=linear,")
    }
    assert {"supervised-800ep", "mocov1-k1m", "exemplarv2-t0.2"} <= readouts
    assert len(readouts) == 14  # 5 + 10 rows, MoCo-v2 in both


def test_released_preset_regenerates_tables_1_to_3_from_the_authors_checkpoints(workdir):
    done = snakemake(
        workdir,
        "paper/build/report.pdf",
        "-n",
        "-p",
        "--configfile",
        "presets/paper.yaml",
        "presets/released.yaml",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = planned_jobs(done.stdout)
    rules = Counter(rule for rule, _ in jobs)
    # Every model of Tables 1-3 is imported (10 + 12 + 3, the two ImageNet models shared), and Figure 2's
    # InstDisc and SimCLR: nothing trains.
    assert rules["pretrain"] == rules["fetch_released_checkpoint"] == 25 + 2
    commands = [line for line in done.stdout.splitlines() if " pretrain --spec " in line]
    assert len(commands) == 27 and all('"import_from": "checkpoints/released/' in line for line in commands)
    protocols = Counter(w.split(",")[0].removeprefix("protocol=") for r, w in jobs if r == "downstream")
    # the calibration table adds FAIR MoCo-v1's VOC07+12 runs (5 seeds) to Tables 1-3's jobs
    # and the claim-bearing Table 3 models (MoCo-v2, Exemplar-v2) run COCO and Cityscapes 3 times
    assert protocols == {"linear": 25, "voc07": 25 * 5, "voc0712": 5, "coco": 25 + 4, "cityscapes": 25 + 4}
    assert rules["claims"] == 1
    assert rules["table_json"] == 7 and "figure4" not in rules
    assert "https://dl.fbaipublicfiles.com/moco/moco_checkpoints/moco_v1_200ep/" in done.stdout


def test_paper_voc_and_coco_protocols_use_precise_bn_and_no_norm_weight_decay():
    load = lambda name: yaml.safe_load((ROOT / name).read_text())  # noqa: E731
    merged = gtc.deep_merge(load("config.yaml"), load("presets/paper.yaml"))
    specs = [gtc.downstream_spec(merged, name, "r") for name in ("voc07", "voc0712", "voc07_curve")]
    specs.append(gtc.downstream_spec(merged, "coco", "r"))
    for spec in specs:
        assert spec["weight_decay_norm"] == 0.0 and spec["precise_bn_iters"] == 200, spec.get("protocol")


# detectron2 0.6's defaults under MoCo's Base-RCNN-C4-BN.yaml (MODEL.RPN.*, MODEL.ROI_HEADS.*,
# MODEL.ROI_BOX_HEAD.*, TEST.DETECTIONS_PER_IMAGE), as the spec keys that carry them.
D2_RPN = {
    "pre_nms_topk_train": 12000, "post_nms_topk_train": 2000, "pre_nms_topk_test": 6000,
    "post_nms_topk_test": 1000, "nms_thresh": 0.7, "batch_size_per_image": 256, "positive_fraction": 0.5,
    "iou_thresholds": [0.3, 0.7], "bbox_reg_weights": [1.0, 1.0, 1.0, 1.0], "smooth_l1_beta": 0.0,
    "loss_normalizer": "batch_size_per_image",  # loss_rpn_cls, loss_rpn_loc / (BATCH_SIZE_PER_IMAGE x N)
}  # fmt: skip
D2_ROI_HEADS = {
    "pooler_resolution": 14, "batch_size_per_image": 512, "positive_fraction": 0.25, "iou_thresholds": [0.5],
    "bbox_reg_weights": [10.0, 10.0, 5.0, 5.0], "smooth_l1_beta": 0.0, "score_thresh_test": 0.05,
    "nms_thresh_test": 0.5, "detections_per_image": 100,
}  # fmt: skip


def test_paper_voc_and_coco_protocols_carry_detectron2s_c4_recipe():
    merged = _paper_config()
    for name in ("voc07", "voc0712", "voc07_curve", "coco"):
        spec = gtc.downstream_spec(merged, name, "r")
        assert spec["aspect_ratio_grouping"] is True, name  # DATALOADER.ASPECT_RATIO_GROUPING
        assert spec["rpn"] == D2_RPN, name
        assert spec["roi_heads"] == D2_ROI_HEADS, name
