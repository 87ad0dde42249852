"""Record detectron2 0.6's R50-C4 (MoCo's VOC config) on the parity case that tests/test_detectron2_parity.py
replays on our detector, from the same seeded weights and the same pixels.

    PYTHONPATH=src:/tmp/d2lib:/tmp/pb1-detectron2-0.6 python -m tests.parity.make_detectron2_case

detectron2 is only needed here; without it this exits with a message and writes nothing. It runs on the
CPU from its 0.6 sources (the PyPI sdist, unpacked, not built: its setup.py wants C++ sources the sdist
lacks), with its pure-Python dependencies, beside this project's torch (shims: ``import_detectron2``):

    cd /tmp && pip download pb1-detectron2==0.6 --no-deps && tar xzf pb1-detectron2-0.6.tar.gz
    pip install --target /tmp/d2lib --no-deps 'fvcore>=0.1.5,<0.1.6' 'iopath>=0.1.7,<0.1.10' yacs \
        termcolor cloudpickle portalocker

The detector is MoCo's ``pascal_voc_R_50_C4_24k_moco.yaml`` over its ``Base-RCNN-C4-BN.yaml`` (set key by
key below), with BN instead of SyncBN (one CPU process) and the case's two reductions (``case.py``).
Writes, under tests/data/detectron2_parity/: four synthetic VOC-style images (PNG) and ``case.pt`` with
(a) the eval-mode RPN proposals (boxes, objectness logits) and (b) detections (boxes, scores, classes) of
each image, (a') image 0's proposals again with the objectness pushed up to confident logits, and
(c) the training-mode losses of one batch with the anchors and RoIs detectron2 sampled.
Classes are detectron2's (0..19, 20 = background); anchor indices are in detectron2's order.
"""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

if not __package__:  # run as a file: make ``tests`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from goodtransfer.data.synthetic.voc import render_voc_image
from goodtransfer.data.voc import VOC_CLASSES, to_model_box
from tests.parity.case import (
    CASE_DIR,
    CASE_FILE,
    CONFIDENT_RPN_BIAS,
    DETECTION_PROPOSALS,
    IMAGE_SIZES,
    NUM_CLASSES,
    ROI_BATCH_PER_IMAGE,
    SEED,
    TRAIN_BATCH,
    anchor_to_ours,
    build_parity_detector,
    image_path,
    load_image,
    parity_spec,
    weights_digest,
)

MAX_OBJECTS = 4


def import_detectron2() -> types.ModuleType:
    """detectron2, or exit saying why. Two shims, at run time: the sdist's compiled ops
    (``detectron2._C``: deformable and rotated boxes, none of them used by R50-C4) are not built on the
    CPU, so an empty module stands in for them; Pillow 10 removed ``Image.LINEAR`` (an alias of
    ``BILINEAR``), which detectron2 0.6's transforms name in a default argument."""
    if not hasattr(Image, "LINEAR"):
        Image.LINEAR = Image.BILINEAR
    try:
        import detectron2  # noqa: F401
    except ImportError as error:
        raise SystemExit(
            f"detectron2 is not importable ({error}); nothing was written. Install it as the docstring of "
            "tests/parity/make_detectron2_case.py says and put it on PYTHONPATH."
        ) from None
    try:
        import detectron2._C  # noqa: F401
    except ImportError:
        sys.modules["detectron2._C"] = types.ModuleType("detectron2._C")
    import detectron2

    return detectron2


def register_extra_norm_heads() -> None:
    """MoCo's ``Res5ROIHeadsExtraNorm`` (its detection/train_net.py): res5, then one more norm layer."""
    from detectron2.layers import get_norm
    from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads

    if "Res5ROIHeadsExtraNorm" in ROI_HEADS_REGISTRY:
        return

    class Res5ROIHeadsExtraNorm(Res5ROIHeads):
        @classmethod
        def _build_res5_block(cls, cfg: Any) -> tuple[torch.nn.Sequential, int]:
            stage, channels = super()._build_res5_block(cfg)
            stage.add_module("norm", get_norm(cfg.MODEL.RESNETS.NORM, channels))
            return stage, channels

    ROI_HEADS_REGISTRY.register(Res5ROIHeadsExtraNorm)


