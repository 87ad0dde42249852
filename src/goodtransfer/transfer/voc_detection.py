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

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.functional import pil_to_tensor

from goodtransfer.checkpoint_import import resnet_from_checkpoint
from goodtransfer.data.images import open_rgb
from goodtransfer.data.samplers import detection_sampler as _sampler
from goodtransfer.data.voc import VocRecord, load_split, to_model_box
from goodtransfer.device import Compute
from goodtransfer.engine import Trainer
from goodtransfer.engine.hooks import (
    FiniteLoss,
    IterationCheckpoint,
    LrSchedule,
    PeriodicEval,
    ProgressLog,
    TensorBoard,
)
from goodtransfer.engine.optim import sgd
from goodtransfer.engine.precise_bn import PreciseBN
from goodtransfer.evaluate.voc_ap import VocEvaluator
from goodtransfer.finite import null_if_nan, require_steps, task_key
from goodtransfer.io import InputError
from goodtransfer.progress import Progress
from goodtransfer.resume import ResumeState, rng_state, set_rng_state
from goodtransfer.schedule import linear_warmup, step
from goodtransfer.transfer.c4 import build_c4_detector
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


def _collate(batch: list[Any]) -> tuple[list[Any], ...]:
    return tuple(zip(*batch, strict=True))


# The area metric (use_07_metric: false) gives NaN for a class without non-difficult ground truth, as
# detectron2 does; the metrics file holds null and says why, and the report prints a dash.
_NO_TRUTH = "a class has no non-difficult ground truth in the test split (recall 0/0, as in detectron2)"
NAN_REASONS = {
    "per_class_AP50": _NO_TRUTH,
    **dict.fromkeys(("AP", "AP50", "AP75"), f"the class mean is undefined: {_NO_TRUTH}"),
}


def _iteration_lr(spec: dict[str, Any], iteration: int) -> float:
    warm = linear_warmup(iteration, spec["warmup_iters"], spec["warmup_factor"])
    return warm * step(spec["base_lr"], iteration, spec["steps"])


def build_from_checkpoint(spec: dict[str, Any], checkpoint: Path, num_classes: int) -> torch.nn.Module:
    resnet, _ = resnet_from_checkpoint(checkpoint)
    return build_c4_detector(resnet, num_classes, spec)


def _curve_point(iteration: int, metrics: dict[str, Any]) -> dict[str, Any]:
    return {"iteration": iteration, **{k: metrics[k] for k in CURVE_METRICS}}


