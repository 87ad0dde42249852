"""Paper figures drawn from analysis JSON: the false-positive breakdowns of Figs 1 and 7, and the VOC07
AP curves of Fig. 4.

Figures are built on ``matplotlib.figure.Figure`` without pyplot, so no GUI backend is involved, and
saved as PDF with TrueType (Type 42) fonts embedded and no creation date, so equal inputs give equal
bytes. Each function returns what it plotted (bar heights in percent, or the curves) for the record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from goodtransfer.evaluate.error_analysis import FP_TYPES
from goodtransfer.io import InputError, atomic_path

# The colours of Hoiem et al.'s toolbox plots (displayFPTrend.m), in FP_TYPES order.
FP_COLOURS = {
    "Loc": (79 / 255, 129 / 255, 189 / 255),
    "Sim": (192 / 255, 80 / 255, 77 / 255),
    "Oth": (77 * 1.2 / 255, 192 * 1.2 / 255, 80 * 1.2 / 255),
    "BG": (128 / 255, 100 / 255, 162 / 255),
}
RUN_HATCHES = ("", "////", "....", "xxxx", "\\\\\\\\", "++++")
RUN_MARKERS = ("o", "s", "^", "D", "v", "P")
CURVE_METRICS = ("AP", "AP50", "AP75")
# Fig. 4's columns: (series key, x key, x-axis label).
CURVE_PANELS = (
    ("pretrain_epochs", "epochs", "pretraining epoch"),
    ("finetune_iters", "iterations", "fine-tuning iteration"),
)
_RC = {"pdf.fonttype": 42, "font.size": 7, "hatch.linewidth": 0.5, "axes.linewidth": 0.6}
_PDF_METADATA = {"CreationDate": None, "Creator": "goodtransfer"}

Analysis = Mapping[str, Any]


def _class_entry(analyses: Mapping[str, Analysis], run: str, name: str) -> Mapping[str, Any]:
    try:
        return analyses[run]["classes"][name]
    except KeyError:
        raise InputError(f"analyses[{run!r}]: no class {name!r}; analyse it or leave it out") from None


def _percent(fraction: float | None) -> float:
    return 0.0 if fraction is None else 100.0 * fraction  # None: the class had no FP in the cut


def _stack(ax: Any, x: float, shares: Mapping[str, float], width: float, hatch: str) -> None:
    bottom = 0.0
    for kind in FP_TYPES:
        ax.bar(x, shares[kind], width, bottom=bottom, color=FP_COLOURS[kind], hatch=hatch, lw=0.3, ec="k")
        bottom += shares[kind]


def _save(fig: Figure, out_pdf: str | Path) -> None:
    with atomic_path(out_pdf) as tmp:
        fig.savefig(tmp, format="pdf", metadata=_PDF_METADATA, bbox_inches="tight")


def _legend(fig: Figure, runs: Sequence[str]) -> None:
    handles = [Patch(facecolor=FP_COLOURS[kind], edgecolor="k", lw=0.3, label=kind) for kind in FP_TYPES]
    if len(runs) > 1:
        handles += [
            Patch(
                facecolor="white", edgecolor="k", lw=0.3, hatch=RUN_HATCHES[i % len(RUN_HATCHES)], label=run
            )
            for i, run in enumerate(runs)
        ]
    fig.legend(handles=handles, loc="outside upper center", ncols=len(handles), frameon=False)


def plot_fp_breakdown(
    analyses: Mapping[str, Analysis], classes: Sequence[str], out_pdf: str | Path, title: str | None = None
) -> dict[str, dict[str, dict[str, float]]]:
    """Stacked bars of FP types per class, one bar per run (Fig. 7 with all classes, Fig. 1's classes).

    ``analyses`` maps a run label (e.g. "Supervised", "MoCo") to an ``error_analysis.analyse`` result;
    the bars are its per-class ``fractions`` (its top-N cut). The number above a bar is its Loc share.
    Returns ``{run: {class: {type: percent}}}``.
    """
    runs = list(analyses)
    if not runs or not classes:
        raise InputError("plot_fp_breakdown: expected at least one run and one class")
    heights = {
        run: {
            name: {k: _percent(_class_entry(analyses, run, name)["fractions"][k]) for k in FP_TYPES}
            for name in classes
        }
        for run in runs
    }
    width = 0.8 / len(runs)
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(max(3.0, 0.8 + 0.25 * len(classes) * len(runs)), 2.4), layout="constrained")
        ax = fig.add_subplot()
        for r, run in enumerate(runs):
            for i, name in enumerate(classes):
                x = i - 0.4 + width * (r + 0.5)
                _stack(ax, x, heights[run][name], width * 0.9, RUN_HATCHES[r % len(RUN_HATCHES)])
                ax.text(x, 101, f"{heights[run][name]['Loc']:.0f}", ha="center", va="bottom", fontsize=5)
        ax.set_xticks(range(len(classes)), classes, rotation=45 if len(classes) > 6 else 0, ha="center")
        ax.set_xlim(-0.6, len(classes) - 0.4)
        ax.set_ylim(0, 110)
        ax.set_ylabel("share of top false positives (%)")
        if title:
            ax.set_title(title)
        _legend(fig, runs)
        _save(fig, out_pdf)
    return heights


def plot_fp_trend(
    analyses: Mapping[str, Analysis], classes: Sequence[str], out_pdf: str | Path
) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Fig. 1: per class and run, stacked FP-type shares among the top 25, 50, ... false positives.

    One panel per (run, class): rows are runs, columns classes, bars the analysis's ``trend`` points.
    Returns ``{run: {class: {type: [percent per point]}}}``.
    """
    runs = list(analyses)
    if not runs or not classes:
        raise InputError("plot_fp_trend: expected at least one run and one class")
    heights: dict[str, dict[str, dict[str, list[float]]]] = {}
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(2.0 * len(classes), 1.7 * len(runs) + 0.3), layout="constrained")
        axes = fig.subplots(len(runs), len(classes), squeeze=False, sharey=True)
        for r, run in enumerate(runs):
            heights[run] = {}
            for c, name in enumerate(classes):
                trend = _class_entry(analyses, run, name)["trend"]
                shares = {k: [_percent(f) for f in trend["fractions"][k]] for k in FP_TYPES}
                heights[run][name] = shares
                ax = axes[r][c]
                for i in range(len(trend["points"])):
                    _stack(ax, i, {k: shares[k][i] for k in FP_TYPES}, 0.8, "")
                ax.set_xticks(range(len(trend["points"])), [str(p) for p in trend["points"]])
                ax.set_ylim(0, 100)
                ax.set_title(f"{name} / {run}")
                if r == len(runs) - 1:
                    ax.set_xlabel("total false positives")
                if c == 0:
                    ax.set_ylabel("percentage of each type")
        _legend(fig, [])
        _save(fig, out_pdf)
    return heights