def detectron2_config() -> Any:
    from detectron2.config import get_cfg

    cfg = get_cfg()
    # Base-RCNN-C4-BN.yaml (its _BASE_ is detectron2's defaults: ResNet-50, res4 features, 15 anchors)
    cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = 6000
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 1000
    cfg.MODEL.ROI_HEADS.NAME = "Res5ROIHeadsExtraNorm"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.RESNETS.NORM = "BN"  # SyncBN in MoCo: the same layer in a single process
    # pascal_voc_R_50_C4_24k.yaml
    cfg.MODEL.MASK_ON = False
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = NUM_CLASSES
    cfg.INPUT.MIN_SIZE_TEST = 800
    # pascal_voc_R_50_C4_24k_moco.yaml
    cfg.MODEL.PIXEL_MEAN = [123.675, 116.280, 103.530]
    cfg.MODEL.PIXEL_STD = [58.395, 57.120, 57.375]
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.INPUT.FORMAT = "RGB"
    # the case
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = ROI_BATCH_PER_IMAGE
    cfg.MODEL.DEVICE = "cpu"
    return cfg


_BLOCK_RENAMES = ((r"\.bn(\d)\.", r".conv\1.norm."), (r"\.downsample\.0\.", ".shortcut."))
_BLOCK_RENAMES += ((r"\.downsample\.1\.", ".shortcut.norm."),)
_KEY_RENAMES = (
    (r"^backbone\.conv1\.", "backbone.stem.conv1."),
    (r"^backbone\.bn1\.", "backbone.stem.conv1.norm."),
    (r"^backbone\.layer(\d)\.", lambda m: f"backbone.res{int(m.group(1)) + 1}."),
    (r"^roi_heads\.box_head\.res5\.", "roi_heads.res5."),
    (r"^roi_heads\.box_head\.norm\.", "roi_heads.res5.norm."),
    (r"^rpn\.head\.conv\.0\.0\.", "proposal_generator.rpn_head.conv."),
    (r"^rpn\.head\.cls_logits\.", "proposal_generator.rpn_head.objectness_logits."),
    (r"^rpn\.head\.bbox_pred\.", "proposal_generator.rpn_head.anchor_deltas."),
)


def detectron2_key(key: str) -> str:
    """Our state-dict key -> detectron2's (MoCo's converter's renames plus the detector's heads)."""
    for pattern, replacement in (*_KEY_RENAMES, *_BLOCK_RENAMES):
        key = re.sub(pattern, replacement, key)
    return key


def to_detectron2(state: dict[str, torch.Tensor], num_sizes: int, num_ratios: int) -> dict[str, torch.Tensor]:
    """Our weights in detectron2's names and layout: RPN outputs in its anchor order, background last."""
    cell = anchor_to_ours(num_sizes, num_ratios)
    per_delta = (cell[:, None] * 4 + torch.arange(4)).flatten()
    converted = {}
    for key, value in state.items():
        if key.startswith("rpn.head.cls_logits."):
            value = value[cell]
        elif key.startswith("rpn.head.bbox_pred."):
            value = value[per_delta]
        elif key.startswith("roi_heads.box_predictor.cls_score."):
            value = torch.cat([value[1:], value[:1]])  # ours: background at 0; detectron2: at K
        converted[detectron2_key(key)] = value.clone()
    return converted


def make_images() -> list[dict[str, torch.Tensor]]:
    """Write the case's PNGs; return each image's ground truth (model boxes, detectron2 classes)."""
    CASE_DIR.mkdir(parents=True, exist_ok=True)
    truths = []
    for index, (height, width) in enumerate(IMAGE_SIZES):
        rng = np.random.default_rng([SEED, index])
        pixels, objects = render_voc_image(rng, VOC_CLASSES, height, width, MAX_OBJECTS, None)
        Image.fromarray(pixels).save(image_path(index), optimize=True)
        boxes = torch.tensor([to_model_box(o.bbox) for o in objects], dtype=torch.float32).reshape(-1, 4)
        classes = torch.tensor([VOC_CLASSES.index(o.name) for o in objects], dtype=torch.int64)
        truths.append({"boxes": boxes, "classes": classes})
    return truths


def record_inference(model: Any, index: int) -> dict[str, torch.Tensor]:
    """Proposals of the eval-mode RPN (MoCo's top 1000) and detections from the top DETECTION_PROPOSALS."""
    from detectron2.modeling.postprocessing import detector_postprocess

    image = load_image(index)
    inputs = [{"image": image, "height": image.shape[1], "width": image.shape[2]}]
    images = model.preprocess_image(inputs)
    features = model.backbone(images.tensor)
    proposals, _ = model.proposal_generator(images, features, None)
    results, _ = model.roi_heads(images, features, [proposals[0][:DETECTION_PROPOSALS]], None)
    found = detector_postprocess(results[0], image.shape[1], image.shape[2])
    return {
        "proposal_boxes": proposals[0].proposal_boxes.tensor,
        "objectness_logits": proposals[0].objectness_logits,
        "boxes": found.pred_boxes.tensor,
        "scores": found.scores,
        "classes": found.pred_classes,
    }