def _evaluate_between(model, test: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """An evaluation mid-training that leaves training as it was: train mode, training sizes, RNG."""
    saved, sizes = rng_state(), model.transform.min_size
    metrics = test()
    set_rng_state(saved)  # the test loader draws a seed: without this, evaluating would change training
    model.transform.min_size = sizes
    model.train()
    return metrics


def _train(
    model,
    data,
    spec,
    compute: Compute,
    resume: ResumeState,
    test: Callable[[], dict[str, Any]],
    log_dir: Path,
) -> tuple[int, list[dict[str, Any]]]:
    """Train to ``max_iter``; returns the iteration it started from and the intermediate evaluations."""
    period, curve = spec.get("eval_period") or 0, []
    optimizer = sgd(model, spec)
    start = 0
    if (state := resume.load()) is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, curve = state["iteration"], state.get("curve", [])
        print(f"[voc] resuming {spec['run']} from iteration {start}", file=sys.stderr)
    sampler = _sampler(data, spec, spec["seed"], start, spec["max_iter"])
    loader = DataLoader(data, batch_sampler=sampler, num_workers=spec["workers"], collate_fn=_collate)
    batches = iter(loader)  # draws a seed from the global RNG: before restoring it, as the first run did
    if state is not None:
        set_rng_state(state["rng"])
    progress = Progress(
        f"voc {spec['run']}", spec["max_iter"], done=start, items_per_step=spec["ims_per_batch"], unit="img",
        every=spec["log_period"],
    )  # fmt: skip
    last, fix = spec["max_iter"], task_key(spec, "base_lr")

    def evaluate_at(done: int) -> None:
        curve.append(_curve_point(done, _evaluate_between(model, test)))

    Trainer(
        model, optimizer, compute, loss=_loss(compute), batches=lambda epoch: batches, epochs=1,
        hooks=[
            LrSchedule(lambda trainer: _iteration_lr(spec, trainer.iter)),
            FiniteLoss(spec["run"], fix=fix, iterations=True),
            ProgressLog(progress, mean=False),
            TensorBoard(log_dir, fresh=start == 0),
            PeriodicEval(period, last, evaluate_at),
            IterationCheckpoint(resume, spec["checkpoint_period"], last, extra=lambda: {"curve": curve}),
            PreciseBN(spec.get("precise_bn_iters", 0), lambda: _bn_batches(data, spec), _loss(compute)),
        ],
    ).train(start_iter=start, resumed=state)  # fmt: skip
    return start, curve


def _loss(compute: Compute) -> Callable[[torch.nn.Module, Any], dict[str, torch.Tensor]]:
    def loss(model: torch.nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        images, targets, _ = batch
        return model([compute.images(i) for i in images], [_to(t, compute) for t in targets])

    return loss


def _bn_batches(data: VocDetectionData, spec: dict[str, Any]) -> DataLoader:
    """``precise_bn_iters`` training batches other than the first ones (seed + 1), as COCO's PreciseBN."""
    sampler = _sampler(data, spec, spec["seed"] + 1, 0, spec["precise_bn_iters"])
    generator = torch.Generator().manual_seed(spec["seed"] + 1)  # drawing no seed from the global RNG
    return DataLoader(data, batch_sampler=sampler, num_workers=spec["workers"], collate_fn=_collate,
                      generator=generator)  # fmt: skip


def _to(target: dict[str, torch.Tensor], compute: Compute) -> dict[str, torch.Tensor]:
    return {k: v.to(compute.device) for k, v in target.items()}


@torch.no_grad()
def evaluate(
    model, records: Sequence[VocRecord], classes: Sequence[str], spec: dict[str, Any], compute: Compute
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """VOC2007 AP/AP50/AP75 (11-point) on ``records`` and the raw detections for error analysis."""
    model.eval()
    model.transform.min_size = (spec["min_size_test"],)
    evaluator = VocEvaluator(records, classes, use_07_metric=spec["use_07_metric"])
    data = VocDetectionData(records, classes)
    loader = DataLoader(
        data,
        batch_size=spec["test_batch"],
        sampler=[(i, False) for i in range(len(data))],
        num_workers=spec["workers"],
        collate_fn=_collate,
    )
    detections: list[dict[str, Any]] = []
    for images, _, ids in loader:
        with compute.autocast():
            outputs = model([compute.images(i) for i in images])
        for image_id, out in zip(ids, outputs, strict=True):
            boxes = out["boxes"].float().cpu().numpy()
            scores, labels = out["scores"].float().cpu().numpy(), out["labels"].cpu().numpy() - 1
            evaluator.process(image_id, boxes, scores, labels)
            detections += [
                {
                    "image_id": image_id,
                    "class": classes[int(c)],
                    "score": float(s),
                    "box": [float(v) for v in b],
                }
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
    start, curve = _train(
        model,
        VocDetectionData(train_records, classes),
        spec,
        compute,
        job.resume_state(),
        lambda: evaluate(model, test_records, classes, spec, compute)[0],
        job.log_dir,
    )
    metrics, detections = evaluate(model, test_records, classes, spec, compute)
    if spec.get("eval_period"):
        metrics["curve"] = [*curve, _curve_point(spec["max_iter"], metrics)]
    files = dict([job.write_beside("detections.json", {"classes": list(classes), "detections": detections})])
    return {
        **null_if_nan(metrics, NAN_REASONS), "iterations": spec["max_iter"], "resumed_from": start,
        "train_images": len(train_records), "test_images": len(test_records),
        "mean_gt_per_image": float(np.mean([len(r.objects) for r in test_records])), "files": files,
    }  # fmt: skip
