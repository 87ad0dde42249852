"""Bad input fails fast through the real workflow, naming the file and the problem."""

from __future__ import annotations

import time

import pytest
import yaml

from tests.workflow import copy_workflow, snakemake, write_config


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("errors"))


def test_misspelled_key_fails_at_startup_naming_the_key(workdir):
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["pretrain"]["defaults"]["epoch"] = config["pretrain"]["defaults"].pop("epochs")
    write_config(workdir / "typo.yaml", config)
    started = time.time()
    done = snakemake(workdir, "-n", "--configfile", "typo.yaml")
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "'epoch' was unexpected" in output
    assert "config" in output.lower()
    assert time.time() - started < 60


def test_wrong_type_fails_naming_the_key(workdir):
    write_config(workdir / "bad_type.yaml", {"downstream": {"voc07": {"max_iter": "many"}}})
    done = snakemake(workdir, "-n", "--configfile", "bad_type.yaml")
    assert done.returncode != 0
    assert "config: downstream.voc07.max_iter: 'many' is not of type 'integer'" in done.stdout + done.stderr


def test_nested_config_override_fails_naming_the_overlay_file_and_the_overlay_plans(workdir):
    done = snakemake(workdir, "-n", "--config", "seeds={voc07: 2}")
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "config: seeds.voc07: '2' is not of type 'integer'" in output
    assert "put the change in an overlay file" in output
    write_config(workdir / "overlay.yaml", {"seeds": {"voc07": 2}})
    done = snakemake(
        workdir, "-n", "results/voc07/mocov2-frcgb/seed1/metrics.json", "--configfile", "overlay.yaml"
    )
    assert done.returncode == 0, done.stderr


def test_missing_dataset_folder_fails_naming_the_folder(workdir, tmp_path):
    missing = tmp_path / "no-such-imagenet"
    write_config(
        workdir / "missing.yaml", {"datasets": {"imagenet": {"root": str(missing), "generate": False}}}
    )
    done = snakemake(workdir, "results/datasets/imagenet.json", "--configfile", "missing.yaml")
    assert done.returncode != 0
    log = (workdir / "logs/data/check_imagenet.log").read_text()
    assert f"{missing}: dataset folder not found" in log
    assert "expected the layout" in log
    assert not (workdir / "results/datasets/imagenet.json").exists()


def test_missing_voc_annotation_fails_naming_the_file(workdir, tmp_path):
    from goodtransfer.data.synthetic.voc import generate_voc

    root = tmp_path / "VOC2007"
    # The configured classes: VOC2012 (VOC07+12) and Figure 1 must name the same ones (config check).
    classes = yaml.safe_load((workdir / "config.yaml").read_text())["datasets"]["voc2007"]["classes"]
    generate_voc(
        root, classes=classes, trainval_images=6, test_images=6, image_size=64, max_objects=1, seed=0
    )
    victim = sorted((root / "Annotations").iterdir())[0]
    victim.unlink()
    write_config(workdir / "voc.yaml", {"datasets": {"voc2007": {"root": str(root), "generate": False}}})
    done = snakemake(workdir, "results/datasets/voc2007.json", "--configfile", "voc.yaml")
    assert done.returncode != 0
    assert str(victim) in (workdir / "logs/data/check_voc2007.log").read_text()
