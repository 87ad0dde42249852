"""Dataset kinds: generated stand-ins pass the in-place check, a missing annotation fails naming it;
COCO and Cityscapes train images are one-class pretraining sets that label-using methods refuse;
ImageNet subsets are derived by rule; real datasets inside the repository are checked and tracked by DVC."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from goodtransfer.data import coco
from goodtransfer.data.registry import check, generate, pretraining_images
from goodtransfer.data.subsets import derive_subset, read_class_list
from goodtransfer.io import InputError
from goodtransfer.pretrain import build_method
from goodtransfer.pretrain.moco import MoCo
from tests.workflow import ROOT, copy_workflow, planned_jobs, snakemake, write_config

STAND_INS = {
    "imagefolder": {"num_classes": 3, "train_per_class": 4, "val_per_class": 2, "image_size": 32},
    "voc": {"classes": ["aeroplane", "bicycle"], "trainval_images": 4, "test_images": 3, "image_size": 64,
            "max_objects": 2},
    "coco": {"train_images": 4, "val_images": 3, "image_size": 64, "max_objects": 2, "categories": 2},
    "cityscapes": {"train_images": 3, "val_images": 2, "image_size": [32, 64], "cities": 1, "max_objects": 2},
}  # fmt: skip


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("stand-ins")
    roots = {}
    for kind, options in STAND_INS.items():
        roots[kind] = base / kind
        generate(kind, roots[kind], 0, options)
    return roots


@pytest.mark.parametrize("kind", sorted(STAND_INS))
def test_checker_accepts_a_generated_stand_in_in_its_real_layout(stand_ins, kind):
    summary = check(kind, stand_ins[kind], STAND_INS[kind].get("classes"))
    assert summary["kind"] == kind and summary["root"] == str(stand_ins[kind])


def _first(root: Path, pattern: str) -> Path:
    return sorted(root.glob(pattern))[0]


@pytest.mark.parametrize(
    ("kind", "pattern"),
    [
        ("voc", "Annotations/*.xml"),
        ("coco", "annotations/instances_val2017.json"),
        ("cityscapes", "gtFine/val/*/*_gtFine_labelIds.png"),
        ("imagefolder", "val"),
    ],
)
def test_checker_rejects_a_missing_annotation_file_naming_it(stand_ins, tmp_path, kind, pattern):
    broken = tmp_path / kind
    subprocess.run(["cp", "-r", str(stand_ins[kind]), str(broken)], check=True)
    missing = _first(broken, pattern)
    subprocess.run(["rm", "-r", str(missing)], check=True)
    with pytest.raises(InputError) as error:
        check(kind, broken, STAND_INS[kind].get("classes"))
    assert str(missing.relative_to(broken)) in str(error.value)


def test_coco_pretraining_images_are_every_image_listed_for_train2017_labelled_zero(stand_ins):
    root = stand_ins["coco"]
    listed = json.loads((root / "annotations/instances_train2017.json").read_text())["images"]
    images = pretraining_images("coco", root, None)
    by_id = sorted(listed, key=lambda image: image["id"])
    assert images.paths == [root / "train2017" / image["file_name"] for image in by_id]
    assert images.targets == [0] * len(listed) and len(images.classes) == 1
    # Detection training drops images without objects; pretraining on images keeps them.
    assert len(coco.load_split(root, "train2017", training=True).records) < len(images)
    image, label = images[0]
    assert image.mode == "RGB" and label == 0


def test_cityscapes_pretraining_images_are_the_leftimg8bit_train_images_labelled_zero(stand_ins):
    root = stand_ins["cityscapes"]
    images = pretraining_images("cityscapes", root, None)
    assert images.paths == sorted((root / "leftImg8bit/train").glob("*/*_leftImg8bit.png"))
    assert len(images) == STAND_INS["cityscapes"]["train_images"]
    assert images.targets == [0] * len(images) and len(images.classes) == 1


@pytest.mark.parametrize("kind", ["coco", "cityscapes"])
@pytest.mark.parametrize("method", ["supervised", "exemplar", "supcon"])
def test_label_using_method_on_a_one_class_dataset_fails_naming_run_kind_and_method_task(
    stand_ins, kind, method
):
    spec = {"method": method, "run": f"{method}-{kind}", "dataset": kind, "data_kind": kind}
    num_classes = len(pretraining_images(kind, stand_ins[kind], None).classes)
    with pytest.raises(InputError) as error:
        build_method(spec, num_classes)
    message = str(error.value)
    assert f"pretrain.runs.{method}-{kind}: method {method!r}" in message
    assert f"(kind {kind!r}) has a single class" in message and "use method 'task'" in message


def test_moco_pretrains_on_a_one_class_dataset(stand_ins):
    moco = {"dim": 8, "K": 16, "m": 0.99, "T": 0.2, "mlp": False, "shuffle_bn_splits": 1}
    spec = {"method": "moco", "run": "moco-coco", "data_kind": "coco", "arch": "resnet10", "moco": moco}
    num_classes = len(pretraining_images("coco", stand_ins["coco"], None).classes)
    assert isinstance(build_method(spec, num_classes), MoCo)


def test_cityscapes_variant_draws_other_scenes_under_the_same_seed(stand_ins, tmp_path):
    """The Synthia stand-in is a second cityscapes-kind set generated with the same global seed."""
    options = STAND_INS["cityscapes"]
    generate("cityscapes", tmp_path / "same", 0, {**options, "variant": 0})
    generate("cityscapes", tmp_path / "other", 0, {**options, "variant": 1})
    original = pretraining_images("cityscapes", stand_ins["cityscapes"], None).paths
    for path in original:
        relative = path.relative_to(stand_ins["cityscapes"])
        assert (tmp_path / "same" / relative).read_bytes() == path.read_bytes()
        redrawn = tmp_path / "other" / relative
        pixels, other = (np.asarray(Image.open(p), dtype=float) for p in (path, redrawn))
        assert np.abs(pixels - other).mean() > 10  # mean absolute difference of 0..255 pixel values


def test_imagenet_subsets_keep_listed_classes_or_a_fraction_of_every_class(stand_ins, tmp_path):
    source = stand_ins["imagefolder"]
    classes = sorted(p.name for p in (source / "train").iterdir())
    listed = tmp_path / "classes.txt"
    listed.write_text(f"# two of three\n{classes[2]}\n{classes[0]}  # a comment\n")
    hundred = derive_subset(source, tmp_path / "in100", classes=read_class_list(listed))
    assert sorted(p.name for p in (tmp_path / "in100/train").iterdir()) == [classes[0], classes[2]]
    assert hundred["train_images"] == 8 and hundred["val_images"] == 4
    tenth = derive_subset(source, tmp_path / "in10", fraction=0.5, seed=3)
    assert tenth["classes"] == 3 and tenth["train_images"] == 6 and tenth["val_images"] == 6
    link = _first(tmp_path / "in10", "train/*/*")
    assert link.is_symlink() and link.resolve().parent.parent.parent == source.resolve()
    again = derive_subset(source, tmp_path / "in10b", fraction=0.5, seed=3)
    picked = sorted(p.name for p in (tmp_path / "in10/train").rglob("*.JPEG"))
    assert picked == sorted(p.name for p in (tmp_path / "in10b/train").rglob("*.JPEG")) and again == {
        **tenth,
    }
    with pytest.raises(InputError, match="not found"):
        derive_subset(source, tmp_path / "bad", classes=["n99999999"])


def test_paper_preset_derives_imagenet100_from_imagenet_with_cmcs_class_list(tmp_path):
    assert len(read_class_list(ROOT / "paper/reference/imagenet100_classes.txt")) == 100
    workdir = copy_workflow(tmp_path)
    target = "results/pretrain/mocov2-imagenet100/checkpoint.pt"
    plan = snakemake(workdir, target, "-n", "-p", "--configfile", "presets/paper.yaml")
    assert plan.returncode == 0, plan.stderr[-3000:]
    rules = [rule for rule, _ in planned_jobs(plan.stdout)]
    assert rules.index("derive_imagenet100") < rules.index("pretrain")
    assert "--classes-file paper/reference/imagenet100_classes.txt" in plan.stdout


def test_track_datasets_checks_a_real_dataset_and_adds_it_to_dvc(tmp_path):
    workdir = copy_workflow(tmp_path / "lab")
    subprocess.run(["git", "init", "-q"], cwd=workdir, check=True)
    generate("voc", workdir / "data/voc2007", 0, STAND_INS["voc"])
    real = {
        "datasets": {
            "voc2007": {"root": "data/voc2007", "generate": False, "classes": ["aeroplane", "bicycle"]}
        }
    }
    write_config(workdir / "real.yaml", real)  # on tiny.yaml, whose VOC sets and Figure 1 name these classes
    done = snakemake(workdir, "track_datasets", "--configfile", "tiny.yaml", "real.yaml")
    assert done.returncode == 0, done.stderr[-3000:]
    pointer = yaml.safe_load((workdir / "data/voc2007.dvc").read_text())["outs"][0]["path"]
    assert pointer == "voc2007"
    missing = _first(workdir / "data/voc2007", "Annotations/*.xml")
    missing.unlink()
    failed = snakemake(workdir, "track_datasets", "--configfile", "tiny.yaml", "real.yaml")
    assert failed.returncode != 0
    assert missing.name in (workdir / "logs/data/track_datasets.log").read_text()
