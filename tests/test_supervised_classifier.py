"""A supervised pretraining run keeps its trained classifier beside the backbone and reports the network's
own top-1 on the held-out images of its classes (the paper's supervised ImageNet accuracy may be this)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from goodtransfer.checkpoint import load_backbone, load_classifier, load_torch, save_torch
from goodtransfer.checkpoint_import import load_any_backbone
from goodtransfer.data import celeba
from goodtransfer.data.imagefolder import image_folder
from goodtransfer.data.synthetic import celeba as synthetic_celeba
from goodtransfer.data.synthetic.imagenet import generate_imagenet
from goodtransfer.data.transforms import eval_transform
from goodtransfer.io import InputError
from goodtransfer.models.backbone import build_resnet
from tests.workflow import pretrain_command, tiny_moco_spec

CLASSES, VAL_PER_CLASS = 3, 4
SUPERVISED = tiny_moco_spec(run="supervised-test", method="supervised", epochs=2, lr=0.1)


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet") / "imagenet"
    generate_imagenet(
        root, num_classes=CLASSES, train_per_class=8, val_per_class=VAL_PER_CLASS, image_size=36, seed=0
    )
    return root


def _pretrain(spec: dict, data: Path, out: Path) -> dict:
    done = subprocess.run(pretrain_command(spec, data, out), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "log.json").read_text())


@pytest.fixture(scope="module")
def supervised_run(imagenet, tmp_path_factory):
    out = tmp_path_factory.mktemp("supervised")
    return out, _pretrain(SUPERVISED, imagenet, out)


def test_supervised_run_records_its_own_classifier_top1_on_val(supervised_run, imagenet):
    out, log = supervised_run
    assert log["classifier_val_images"] == CLASSES * VAL_PER_CLASS
    # The kept classifier on the kept backbone gives the recorded top-1 again (fp32 on the CPU: exactly).
    state_dict, meta = load_backbone(out / "checkpoint.pt")
    classifier = load_classifier(out / "checkpoint.pt")
    assert sorted(classifier) == ["fc.bias", "fc.weight"] and classifier["fc.weight"].shape[0] == CLASSES
    network = build_resnet(meta["arch"], num_classes=CLASSES)
    network.load_state_dict({**state_dict, **classifier})
    val = image_folder(imagenet, "val", eval_transform(SUPERVISED["input_size"]))
    correct = 0
    with torch.no_grad():
        for images, targets in DataLoader(val, batch_size=SUPERVISED["batch_size"]):
            correct += int((network.eval()(images).argmax(dim=1) == targets).sum())
    assert log["classifier_top1"] == pytest.approx(100.0 * correct / len(val))


def test_the_kept_classifier_leaves_the_backbone_loaders_unchanged(supervised_run):
    out, _ = supervised_run
    state_dict, _ = load_backbone(out / "checkpoint.pt")
    imported, meta = load_any_backbone(out / "checkpoint.pt")
    assert not any(key.startswith("fc.") for key in (*state_dict, *imported))
    assert meta["method"] == "supervised" and set(imported) == set(state_dict)


def test_a_modified_classifier_fails_its_digest(supervised_run, tmp_path):
    out, _ = supervised_run
    obj = load_torch(out / "checkpoint.pt")
    obj["classifier"]["fc.bias"] = obj["classifier"]["fc.bias"] + 1.0
    save_torch(tmp_path / "edited.pt", obj)
    with pytest.raises(InputError, match=r"classifier does not match meta.classifier_sha256"):
        load_classifier(tmp_path / "edited.pt")


def test_a_contrastive_run_keeps_no_classifier(imagenet, tmp_path):
    log = _pretrain(tiny_moco_spec(run="moco-test", epochs=1), imagenet, tmp_path)
    assert load_classifier(tmp_path / "checkpoint.pt") is None and "classifier_top1" not in log


def test_celeba_identity_run_reads_its_partitions_and_has_no_held_out_identities(tmp_path):
    root = tmp_path / "celeba"
    synthetic_celeba.generate(root, seed=0, identities=8, images_per_identity=5, mafl_train=16, mafl_test=6,
                              image_size=(64, 64))  # fmt: skip
    partition, test = celeba.eval_partition(root), set(celeba.mafl_split(root, "test"))
    train = [name for name, code in partition.items() if code == 0 and name not in test]
    spec = dict(SUPERVISED, dataset="celeba", data_kind="celeba", partitions=["train"], epochs=1)
    log = _pretrain(spec, root, tmp_path / "run")
    assert log["images"] == len(train) < len(partition) - len(test)
    # one class per identity of the train partition (CelebA's partitions share no identities), so no
    # held-out faces of the trained identities and no top-1
    identities = {celeba.identities(root)[name] for name in train}
    assert load_classifier(tmp_path / "run/checkpoint.pt")["fc.weight"].shape[0] == len(identities)
    assert log["classifier_top1"] is None and len(identities) < len(set(celeba.identities(root).values()))