def record_confident_proposals(model: Any) -> dict[str, torch.Tensor]:
    """Image 0's RPN proposals with CONFIDENT_RPN_BIAS added to every objectness logit."""
    image = load_image(0)
    images = model.preprocess_image([{"image": image}])
    features = model.backbone(images.tensor)
    bias = model.proposal_generator.rpn_head.objectness_logits.bias
    original = bias.clone()
    bias.add_(CONFIDENT_RPN_BIAS)
    proposals, _ = model.proposal_generator(images, features, None)
    bias.copy_(original)
    return {
        "proposal_boxes": proposals[0].proposal_boxes.tensor,
        "objectness_logits": proposals[0].objectness_logits,
    }


def _recording(method: Callable[..., Any], calls: list[Any]) -> Callable[..., Any]:
    def record(*args: Any, **kwargs: Any) -> Any:
        calls.append(method(*args, **kwargs))
        return calls[-1]

    return record


def record_training(model: Any, truths: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
    """The training-mode losses of one batch, with the anchors and RoIs detectron2 sampled for them."""
    from detectron2.structures import Boxes, Instances
    from detectron2.utils.events import EventStorage

    inputs = []
    for index in TRAIN_BATCH:
        image = load_image(index)
        truth = Instances(tuple(image.shape[1:]))
        truth.gt_boxes, truth.gt_classes = Boxes(truths[index]["boxes"]), truths[index]["classes"]
        inputs.append({"image": image, "instances": truth})
    anchor_calls: list[Any] = []
    roi_calls: list[Any] = []
    rpn, heads = model.proposal_generator, model.roi_heads
    rpn.label_and_sample_anchors = _recording(rpn.label_and_sample_anchors, anchor_calls)
    heads.label_and_sample_proposals = _recording(heads.label_and_sample_proposals, roi_calls)
    model.train()
    torch.manual_seed(SEED)
    with EventStorage():
        losses = model(inputs)
    ((anchor_labels, _),), (sampled,) = anchor_calls, roi_calls
    return {
        "images": list(TRAIN_BATCH),
        "gt_boxes": [truths[i]["boxes"] for i in TRAIN_BATCH],
        "gt_classes": [truths[i]["classes"] for i in TRAIN_BATCH],
        "rpn_positive": [torch.where(labels == 1)[0] for labels in anchor_labels],
        "rpn_negative": [torch.where(labels == 0)[0] for labels in anchor_labels],
        "roi_boxes": [p.proposal_boxes.tensor for p in sampled],
        "roi_classes": [p.gt_classes for p in sampled],
        "losses": {name: float(value) for name, value in losses.items()},
    }


def main() -> None:
    detectron2 = import_detectron2()
    from detectron2.modeling import build_model

    register_extra_norm_heads()
    cfg = detectron2_config()
    spec = parity_spec()
    ours = build_parity_detector(spec)
    model = build_model(cfg)
    sizes, ratios = len(spec["anchor_sizes"]), len(spec["aspect_ratios"])
    missing, unexpected = model.load_state_dict(to_detectron2(ours.state_dict(), sizes, ratios), strict=False)
    if missing or unexpected:
        raise SystemExit(f"weights did not map onto detectron2's: missing {missing}, unexpected {unexpected}")
    truths = make_images()
    model.eval()
    with torch.no_grad():
        inference = [record_inference(model, index) for index in range(len(IMAGE_SIZES))]
        confident = record_confident_proposals(model)
        training = record_training(model, truths)
    meta = {
        "seed": SEED,
        "weights_sha256": weights_digest(ours),
        "detectron2": detectron2.__version__,
        "torch": str(torch.__version__),
        "image_sizes": [list(size) for size in IMAGE_SIZES],
        "detection_proposals": DETECTION_PROPOSALS,
        "confident_rpn_bias": CONFIDENT_RPN_BIAS,
        "roi_batch_per_image": ROI_BATCH_PER_IMAGE,
        "config": cfg.dump(),
    }
    case = {"meta": meta, "inference": inference, "confident_proposals": confident, "training": training}
    torch.save(case, CASE_FILE)
    print(f"wrote {CASE_FILE} ({CASE_FILE.stat().st_size} bytes); losses {training['losses']}")
    for index, record in enumerate(inference):
        print(f"image{index}: {len(record['proposal_boxes'])} proposals, {len(record['boxes'])} detections")


if __name__ == "__main__":
    main()
