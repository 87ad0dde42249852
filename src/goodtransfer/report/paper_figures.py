"""A paper figure as a job: read the analyses a figure's config names, plot them, and record what was
plotted (the bar heights) beside the PDF, so the report and the tests read the same numbers.

Figure kinds: ``fp_trend`` (Fig. 1: FP types among the top 25..400 false positives, a few classes) and
``fp_breakdown`` (Fig. 7: FP types among each class's top-N detections, every class).
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
