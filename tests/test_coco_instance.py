"""COCO instances: the loader on the generated stand-in, its polygons, the C4 Mask R-CNN, the protocol."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util

from goodtransfer.checkpoint import load_torch, save_backbone
from goodtransfer.checkpoint_import import resnet_from_checkpoint
from goodtransfer.data import coco
from goodtransfer.data.synthetic.coco import generate as generate_coco
from goodtransfer.data.synthetic.common import Placement, Scene, background, random_placement
from goodtransfer.evaluate.coco import evaluate_coco
from goodtransfer.finite import DivergedError
from goodtransfer.io import InputError
from goodtransfer.models.backbone import backbone_state_dict, build_resnet
from goodtransfer.transfer import coco_instance
from goodtransfer.transfer.c4 import backbone_keys_loaded
from tests.workflow import run_protocol

CATEGORIES = 3
SPEC = {
    "task": "coco_instance", "dataset": "coco2017", "data_kind": "coco", "protocol": "coco",
    "train_splits": ["train2017"], "test_split": "val2017", "max_iter": 6, "ims_per_batch": 2,
    "base_lr": 0.02, "momentum": 0.9, "weight_decay": 1.0e-4, "weight_decay_norm": 0.0, "steps": [4],
    "warmup_iters": 2, "warmup_factor": 0.001, "min_size_train": [80, 96], "min_size_test": 96,
    "max_size": 160, "anchor_sizes": [16, 32, 64], "aspect_ratios": [0.5, 1.0, 2.0],
    "aspect_ratio_grouping": True, "resize_rounding": "nearest", "size_divisibility": 0,
    "rpn": {"pre_nms_topk_train": 200, "post_nms_topk_train": 50, "pre_nms_topk_test": 100,
            "post_nms_topk_test": 30, "nms_thresh": 0.7, "batch_size_per_image": 64, "positive_fraction": 0.5,
            "iou_thresholds": [0.3, 0.7], "bbox_reg_weights": [1.0, 1.0, 1.0, 1.0], "smooth_l1_beta": 0.0,
            "loss_normalizer": "batch_size_per_image"},
    "roi_heads": {"pooler_resolution": 6, "batch_size_per_image": 16, "positive_fraction": 0.25,
                  "iou_thresholds": [0.5], "bbox_reg_weights": [10.0, 10.0, 5.0, 5.0], "smooth_l1_beta": 0.0,
                  "score_thresh_test": 0.0, "nms_thresh_test": 0.5, "detections_per_image": 20},
    "mask_resolution": 6, "mask_conv_dim": 16, "precise_bn_iters": 2, "test_batch": 2,
    "checkpoint_period": 3, "log_period": 3, "workers": 0, "seed": 0, "run": "tiny", "device": "cpu",
    "precision": "fp32", "channels_last": False,
}  # fmt: skip


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco") / "coco"
    generate_coco(root, seed=0, train_images=8, val_images=4, image_size=(80, 112), max_objects=3,
                  categories=CATEGORIES)  # fmt: skip
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "random.pt"
    torch.manual_seed(0)
    meta = {"arch": "resnet10", "method": "random", "run": "t"}
    save_backbone(path, backbone_state_dict(build_resnet("resnet10")), meta)
    return path


@pytest.fixture
def one_thread():
    # The pipeline runs one thread per job; two threads on a shared 2-core machine are several times slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _json(root, split):
    return json.loads(coco.annotation_path(root, split).read_text())


def test_loader_maps_sparse_category_ids_to_contiguous_and_skips_crowd(coco_root):
    data = _json(coco_root, "train2017")
    ids = sorted(c["id"] for c in data["categories"])
    assert len(ids) == CATEGORIES and ids[-1] - ids[0] >= CATEGORIES  # COCO-style gaps
    split = coco.load_split(coco_root, "train2017", training=True)
    assert split.category_ids == tuple(ids)
    plain = [a for a in data["annotations"] if not a["iscrowd"]]
    assert any(a["iscrowd"] for a in data["annotations"])
    annotated = {a["image_id"] for a in plain}
    assert [r.image_id for r in split.records] == sorted(annotated)  # images without annotations dropped
    assert len(annotated) < len(data["images"])
    assert sum(len(r.objects) for r in split.records) == len(plain)
    by_id = {a["id"]: a for a in plain}
    for record in split.records:
        for obj in record.objects:
            assert 0 <= obj.category < CATEGORIES
            assert obj.polygons and all(p.size >= 6 for p in obj.polygons)
    first = next(a for a in by_id.values() if a["image_id"] == split.records[0].image_id)
    assert ids.index(first["category_id"]) == split.records[0].objects[0].category
    val = coco.load_split(coco_root, "val2017", training=False)
    assert len(val.records) == len(_json(coco_root, "val2017")["images"])  # evaluation keeps every image
    assert coco.check(coco_root)["train2017"]["crowd"] >= 1


def test_traced_polygons_reproduce_visible_masks_with_holes_and_occlusion():
    rng = np.random.default_rng(3)
    ious = []
    for _ in range(40):
        scene = Scene(background(rng, 72, 90))
        scene.add(rng, Placement(4, 45.0, 36.0, 26.0, 1.0, 0.0))  # a ring: the polygon must keep its hole
        for kind in rng.integers(0, 24, size=3):
            scene.add(rng, random_placement(rng, int(kind), 72, 90, (0.1, 0.3)), max_cover=0.45)
        for k in range(len(scene.rasters)):
            visible = scene.ids == k + 1
            drawn = mask_util.decode(
                mask_util.merge(mask_util.frPyObjects(coco.mask_to_polygons(visible), 72, 90))
            )
            ious.append((visible & (drawn > 0)).sum() / (visible | (drawn > 0)).sum())
    assert min(ious) > 0.99


def test_generated_annotations_agree_with_their_segmentation(coco_root):
    data = _json(coco_root, "val2017")
    images = {i["id"]: i for i in data["images"]}
    for ann in data["annotations"]:
        h, w = images[ann["image_id"]]["height"], images[ann["image_id"]]["width"]
        seg = ann["segmentation"]
        rle = (
            mask_util.frPyObjects(seg, h, w)
            if ann["iscrowd"]
            else mask_util.merge(mask_util.frPyObjects(seg, h, w))
        )
        assert mask_util.area(rle) == ann["area"]
        assert mask_util.toBbox(rle).tolist() == ann["bbox"]


def test_generator_is_byte_identical_for_a_seed(tmp_path):
    for name in ("a", "b"):
        generate_coco(tmp_path / name, seed=5, train_images=3, val_images=3, image_size=48, max_objects=2,
                      categories=2)  # fmt: skip
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files and all(
        (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files
    )


def test_missing_image_file_is_named(tmp_path):
    root = tmp_path / "coco"
    generate_coco(root, seed=1, train_images=2, val_images=2, image_size=48, max_objects=1, categories=2)
    victim = sorted((root / "val2017").iterdir())[0]
    victim.unlink()
    with pytest.raises(InputError, match=victim.name):
        coco.check(root)
    with pytest.raises(InputError, match=victim.name):
        coco.load_split(root, "val2017", training=False)
    coco.annotation_path(root, "train2017").unlink()
    with pytest.raises(InputError, match="instances_train2017.json: annotation file not found"):
        coco.load_split(root, "train2017", training=True)


@pytest.mark.parametrize(("field", "value"), [("category_id", 12345), ("image_id", 777)])
def test_annotation_with_unknown_reference_is_rejected(tmp_path, field, value):
    root = tmp_path / "coco"
    generate_coco(root, seed=1, train_images=2, val_images=2, image_size=48, max_objects=1, categories=2)
    data = _json(root, "val2017")
    data["annotations"][0][field] = value
    coco.annotation_path(root, "val2017").write_text(json.dumps(data))
    with pytest.raises(InputError, match=f"{field} {value}"):
        coco.load_split(root, "val2017", training=False)


def test_loader_traces_plain_rle_and_drops_instances_without_a_valid_polygon(tmp_path):
    root = tmp_path / "coco"
    generate_coco(root, seed=2, train_images=3, val_images=3, image_size=64, max_objects=2, categories=2)
    data = _json(root, "train2017")
    plain = [a for a in data["annotations"] if not a["iscrowd"]]
    first, second = plain[0], plain[1]
    image = next(i for i in data["images"] if i["id"] == first["image_id"])
    h, w = image["height"], image["width"]
    mask = mask_util.decode(mask_util.merge(mask_util.frPyObjects(first["segmentation"], h, w)))
    rle = mask_util.encode(np.asfortranarray(mask))
    first["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    second["segmentation"] = [[1.0, 2.0, 3.0, 4.0]]  # two points: detectron2 drops it, and the instance
    coco.annotation_path(root, "train2017").write_text(json.dumps(data))
    records = coco.load_split(root, "train2017", training=True).records
    assert sum(len(r.objects) for r in records) == len(plain) - 1
    record = next(r for r in records if r.image_id == first["image_id"])
    traced = mask_util.decode(mask_util.merge(mask_util.frPyObjects(list(record.objects[0].polygons), h, w)))
    assert np.array_equal(traced, mask)


def test_flip_mirrors_polygons_with_the_image(coco_root):
    data = coco_instance.CocoInstanceData(coco.load_split(coco_root, "train2017", training=True).records)
    image, target, _ = data[(1, False)]
    flipped, target_f, _ = data[(1, True)]
    h, w = image.shape[-2:]
    assert torch.equal(flipped, image.flip(-1))
    for polys, polys_f, box_f in zip(
        target["polygons"], target_f["polygons"], target_f["boxes"], strict=True
    ):
        mask = mask_util.decode(mask_util.merge(mask_util.frPyObjects(polys, h, w)))
        mask_f = mask_util.decode(mask_util.merge(mask_util.frPyObjects(polys_f, h, w)))
        assert np.array_equal(mask_f, mask[:, ::-1])
        x0, y0, x1, y1 = box_f.tolist()
        assert mask_util.toBbox(mask_util.encode(np.asfortranarray(mask_f))).tolist() == [
            x0,
            y0,
            x1 - x0,
            y1 - y0,
        ]


def test_mask_targets_and_pasting_follow_the_box():
    square = [np.array([2.0, 4.0, 10.0, 4.0, 10.0, 12.0, 2.0, 12.0])]
    assert coco_instance.polygons_in_box(square, (2.0, 4.0, 10.0, 12.0), 6).all()
    left = coco_instance.polygons_in_box(square, (2.0, 4.0, 18.0, 12.0), 6)  # the square fills the left half
    assert left[:, :3].all() and not left[:, 3:].any()
    pasted = coco_instance.paste_masks(torch.ones(1, 6, 6), torch.tensor([[3.0, 2.0, 9.0, 7.0]]), (10, 12))
    assert torch.equal((pasted[0] >= 0.5).nonzero().unique(dim=0).amin(0), torch.tensor([2, 3]))
    assert (pasted[0] >= 0.5).sum() == 5 * 6


def test_mask_rcnn_has_the_c4_mask_branch_and_loads_every_backbone_key(checkpoint, one_thread):
    resnet, _ = resnet_from_checkpoint(checkpoint)
    model = coco_instance.build_c4_mask_rcnn(resnet, CATEGORIES, SPEC)
    head = model.roi_heads.mask_head
    assert head.deconv.in_channels == model.roi_heads.box_head.out_channels == 512
    assert (head.deconv.kernel_size, head.deconv.stride) == ((2, 2), (2, 2))
    assert head.predictor.out_channels == CATEGORIES and head.predictor.kernel_size == (1, 1)
    source, state = resnet.state_dict(), model.state_dict()
    mapping = backbone_keys_loaded(model)
    assert set(mapping) == {k for k in source if not k.startswith("fc.")}
    assert all(torch.equal(source[k], state[v]) for k, v in mapping.items())
    model.eval()
    with torch.no_grad():
        (out,) = model([torch.rand(3, 70, 90)])
    assert out["masks"].shape == (len(out["boxes"]), 1, 70, 90) and len(out["boxes"]) > 0
    assert float(out["masks"].min()) >= 0.0 and float(out["masks"].max()) <= 1.0
    with pytest.raises(InputError, match="mask_resolution"):
        coco_instance.build_c4_mask_rcnn(resnet, CATEGORIES, {**SPEC, "mask_resolution": 14})


def test_ground_truth_as_detections_scores_100(coco_root):
    split = coco.load_split(coco_root, "val2017", training=False)
    results = []
    for record in split.records:
        masks = [
            mask_util.decode(
                mask_util.merge(mask_util.frPyObjects(list(o.polygons), record.height, record.width))
            )
            for o in record.objects
        ]
        output = {
            "boxes": torch.tensor([o.box for o in record.objects]).reshape(-1, 4),
            "labels": torch.tensor([o.category + 1 for o in record.objects], dtype=torch.int64),
            "scores": torch.ones(len(record.objects)),
            "masks": torch.tensor(np.array(masks, dtype=np.float32)).reshape(
                -1, 1, record.height, record.width
            ),
        }
        results += coco_instance._results(record.image_id, output, split.category_ids)
    for kind in ("bbox", "segm"):
        metrics = evaluate_coco(split.json_path, results, kind)
        assert metrics["AP"] == metrics["AP50"] == metrics["AP75"] == pytest.approx(100.0)


def test_run_writes_coco_metrics_and_resumes_to_the_same_result(
    coco_root, checkpoint, tmp_path, one_thread, monkeypatch
):
    out = tmp_path / "out"
    monkeypatch.setenv("GOODTRANSFER_KEEP_STATE", "1")  # as a run killed after its last checkpoint leaves it
    run_protocol(SPEC, checkpoint, coco_root, out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert all(0.0 <= metrics[k] <= 100.0 for k in coco_instance.METRICS)
    assert metrics["resumed_from"] == 0 and metrics["train_images"] < 8 and metrics["test_images"] == 4
    results = json.loads((out / "coco_instances_results.json").read_text())
    assert results and {r["category_id"] for r in results} <= {
        c["id"] for c in _json(coco_root, "val2017")["categories"]
    }
    assert (out / "state" / "last.pt").is_file()
    (out / "metrics.json").unlink()
    first = (out / "coco_instances_results.json").read_bytes()
    resumed = run_protocol(SPEC, checkpoint, coco_root, out)
    assert resumed["resumed_from"] == 3
    assert (out / "coco_instances_results.json").read_bytes() == first
    assert resumed["files"] == metrics["files"]  # the same results, by their SHA-256


def test_diverging_run_stops_at_the_first_bad_iteration_keeping_only_finite_state(
    coco_root, checkpoint, tmp_path, one_thread
):
    spec = {**SPEC, "base_lr": 1e8, "warmup_factor": 1.0, "checkpoint_period": 1}
    out = tmp_path / "out"
    with pytest.raises(
        DivergedError, match=r"run tiny: loss is \S+ at iteration \d+ .*downstream\.coco\.base_lr"
    ) as err:
        run_protocol(spec, checkpoint, coco_root, out)
    bad = int(re.search(r"at iteration (\d+)", str(err.value)).group(1))
    assert not (out / "metrics.json").exists()
    assert load_torch(out / "state" / "last.pt")["iteration"] == bad - 1  # the bad step's state is not saved
