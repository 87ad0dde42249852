"""Paper figures drawn from analysis JSON: the false-positive breakdowns of Figs 1 and 7, the VOC07 AP
curves of Fig. 4 and the per-image perceptual distances of Fig. 6, each beside the paper's values.

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


def loc_share(heights: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, float]:
    """Each run's mean localisation share (percent) over its classes (and a trend's points): the number
    the paper quotes for Fig. 7 (supervised 53.3, MoCo 45.7)."""
    shares: dict[str, float] = {}
    for run, classes in heights.items():
        values = [
            v for c in classes.values() for v in (c["Loc"] if isinstance(c["Loc"], list) else [c["Loc"]])
        ]
        shares[run] = sum(values) / len(values)
    return shares


def _share_title(source: str, heights: Mapping[str, Any]) -> str:
    shares = ", ".join(f"{run} {share:.1f}%" for run, share in loc_share(heights).items())
    return f"{source}: mean Loc share {shares}"


def _breakdown_panel(ax: Any, heights: Mapping[str, Mapping[str, Mapping[str, float]]], title: str) -> None:
    runs = list(heights)
    classes = list(next(iter(heights.values())))
    width = 0.8 / len(runs)
    for r, run in enumerate(runs):
        for i, name in enumerate(classes):
            x = i - 0.4 + width * (r + 0.5)
            _stack(ax, x, heights[run][name], width * 0.9, RUN_HATCHES[r % len(RUN_HATCHES)])
            ax.text(x, 101, f"{heights[run][name]['Loc']:.0f}", ha="center", va="bottom", fontsize=5)
    ax.set_xticks(range(len(classes)), classes, rotation=45 if len(classes) > 6 else 0, ha="center")
    ax.set_xlim(-0.6, len(classes) - 0.4)
    ax.set_ylim(0, 110)
    ax.set_ylabel("share of top false positives (%)")
    ax.set_title(title)


def plot_fp_breakdown(
    analyses: Mapping[str, Analysis],
    classes: Sequence[str],
    out_pdf: str | Path,
    paper: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """Stacked bars of FP types per class, one bar per run (Fig. 7 with all classes, Fig. 1's classes).

    ``analyses`` maps a run label (e.g. "Supervised", "MoCo") to an ``error_analysis.analyse`` result;
    the bars are its per-class ``fractions`` (its top-N cut). The number above a bar is its Loc share;
    each panel's title gives every run's mean Loc share. ``paper`` (same shape as the result, the
    paper's percentages) is drawn as a second panel under ours, with its own classes.
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
    panels = [("ours", heights)] + ([("paper", paper)] if paper else [])
    widest = max(len(next(iter(h.values()))) for _, h in panels)
    with matplotlib.rc_context(_RC):
        fig = Figure(
            figsize=(max(3.0, 0.8 + 0.25 * widest * len(runs)), 2.4 * len(panels)), layout="constrained"
        )
        axes = fig.subplots(len(panels), 1, squeeze=False)
        for ax, (source, shown) in zip(axes[:, 0], panels, strict=True):
            _breakdown_panel(ax, shown, _share_title(source, shown))
        _legend(fig, runs)
        _save(fig, out_pdf)
    return heights


def _trend_heights(analyses: Mapping[str, Analysis], classes: Sequence[str]) -> dict[str, Any]:
    heights: dict[str, dict[str, dict[str, list[float]]]] = {}
    for run in analyses:
        heights[run] = {}
        for name in classes:
            trend = _class_entry(analyses, run, name)["trend"]
            heights[run][name] = {k: [_percent(f) for f in trend["fractions"][k]] for k in FP_TYPES}
    return heights


def plot_fp_trend(
    analyses: Mapping[str, Analysis],
    classes: Sequence[str],
    out_pdf: str | Path,
    paper: tuple[Sequence[int], Mapping[str, Mapping[str, Mapping[str, list[float]]]]] | None = None,
) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Fig. 1: per class and run, stacked FP-type shares among the top 25, 50, ... false positives.

    One panel per (run, class): rows are runs, columns classes, bars the analysis's ``trend`` points.
    ``paper`` (its trend points and the paper's shares in the result's shape) adds one row per run
    under ours, with the paper's classes. Returns ``{run: {class: {type: [percent per point]}}}``.
    """
    runs = list(analyses)
    if not runs or not classes:
        raise InputError("plot_fp_trend: expected at least one run and one class")
    heights = _trend_heights(analyses, classes)
    first = _class_entry(analyses, runs[0], classes[0])["trend"]["points"]
    rows = [(run, "ours", heights[run], first) for run in runs]
    if paper:
        rows += [(run, "paper", shares, paper[0]) for run, shares in paper[1].items()]
    columns = max(len(shares) for _, _, shares, _ in rows)
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(2.0 * columns, 1.7 * len(rows) + 0.3), layout="constrained")
        axes = fig.subplots(len(rows), columns, squeeze=False, sharey=True)
        for r, (run, source, shares_by_class, points) in enumerate(rows):
            for c in range(columns):
                ax = axes[r][c]
                if c >= len(shares_by_class):
                    ax.set_axis_off()
                    continue
                name, shares = list(shares_by_class.items())[c]
                for i in range(len(points)):
                    _stack(ax, i, {k: shares[k][i] for k in FP_TYPES}, 0.8, "")
                ax.set_xticks(range(len(points)), [str(p) for p in points])
                ax.set_ylim(0, 100)
                ax.set_title(f"{name} / {run} ({source})")
                if r == len(rows) - 1:
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


def _paper_axis(ax: Any, ours_x: list[float], paper_x: list[float], xlabel: str, top: bool) -> Any:
    """The axes the paper's curve is drawn on: ours when both schedules end at the same x, else a twin
    x-axis on top (the embedded default trains for a few epochs and iterations, the paper 200 and 9k)."""
    if not ours_x or max(ours_x) == max(paper_x):
        return ax
    twin = ax.twiny()
    twin.tick_params(axis="x", labelsize=5, pad=1)
    if top:
        twin.set_xlabel(f"paper's {xlabel} (dashed)")
    return twin


def plot_training_curves(
    by_epoch: Mapping[str, Mapping[int, Mapping[str, float]]],
    curves: Mapping[str, Sequence[Mapping[str, float]]],
    out_pdf: str | Path,
    paper: Mapping[str, Mapping[str, Mapping[str, list[float]]]] | None = None,
) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Fig. 4: VOC07 AP, AP50, AP75 (rows) against the pretraining epoch of the fine-tuned backbone (left)
    and against the fine-tuning iteration (right), one line per method.

    ``by_epoch`` maps a label to {epoch: VOC metrics}; ``curves`` maps a label to the ``curve`` of a run
    fine-tuned with ``eval_period``. Returns ``{label: {"pretrain_epochs": {"epochs": [...], "AP": [...],
    "AP50": [...], "AP75": [...]}, "finetune_iters": {"iterations": [...], "AP": [...], ...}}}``, each
    part present when its input has the label. ``paper`` (that shape, the paper's curves) is overlaid
    dashed in each method's colour, on the same AP scale.
    """
    labels = list(dict.fromkeys([*by_epoch, *curves]))
    if not labels:
        raise InputError("plot_training_curves: expected at least one method")
    series = {label: _curve_series(label, by_epoch, curves) for label in labels}
    paper = paper or {}
    style = {
        label: {"color": f"C{i}", "marker": RUN_MARKERS[i % len(RUN_MARKERS)]}
        for i, label in enumerate(labels)
    }
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(5.0, 5.6 if paper else 5.0), layout="constrained")
        axes = fig.subplots(len(CURVE_METRICS), len(CURVE_PANELS), squeeze=False, sharex="col")
        for r, metric in enumerate(CURVE_METRICS):
            for c, (panel, x, xlabel) in enumerate(CURVE_PANELS):
                ax = axes[r][c]
                ours_x = [v for label in labels if panel in series[label] for v in series[label][panel][x]]
                for label in labels:
                    if panel in series[label]:
                        data = series[label][panel]
                        ax.plot(data[x], data[metric], ms=3, lw=1, label=label, **style[label])
                paper_x = [v for theirs in paper.values() for v in theirs[panel][x]]
                target = _paper_axis(ax, ours_x, paper_x, xlabel, r == 0) if paper else ax
                for label, theirs in paper.items():
                    target.plot(theirs[panel][x], theirs[panel][metric], lw=0.8, ls="--", ms=2,
                                **style[label])  # fmt: skip
                ax.set_ylabel(f"VOC07 {metric}")
                ax.grid(True, lw=0.3, alpha=0.5)
                if r == len(CURVE_METRICS) - 1:
                    ax.set_xlabel(xlabel)
        handles = [Line2D([], [], ms=3, lw=1, label=label, **style[label]) for label in labels]
        handles += [Line2D([], [], ms=2, lw=0.8, ls="--", label=f"{label} (paper)", **style[label])
                    for label in paper]  # fmt: skip
        fig.legend(handles=handles, loc="outside upper center", ncols=min(len(handles), 4), frameon=False)
        _save(fig, out_pdf)
    return series


def diagonal_summary(x: Sequence[float], y: Sequence[float]) -> dict[str, float | int]:
    """Fig. 6's numbers for one source: the mean of each run and the fraction of images whose second run's
    distance is below the first's (below the diagonal: the second reconstructs the image better)."""
    if len(x) != len(y) or not x:
        raise InputError(f"distance scatter: {len(x)} and {len(y)} per-image values; expected equal, > 0")
    return {
        "images": len(x),
        "mean_x": sum(x) / len(x),
        "mean_y": sum(y) / len(y),
        "below_diagonal": sum(b < a for a, b in zip(x, y, strict=True)) / len(x),
    }


def plot_distance_scatter(
    sources: Mapping[str, Mapping[str, Sequence[float]]], out_pdf: str | Path
) -> dict[str, dict[str, float | int]]:
    """Fig. 6: per image, the perceptual distance of one run's reconstruction (x) against another's (y),
    one panel per source ("ours", "paper"), with the diagonal, both means (a cross) and the fraction of
    images below the diagonal. ``sources`` maps a source to ``{run label: [distance per image]}`` with the
    same two labels in the same order. Returns each source's ``diagonal_summary``."""
    summaries: dict[str, dict[str, float | int]] = {}
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(2.6 * len(sources), 2.7), layout="constrained")
        axes = fig.subplots(1, len(sources), squeeze=False)
        for ax, (source, runs) in zip(axes[0], sources.items(), strict=True):
            if len(runs) != 2:
                raise InputError(f"distance scatter {source}: runs {list(runs)}; expected exactly two")
            (x_label, x), (y_label, y) = runs.items()
            summary = summaries[source] = diagonal_summary(x, y)
            ax.scatter(x, y, s=4 if len(x) > 100 else 12, lw=0, alpha=0.6, color="C0")
            low, high = min(*x, *y), max(*x, *y)
            ax.plot([low, high], [low, high], color="k", lw=0.6)
            ax.plot(summary["mean_x"], summary["mean_y"], "x", color="C3", ms=7, mew=1.5)
            ax.set_xlabel(f"{x_label} distance")
            ax.set_ylabel(f"{y_label} distance")
            ax.set_aspect("equal", adjustable="datalim")
            ax.set_title(
                f"{source} ({summary['images']} images): means {summary['mean_x']:.3g} / "
                f"{summary['mean_y']:.3g},\n{100 * summary['below_diagonal']:.0f}% below the diagonal"
            )
        _save(fig, out_pdf)
    return summaries