def _curve_series(
    label: str, by_epoch: Mapping[str, Mapping[int, Mapping[str, float]]], curves: Mapping[str, Sequence[Any]]
) -> dict[str, dict[str, list[float]]]:
    series: dict[str, dict[str, list[float]]] = {}
    if label in by_epoch:
        epochs = sorted(by_epoch[label])
        values = {m: [float(by_epoch[label][e][m]) for e in epochs] for m in CURVE_METRICS}
        series["pretrain_epochs"] = {"epochs": epochs, **values}
    if label in curves:
        points = sorted(curves[label], key=lambda point: point["iteration"])
        values = {m: [float(point[m]) for point in points] for m in CURVE_METRICS}
        series["finetune_iters"] = {"iterations": [int(point["iteration"]) for point in points], **values}
    return series


def plot_training_curves(
    by_epoch: Mapping[str, Mapping[int, Mapping[str, float]]],
    curves: Mapping[str, Sequence[Mapping[str, float]]],
    out_pdf: str | Path,
) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Fig. 4: VOC07 AP, AP50, AP75 (rows) against the pretraining epoch of the fine-tuned backbone (left)
    and against the fine-tuning iteration (right), one line per method.

    ``by_epoch`` maps a label to {epoch: VOC metrics}; ``curves`` maps a label to the ``curve`` of a run
    fine-tuned with ``eval_period``. Returns ``{label: {"pretrain_epochs": {"epochs": [...], "AP": [...],
    "AP50": [...], "AP75": [...]}, "finetune_iters": {"iterations": [...], "AP": [...], ...}}}``, each
    part present when its input has the label.
    """
    labels = list(dict.fromkeys([*by_epoch, *curves]))
    if not labels:
        raise InputError("plot_training_curves: expected at least one method")
    series = {label: _curve_series(label, by_epoch, curves) for label in labels}
    style = {
        label: {"color": f"C{i}", "marker": RUN_MARKERS[i % len(RUN_MARKERS)]}
        for i, label in enumerate(labels)
    }
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(5.0, 5.0), layout="constrained")
        axes = fig.subplots(len(CURVE_METRICS), len(CURVE_PANELS), squeeze=False, sharex="col")
        for r, metric in enumerate(CURVE_METRICS):
            for c, (panel, x, xlabel) in enumerate(CURVE_PANELS):
                ax = axes[r][c]
                for label in labels:
                    if panel in series[label]:
                        data = series[label][panel]
                        ax.plot(data[x], data[metric], ms=3, lw=1, label=label, **style[label])
                ax.set_ylabel(f"VOC07 {metric}")
                ax.grid(True, lw=0.3, alpha=0.5)
                if r == len(CURVE_METRICS) - 1:
                    ax.set_xlabel(xlabel)
        handles = [Line2D([], [], ms=3, lw=1, label=label, **style[label]) for label in labels]
        fig.legend(handles=handles, loc="outside upper center", ncols=len(labels), frameon=False)
        _save(fig, out_pdf)
    return series
