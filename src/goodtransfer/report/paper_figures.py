"""A paper figure as a job: read the analyses a figure's config names, plot them, and record what was
plotted (the bar heights) beside the PDF, so the report and the tests read the same numbers.

Figure kinds: ``fp_trend`` (Fig. 1: FP types among the top 25..400 false positives, a few classes),
``fp_breakdown`` (Fig. 7: FP types among each class's top-N detections, every class), ``inversion``
(Figs. 2 and 6: images reconstructed from each backbone's res5 features with a deep image prior, and
their perceptual distance to the input; ``goodtransfer invert`` runs the optimisation, the figure only
reads its outputs) and ``training_curves`` (Fig. 4: VOC07 AP against the pretraining epoch and against
the fine-tuning iteration).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from goodtransfer.io import InputError, read_json, write_bytes, write_json
from goodtransfer.report.figures import CURVE_METRICS, plot_fp_breakdown, plot_fp_trend, plot_training_curves

PLOTTERS = {"fp_trend": plot_fp_trend, "fp_breakdown": plot_fp_breakdown}


def make_figure(
    name: str, spec: Mapping[str, Any], analyses: Sequence[Path], out_pdf: Path, out_json: Path
) -> dict[str, Any]:
    """Plot ``spec`` (kind, caption, runs with labels, classes or "all") from one analysis per run."""
    if spec["kind"] not in PLOTTERS:
        raise InputError(f"figures.{name}.kind: {spec['kind']!r}; expected one of {sorted(PLOTTERS)}")
    runs = spec["runs"]
    if len(analyses) != len(runs):
        raise InputError(f"figures.{name}: {len(runs)} runs but {len(analyses)} analysis files")
    by_label = {run["label"]: read_json(path) for run, path in zip(runs, analyses, strict=True)}
    classes = spec["classes"]
    if classes == "all":
        first = next(iter(by_label.values()))
        classes = [c for c in first["classes"] if first["classes"][c]["false_positives"]]
    heights = PLOTTERS[spec["kind"]](by_label, classes, out_pdf)
    record = {
        "name": name,
        "kind": spec["kind"],
        "caption": spec["caption"],
        "pdf": str(out_pdf),
        "classes": list(classes),
        "runs": {
            run["label"]: {"run": run["run"], "analysis": str(path)}
            for run, path in zip(runs, analyses, strict=True)
        },
        "heights": heights,
    }
    write_json(out_json, record)
    return record


def make_inversion_figure(
    name: str, spec: Mapping[str, Any], metrics_path: Path, grid: Path, out_pdf: Path, out_json: Path
) -> dict[str, Any]:
    """Figs. 2 and 6 from what ``goodtransfer invert`` wrote: its grid PDF becomes the figure, the mean
    LPIPS per run of its ``metrics.json`` the record's heights."""
    labels = [run["label"] for run in spec["runs"]]
    metrics = read_json(metrics_path)
    if not isinstance(metrics, Mapping) or sorted(metrics) != sorted(labels):
        found = sorted(metrics) if isinstance(metrics, Mapping) else type(metrics).__name__
        raise InputError(
            f"{metrics_path}: inversions of {found}; expected one per run label {labels} of figures.{name} "
            "(rerun its inversion job)"
        )
    for label in labels:
        _fields(metrics_path, metrics[label], ("lpips_mean",), f"{label}: ", "an inversion's lpips_mean")
    write_bytes(out_pdf, Path(grid).read_bytes())
    record = {
        "name": name,
        "kind": "inversion",
        "caption": spec["caption"],
        "pdf": str(out_pdf),
        "images": list(metrics[labels[0]]["images"]),
        "runs": {
            run["label"]: {"run": run["run"], "checkpoint": metrics[run["label"]]["checkpoint"]}
            for run in spec["runs"]
        },
        "heights": {label: metrics[label]["lpips_mean"] for label in labels},
        "metrics": str(metrics_path),
        "grid": str(grid),
    }
    write_json(out_json, record)
    return record


def _fields(path: Path, entry: Any, keys: Sequence[str], where: str, expected: str) -> None:
    for key in keys:
        if not isinstance(entry, Mapping) or key not in entry:
            raise InputError(f"{path}: {where}field {key!r} missing; expected {expected}")
        if not isinstance(entry[key], int | float):
            raise InputError(f"{path}: {where}field {key!r} is {entry[key]!r}; expected a number")


def _epoch_metrics(path: Path) -> dict[str, Any]:
    metrics = read_json(path)
    _fields(path, metrics, CURVE_METRICS, "", "VOC detection metrics (AP, AP50, AP75)")
    return metrics


def _curve(path: Path) -> list[dict[str, Any]]:
    metrics = read_json(path)
    if not isinstance(metrics, Mapping) or "curve" not in metrics:
        raise InputError(
            f"{path}: field 'curve' missing; expected the evaluation curve of a run with eval_period"
        )
    curve = metrics["curve"]
    if not isinstance(curve, list) or not curve:
        raise InputError(f"{path}: field 'curve' is {curve!r}; expected a list of evaluations")
    for i, point in enumerate(curve):
        _fields(path, point, ("iteration", *CURVE_METRICS), f"curve[{i}]: ", "iteration, AP, AP50, AP75")
    return curve


def make_training_curves_figure(
    name: str, spec: Mapping[str, Any], epoch_metrics: Mapping[str, Mapping[int | str, Path | str]],
    curve_metrics: Mapping[str, Path | str], out_pdf: Path, out_json: Path,
) -> dict[str, Any]:  # fmt: skip
    """Fig. 4 from VOC metrics: ``epoch_metrics`` maps a run's label to {pretraining epoch: metrics.json
    of a fine-tune from that epoch's checkpoint}; ``curve_metrics`` maps it to the metrics.json of one
    fine-tune with ``eval_period``. Every label of ``spec["runs"]`` needs both, and ``spec["epochs"]``."""
    labels = [run["label"] for run in spec["runs"]]
    for given, option in ((epoch_metrics, "epoch metrics"), (curve_metrics, "curve metrics")):
        if sorted(given) != sorted(labels):
            raise InputError(
                f"figures.{name}: {option} for {sorted(given)}; expected one per run label {labels}"
            )
    paths = {label: {int(e): Path(p) for e, p in epoch_metrics[label].items()} for label in labels}
    wanted = sorted(int(e) for e in spec["epochs"])
    for label, by_epoch in paths.items():
        if sorted(by_epoch) != wanted:
            raise InputError(
                f"figures.{name}: {label!r} has metrics for epochs {sorted(by_epoch)}; expected {wanted}"
            )
    series = plot_training_curves(
        {label: {e: _epoch_metrics(p) for e, p in paths[label].items()} for label in labels},
        {label: _curve(Path(curve_metrics[label])) for label in labels},
        out_pdf,
    )
    record = {
        "name": name,
        "kind": "training_curves",
        "caption": spec["caption"],
        "pdf": str(out_pdf),
        "runs": {run["label"]: {"run": run["run"]} for run in spec["runs"]},
        "series": series,
        "sources": {
            label: {
                "epochs": {str(e): str(paths[label][e]) for e in wanted},
                "curve": str(curve_metrics[label]),
            }
            for label in labels
        },
    }
    write_json(out_json, record)
    return record
