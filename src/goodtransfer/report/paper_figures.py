"""A paper figure as a job: read the analyses a figure's config names, plot them, and record what was
plotted beside the PDF, so the report and the tests read the same numbers. A figure whose config names the
paper's values (``paper: {values, labels}``, files under ``paper/reference/figures``) draws them beside
ours, and its record holds both series, ``ours`` and ``paper``.

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
from goodtransfer.report import paper_values
from goodtransfer.report.figures import (
    CURVE_METRICS,
    loc_share,
    plot_distance_scatter,
    plot_fp_breakdown,
    plot_fp_trend,
    plot_training_curves,
)

PLOTTERS = {"fp_trend": plot_fp_trend, "fp_breakdown": plot_fp_breakdown}


def paper_series(name: str, spec: Mapping[str, Any]) -> tuple[Path, dict[str, str]] | None:
    """The file of the paper's values a figure names (``paper.values``) and, per run label, the paper's
    series name (``paper.labels``; a label left out is the paper's too); None when it names none."""
    paper = spec.get("paper")
    if not paper:
        return None
    run_labels = [run["label"] for run in spec["runs"]]
    labels = paper.get("labels") or {}
    stray = sorted(set(labels) - set(run_labels))
    if stray:
        raise InputError(f"figures.{name}.paper.labels: {stray} are not among its run labels {run_labels}")
    return Path(paper["values"]), {label: labels.get(label, label) for label in run_labels}


def _fp_paper(kind: str, paper: tuple[Path, dict[str, str]] | None) -> tuple[Any, Any, list[int] | None]:
    """What the plotter takes, what the record keeps, and Fig. 1's trend points, of the paper's values."""
    if paper is None:
        return None, None, None
    if kind == "fp_trend":
        points, shares = paper_values.fp_trend(*paper)
        return (points, shares), shares, points
    shares = paper_values.fp_breakdown(*paper)
    return shares, shares, None


def make_figure(
    name: str, spec: Mapping[str, Any], analyses: Sequence[Path], out_pdf: Path, out_json: Path
) -> dict[str, Any]:
    """Plot ``spec`` (kind, caption, runs with labels, classes or "all", the paper's values) from one
    analysis per run; the record holds both series and each run's mean localisation share."""
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
    source = paper_series(name, spec)
    to_plot, paper, paper_points = _fp_paper(spec["kind"], source)
    ours = PLOTTERS[spec["kind"]](by_label, classes, out_pdf, paper=to_plot)
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
        "ours": ours,
        "paper": paper,
        "loc_share": {"ours": loc_share(ours), "paper": loc_share(paper) if paper else None},
        "paper_values": str(source[0]) if source else None,
    }
    if paper_points is not None:
        record["paper_points"] = paper_points
    write_json(out_json, record)
    return record


def make_inversion_figure(
    name: str, spec: Mapping[str, Any], metrics_path: Path, grid: Path, out_pdf: Path, out_json: Path
) -> dict[str, Any]:
    """Figs. 2 and 6 from what ``goodtransfer invert`` wrote. Without the paper's values (Fig. 2, which
    the paper shows only as images) the figure is its grid of reconstructions; with them (Fig. 6) it is
    the per-image scatter of the two runs' perceptual distances, ours beside the paper's. The record
    holds the per-image distances and means of both."""
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
        if not isinstance(metrics[label].get("lpips_per_image"), list):
            raise InputError(f"{metrics_path}: {label}: field 'lpips_per_image' missing; expected a list")
    ours = {label: [float(v) for v in metrics[label]["lpips_per_image"]] for label in labels}
    source = paper_series(name, spec)
    paper = paper_values.distances(*source) if source else None
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
        "ours": ours,
        "paper": paper,
        "means": {
            "ours": {label: metrics[label]["lpips_mean"] for label in labels},
            "paper": {label: sum(v) / len(v) for label, v in paper.items()} if paper else None,
        },
        "paper_values": str(source[0]) if source else None,
        "metrics": str(metrics_path),
        "grid": str(grid),
    }
    if paper is None:
        write_bytes(out_pdf, Path(grid).read_bytes())
    else:
        record["scatter"] = plot_distance_scatter({"ours": ours, "paper": paper}, out_pdf)
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
    source = paper_series(name, spec)
    paper = paper_values.training_curves(*source) if source else None
    series = plot_training_curves(
        {label: {e: _epoch_metrics(p) for e, p in paths[label].items()} for label in labels},
        {label: _curve(Path(curve_metrics[label])) for label in labels},
        out_pdf,
        paper,
    )
    record = {
        "name": name,
        "kind": "training_curves",
        "caption": spec["caption"],
        "pdf": str(out_pdf),
        "runs": {run["label"]: {"run": run["run"]} for run in spec["runs"]},
        "ours": series,
        "paper": paper,
        "paper_values": str(source[0]) if source else None,
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
