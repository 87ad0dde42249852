"""A paper figure as a job: read the analyses a figure's config names, plot them, and record what was
plotted (the bar heights) beside the PDF, so the report and the tests read the same numbers.

Figure kinds: ``fp_trend`` (Fig. 1: FP types among the top 25..400 false positives, a few classes),
``fp_breakdown`` (Fig. 7: FP types among each class's top-N detections, every class) and ``inversion``
(Figs. 2 and 6: images reconstructed from each backbone's res5 features with a deep image prior, and
their perceptual distance to the input).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from goodtransfer.io import InputError, read_json, write_json
from goodtransfer.report.figures import plot_fp_breakdown, plot_fp_trend

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


def inversion_images(root: Path, split: str, count: int) -> list[Path]:
    """``count`` images of an ImageNet-style split, one class after another (first file of each class
    first), so a small grid already spans the classes."""
    folder = Path(root) / split
    classes = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    if not classes:
        raise InputError(f"{folder}: no class folders to draw inversion images from")
    files = [sorted(p for p in c.iterdir() if p.is_file()) for c in classes]
    order = [row[i] for i in range(max(map(len, files))) for row in files if i < len(row)]
    return order[:count]


def make_inversion_figure(
    name: str, spec: Mapping[str, Any], checkpoints: Sequence[Path], data_root: Path, out_pdf: Path,
    out_json: Path, work_dir: Path,
) -> dict[str, Any]:  # fmt: skip
    """Invert the figure's images through each run's backbone; the record holds the mean LPIPS per run."""
    from goodtransfer.evaluate.inversion import run_inversion

    runs = spec["runs"]
    if len(checkpoints) != len(runs):
        raise InputError(f"figures.{name}: {len(runs)} runs but {len(checkpoints)} checkpoints")
    images = inversion_images(data_root, spec["images"]["split"], spec["images"]["count"])
    labelled = {run["label"]: Path(path) for run, path in zip(runs, checkpoints, strict=True)}
    metrics_out = work_dir / "metrics.json"
    run_inversion(dict(spec["settings"]), labelled, images, work_dir, metrics_out, figure_out=out_pdf)
    metrics = read_json(metrics_out)
    record = {
        "name": name,
        "kind": "inversion",
        "caption": spec["caption"],
        "pdf": str(out_pdf),
        "images": [str(path) for path in images],
        "runs": {
            run["label"]: {"run": run["run"], "checkpoint": str(path)}
            for run, path in zip(runs, checkpoints, strict=True)
        },
        "heights": {label: metrics[label]["lpips_mean"] for label in labelled},
        "metrics": str(metrics_out),
    }
    write_json(out_json, record)
    return record
