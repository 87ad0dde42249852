"""Names and paths reach the shell quoted: a dataset root and a VOC class name with spaces work through
the real workflow, and a name that would be shell code is refused at start-up, never run."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.workflow import copy_workflow, snakemake, write_config

pytestmark = pytest.mark.workflow

CLASSES = ["aeroplane", "potted plant"]  # VOC's "pottedplant", as a user may name it


def test_dataset_roots_and_class_names_with_spaces_work_through_the_workflow(tmp_path):
    workdir = copy_workflow(tmp_path)
    overlay = {
        "datasets": {
            "imagenet": {"root": "data/generated/image net"},
            "imagenet10pct": {"root": "data/derived/image net 10%"},
            "voc2007": {"root": "data/generated/VOC 2007", "classes": CLASSES},
            "voc2012": {"classes": CLASSES},
        },
        "figures": {"figure1": {"classes": CLASSES}},
    }
    write_config(workdir / "spaces.yaml", overlay)
    targets = (
        "results/datasets/voc2007.json",
        "results/datasets/imagenet10pct.json",  # derived from the root with a space into another
        "results/linear/mafl-scratch/seed0/metrics.json",  # a downstream job reading that root
    )
    done = snakemake(workdir, *targets, "--configfile", "tiny.yaml", "spaces.yaml", timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    assert (workdir / "data/generated/image net/train").is_dir()
    voc = json.loads((workdir / "results/datasets/voc2007.json").read_text())
    assert voc["root"] == "data/generated/VOC 2007"
    # The check read every annotation against the two configured names, so "potted plant" stayed one word.
    annotations = (workdir / "data/generated/VOC 2007/Annotations").glob("*.xml")
    assert any("<name>potted plant</name>" in path.read_text() for path in annotations)
    subset = json.loads((workdir / "results/datasets/imagenet10pct.json").read_text())
    assert subset["root"] == "data/derived/image net 10%"
    metrics = json.loads((workdir / "results/linear/mafl-scratch/seed0/metrics.json").read_text())
    assert 0.0 <= metrics["top1"] <= 100.0


@pytest.mark.parametrize("name", ["r$(touch X)", "..", "a/b"])
def test_a_run_name_that_is_not_one_plain_word_is_refused_before_any_job(tmp_path, name):
    workdir = copy_workflow(tmp_path)
    config = yaml.safe_load((workdir / "tiny.yaml").read_text())
    config["pretrain"]["runs"][name] = {"recipe": "supervised", "augment": ["flip"]}
    config["tables"]["table1"]["groups"][0]["rows"] = [{"run": name, "label": "evil"}]
    write_config(workdir / "evil.yaml", config)
    done = snakemake(workdir, "pretraining", "table1", "--configfile", "evil.yaml")
    assert done.returncode != 0
    assert f"config: pretrain.runs: name {name!r} is not allowed" in done.stderr
    assert not (workdir / "X").exists() and not (workdir / "results").exists()
