"""Running a protocol through detectron2: the missing-detectron2 error, the datasets folder, the child's
command line and the metrics.json it leads to (with a stand-in trainer), and, where detectron2 is
importable, two real iterations on a generated VOC."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from goodtransfer.checkpoint import save_backbone
from goodtransfer.config import detection_spec
from goodtransfer.io import InputError, read_json
from goodtransfer.models.backbone import backbone_state_dict, build_resnet
from goodtransfer.transfer import detectron2_backend as backend
from goodtransfer.transfer.detectron2_train import build_datasets_dir, build_parser, dataset_folder

ROOT = Path(__file__).resolve().parents[1]
HAS_DETECTRON2 = importlib.util.find_spec("detectron2") is not None
VOC_LINE = {"iteration": 2, "bbox/AP": 12.5, "bbox/AP50": 30.0, "bbox/AP75": 8.25}
COCO_LINE = {**VOC_LINE, "segm/AP": 10.0, "segm/AP50": 25.0, "segm/AP75": 7.0, "segm/APs": float("nan")}


@pytest.fixture(scope="module")
def spec() -> dict:
    return detection_spec(yaml.safe_load((ROOT / "config.yaml").read_text()), "voc07", "random")


@pytest.fixture(scope="module")
def resnet18_checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "resnet18.pth"
    save_backbone(
        path, backbone_state_dict(build_resnet("resnet18")), {"method": "random", "arch": "resnet18"}
    )
    return path


def _pretend_detectron2(monkeypatch, found: object) -> None:
    real = importlib.util.find_spec

    def find_spec(name, *args):
        return found if name == "detectron2" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


@pytest.fixture
def detectron2_present(monkeypatch):
    """find_spec reports detectron2 whether or not it is installed (the child is faked anyway)."""
    _pretend_detectron2(monkeypatch, object())


def test_run_without_detectron2_names_the_detection_container(monkeypatch, spec, tmp_path):
    if HAS_DETECTRON2:
        _pretend_detectron2(monkeypatch, None)
    with pytest.raises(InputError, match=r"detectron2 is not importable.*containers/detection\.def"):
        backend.run_detectron2(
            spec, "voc07", tmp_path / "none.pth", {}, tmp_path / "m.json", tmp_path / "work"
        )
    assert not (tmp_path / "work").exists() and not (tmp_path / "m.json").exists()


@pytest.mark.parametrize(
    ("name", "folder"),
    [("voc_2007_trainval", "VOC2007"), ("voc_2007_test", "VOC2007"), ("voc_2012_trainval", "VOC2012"),
     ("coco_2017_train", "coco"), ("coco_2017_val", "coco")],
)  # fmt: skip
def test_detectron2_dataset_names_live_in_fixed_folders(name, folder):
    assert dataset_folder(name) == folder


def test_datasets_dir_links_each_folder_to_our_root(tmp_path):
    roots = {name: tmp_path / "data" / name.lower() for name in ("VOC2007", "VOC2012", "coco")}
    for root in roots.values():
        root.mkdir(parents=True)
    out = build_datasets_dir(roots, tmp_path / "datasets")
    assert sorted(p.name for p in out.iterdir()) == ["VOC2007", "VOC2012", "coco"]
    assert all((out / name).is_symlink() and (out / name).resolve() == root for name, root in roots.items())
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    build_datasets_dir({"VOC2007": moved}, out)  # a rerun follows the new root
    assert (out / "VOC2007").resolve() == moved and (out / "coco").resolve() == roots["coco"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_datasets_dir_errors(tmp_path):
    with pytest.raises(InputError, match=r"unknown folder\(s\) \['voc2007'\]"):
        build_datasets_dir({"voc2007": tmp_path}, tmp_path / "d")
    with pytest.raises(InputError, match="VOC2007 -> .* is not a directory"):
        build_datasets_dir({"VOC2007": tmp_path / "missing"}, tmp_path / "d")
    (tmp_path / "d" / "coco").mkdir(parents=True)
    with pytest.raises(InputError, match="not a symlink"):
        build_datasets_dir({"coco": tmp_path}, tmp_path / "d")


def test_train_module_imports_without_detectron2():
    blocked = "import sys; sys.modules['detectron2'] = None; "  # any detectron2 import now fails
    code = blocked + "import goodtransfer.transfer.detectron2_train, goodtransfer.transfer.detectron2_backend"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_parser_reads_the_command_run_detectron2_builds(spec, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(backend.emit_config(spec, "voc07", "w.pkl", str(tmp_path / "out")))
    opts = ["SOLVER.MAX_ITER", "2", "MODEL.RESNETS.NORM", "BN"]
    command = backend.train_command(spec, "voc07", config, tmp_path / "out", tmp_path / "ds", opts)
    assert command[:3] == [sys.executable, "-m", "goodtransfer.transfer.detectron2_train"]
    args = build_parser().parse_args(command[3:])
    assert (args.config_file, args.output, args.datasets) == (str(config), tmp_path / "out", tmp_path / "ds")
    assert (args.classes, args.resume, args.opts, args.num_gpus) == (spec["classes"], True, opts, 1)
    coco = build_parser().parse_args(backend.train_command(spec, "coco", config, tmp_path, tmp_path)[3:])
    assert coco.classes is None and coco.opts == []


def test_metrics_keep_the_torchvision_keys(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"iteration": 1, "total_loss": 2.0}) + "\n" + json.dumps(COCO_LINE) + "\n")
    assert backend.detectron2_metrics(path, "voc07") == {"AP": 12.5, "AP50": 30.0, "AP75": 8.25}
    assert backend.detectron2_metrics(path, "coco") == {
        **{"bbox_AP": 12.5, "bbox_AP50": 30.0, "bbox_AP75": 8.25},
        **{"segm_AP": 10.0, "segm_AP50": 25.0, "segm_AP75": 7.0},
    }
    path.write_text(json.dumps(VOC_LINE) + "\n")
    with pytest.raises(InputError, match="no line with segm/AP"):
        backend.detectron2_metrics(path, "coco")


def _fake_child(calls: list, returncode: int = 0):
    """Stands in for the detectron2 child: checks what it is given, writes metrics.json like detectron2."""

    def run(command, env, check):
        args = build_parser().parse_args(command[3:])
        cfg = yaml.safe_load(Path(args.config_file).read_text())
        assert Path(env["DETECTRON2_DATASETS"]) == args.datasets.resolve()
        assert (args.datasets / "VOC2007" / "ImageSets").is_dir()
        assert Path(cfg["MODEL"]["WEIGHTS"]).is_file() and cfg["MODEL"]["RESNETS"]["DEPTH"] == 18
        assert cfg["OUTPUT_DIR"] == str(args.output.resolve())
        calls.append(args)
        args.output.mkdir(parents=True, exist_ok=True)
        with open(args.output / "metrics.json", "a") as handle:
            handle.write(json.dumps(VOC_LINE) + "\n")
        return subprocess.CompletedProcess(command, returncode)

    return run


def test_run_writes_metrics_json_with_the_backend(
    detectron2_present, monkeypatch, spec, resnet18_checkpoint, tmp_path
):
    voc = tmp_path / "VOC2007"
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    calls: list = []
    monkeypatch.setattr(backend.subprocess, "run", _fake_child(calls))
    out = tmp_path / "results" / "metrics.json"
    work = tmp_path / "work"
    result = backend.run_detectron2(spec, "voc07", resnet18_checkpoint, {"VOC2007": voc}, out, work)
    written = read_json(out)
    assert written == result
    assert {key: written[key] for key in ("AP", "AP50", "AP75", "backend", "run", "iterations")} == {
        **{
            "AP": 12.5,
            "AP50": 30.0,
            "AP75": 8.25,
            "backend": "detectron2",
            "run": "random",
            "iterations": 150,
        }
    }
    assert written["checkpoint"] == str(resnet18_checkpoint)
    assert Path(written["detectron2_output"]) == calls[0].output == work / f"train-{written['config_hash']}"
    backend.run_detectron2(spec, "voc07", resnet18_checkpoint, {"VOC2007": voc}, out, work)
    assert calls[1].output == calls[0].output  # same run, same folder: detectron2 resumes there
    other = backend.run_detectron2(
        {**spec, "max_iter": 9}, "voc07", resnet18_checkpoint, {"VOC2007": voc}, out, work
    )
    assert other["config_hash"] != written["config_hash"]  # another spec never resumes this one


def test_run_errors_leave_no_metrics(detectron2_present, monkeypatch, spec, resnet18_checkpoint, tmp_path):
    voc = tmp_path / "VOC2007"
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    out, work = tmp_path / "metrics.json", tmp_path / "work"
    monkeypatch.setattr(backend.subprocess, "run", _fake_child([], returncode=1))
    with pytest.raises(RuntimeError, match=r"exited with status 1; see .*log\.txt"):
        backend.run_detectron2(spec, "voc07", resnet18_checkpoint, {"VOC2007": voc}, out, work)
    with pytest.raises(InputError, match=r"reads \['VOC2007', 'VOC2012'\]; no root given for \['VOC2012'\]"):
        backend.run_detectron2(spec, "voc0712", resnet18_checkpoint, {"VOC2007": voc}, out, work)
    resnet10 = tmp_path / "resnet10.pth"
    save_backbone(resnet10, backbone_state_dict(build_resnet("resnet10")), {"arch": "resnet10"})
    with pytest.raises(InputError, match=r"resnet10; detectron2 builds ResNet depths \[18, 34, 50, 101\]"):
        backend.run_detectron2(spec, "voc07", resnet10, {"VOC2007": voc}, out, work)
    assert not out.exists()


@pytest.mark.skipif(not HAS_DETECTRON2, reason="detectron2 is not importable (see containers/detection.def)")
def test_two_detectron2_iterations_on_a_generated_voc_then_resume(spec, resnet18_checkpoint, tmp_path):
    from goodtransfer.data.synthetic.voc import generate_voc

    voc = tmp_path / "VOC2007"
    generate_voc(voc, classes=spec["classes"], trainval_images=8, test_images=6, image_size=(96, 128),
                 max_objects=2, seed=0)  # fmt: skip
    tiny = {
        **spec,
        "max_iter": 2,
        "steps": [1],
        "warmup_iters": 1,
        "ims_per_batch": 2,
        "checkpoint_period": 1,
    }
    out = tmp_path / "metrics.json"

    def run() -> dict:
        # Random weights: plain BN (frozen statistics of an untrained net give NaN losses).
        opts = ["TEST.PRECISE_BN.NUM_ITER", "1"]
        return backend.run_detectron2(tiny, "voc07", resnet18_checkpoint, {"VOC2007": voc}, out,
                                      tmp_path / "work", norm="BN", opts=opts)  # fmt: skip

    result = run()
    assert read_json(out) == result and result["backend"] == "detectron2"
    assert all(0.0 <= result[key] <= 100.0 for key in ("AP", "AP50", "AP75"))
    output = Path(result["detectron2_output"])
    assert (output / "last_checkpoint").read_text().strip() == "model_final.pth"
    lines = [json.loads(line) for line in (output / "metrics.json").read_text().splitlines()]
    assert any("total_loss" in line for line in lines) and "bbox/AP" in lines[-1]
    assert run()["detectron2_output"] == str(output)  # resumed at model_final: evaluates, trains nothing
    assert "Starting training from iteration 2" in (output / "log.txt").read_text()
