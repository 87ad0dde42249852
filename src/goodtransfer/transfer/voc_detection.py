"""VOC detection fine-tuning (MoCo's detectron2 protocol) on a C4 Faster R-CNN, then VOC evaluation.

Iteration-based like detectron2: SGD, linear warmup, x0.1 at ``steps``, multi-scale training by
shortest side, horizontal flip, difficult objects kept for training, batches of one orientation with
``aspect_ratio_grouping`` (DATALOADER.ASPECT_RATIO_GROUPING). The RPN's and box head's losses, sampling and
NMS follow the spec's ``rpn`` and ``roi_heads`` (``c4``, ``rcnn_losses``). Resumable at any checkpoint.

Optional spec key ``eval_period`` (iterations; absent or 0 = off): the test split is also evaluated
every ``eval_period`` iterations (Fig. 4b), and metrics.json gets ``curve``, a list of
``{"iteration", "AP", "AP50", "AP75"}`` whose last entry is the final evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms.functional import pil_to_tensor

from goodtransfer.checkpoint_import import resnet_from_checkpoint
from goodtransfer.data.images import open_rgb
from goodtransfer.data.voc import VocRecord, load_split, to_model_box
from goodtransfer.device import Compute
from goodtransfer.evaluate.voc_ap import VocEvaluator
from goodtransfer.finite import null_if_nan, require_steps
from goodtransfer.io import InputError
from goodtransfer.transfer.c4 import build_c4_detector
from goodtransfer.transfer.detection_training import detect, train_detector
from goodtransfer.transfer.tasks import DownstreamJob

CURVE_METRICS = ("AP", "AP50", "AP75")


class VocDetectionData(Dataset):
    """Images as float tensors in [0, 1] and torchvision targets (labels 1..K; 0 is background)."""

    def __init__(self, records: Sequence[VocRecord], classes: Sequence[str]) -> None:
        self.records, self.index = list(records), {name: i for i, name in enumerate(classes)}

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, item: tuple[int, bool]) -> tuple[torch.Tensor, dict[str, torch.Tensor], str]:
        position, flip = item
        record = self.records[position]
        upright = open_rgb(record.image_path, exif_transpose=True)  # as detectron2 and the COCO loader do
        if upright.size != (record.width, record.height):
            xml_path = record.image_path.parent.parent / "Annotations" / f"{record.image_id}.xml"
            raise InputError(
                f"{xml_path}: <size> is {record.width}x{record.height}; the image {record.image_path} is "
                f"{upright.size[0]}x{upright.size[1]} after its EXIF orientation; expected them to agree"
            )
        image = pil_to_tensor(upright).float().div_(255)
        boxes = torch.tensor([to_model_box(o.bbox) for o in record.objects], dtype=torch.float32).reshape(
            -1, 4
        )
        labels = torch.tensor([self.index[o.name] + 1 for o in record.objects], dtype=torch.int64)
        if flip:
            image = image.flip(-1)
            boxes = torch.stack(
                [image.shape[-1] - boxes[:, 2], boxes[:, 1], image.shape[-1] - boxes[:, 0], boxes[:, 3]],
                dim=1,
            )
        return image, {"boxes": boxes, "labels": labels}, record.image_id


# The area metric (use_07_metric: false) gives NaN for a class without non-difficult ground truth, as
# detectron2 does; the metrics file holds null and says why, and the report prints a dash.
_NO_TRUTH = "a class has no non-difficult ground truth in the test split (recall 0/0, as in detectron2)"
NAN_REASONS = {
    "per_class_AP50": _NO_TRUTH,
    **dict.fromkeys(("AP", "AP50", "AP75"), f"the class mean is undefined: {_NO_TRUTH}"),
}


def build_from_checkpoint(spec: dict[str, Any], checkpoint: Path, num_classes: int) -> torch.nn.Module:
    resnet, _ = resnet_from_checkpoint(checkpoint)
    return build_c4_detector(resnet, num_classes, spec)


def _curve_point(iteration: int, metrics: dict[str, Any]) -> dict[str, Any]:
    return {"iteration": iteration, **{k: metrics[k] for k in CURVE_METRICS}}


@torch.no_grad()
def evaluate(
    model, records: Sequence[VocRecord], classes: Sequence[str], spec: dict[str, Any], compute: Compute
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """VOC2007 AP/AP50/AP75 (11-point) on ``records`` and the raw detections for error analysis."""
    evaluator = VocEvaluator(records, classes, use_07_metric=spec["use_07_metric"])
    detections: list[dict[str, Any]] = []
    for image_id, out in detect(model, VocDetectionData(records, classes), spec, compute):
        boxes = out["boxes"].float().cpu().numpy()
        scores, labels = out["scores"].float().cpu().numpy(), out["labels"].cpu().numpy() - 1
        evaluator.process(image_id, boxes, scores, labels)
        detections += [
            {"image_id": image_id, "class": classes[int(c)], "score": float(s), "box": [float(v) for v in b]}
            for b, s, c in zip(boxes, scores, labels, strict=True)
        ]
    return evaluator.evaluate(), detections


def run(job: DownstreamJob) -> dict[str, Any]:
    """Fine-tune on ``train_splits`` of the job's VOC root plus its ``extra_train`` (root, split) pairs, e.g.
    VOC2012 trainval for the 07+12 protocol; evaluate on ``test_split``. The detections go beside the
    metrics (detections.json, Figures 1 and 7)."""
    spec = job.spec
    classes = spec["classes"]
    parts = [(Path(job.data), split) for split in spec["train_splits"]] + [
        (Path(r), s) for r, s in job.extra_train
    ]
    train_records = [record for root, split in parts for record in load_split(root, split, classes)]
    require_steps(
        len(train_records), run=spec["run"], images=len(train_records), batch=spec["ims_per_batch"],
        drop_last=False, fix=f"list images in the training splits {[str(r / s) for r, s in parts]}",
    )  # fmt: skip
    test_records = load_split(job.data, spec["test_split"], classes)
    compute = Compute.from_spec(spec)
    model = compute.module(build_from_checkpoint(spec, job.checkpoint, len(classes)))
    start, curve = train_detector(
        model, VocDetectionData(train_records, classes), spec, compute, job.resume_state(), job.log_dir,
        evaluate=_curve_point, test=lambda: evaluate(model, test_records, classes, spec, compute)[0],
    )  # fmt: skip
    metrics, detections = evaluate(model, test_records, classes, spec, compute)
    if spec.get("eval_period"):
        metrics["curve"] = [*curve, _curve_point(spec["max_iter"], metrics)]
    files = dict([job.write_beside("detections.json", {"classes": list(classes), "detections": detections})])
    return {
        **null_if_nan(metrics, NAN_REASONS), "iterations": spec["max_iter"], "resumed_from": start,
        "train_images": len(train_records), "test_images": len(test_records),
        "mean_gt_per_image": float(np.mean([len(r.objects) for r in test_records])), "files": files,
    }  # fmt: skip
