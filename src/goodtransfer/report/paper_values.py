"""The paper's figure values (``paper/reference/figures/fig{1,4,6,7}_values.json``, recovered from the
published vector plots) in the shapes our figures plot, so each figure can draw the paper's series beside
ours and record both.

A figure's config entry names the file and maps each of its run labels to the paper's series name
(``paper: {values: ..., labels: {MoCo-v2: MoCo}}``); every function here returns the series under our
labels, and an error names the file, the key and what was expected.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from goodtransfer.evaluate.error_analysis import FP_TYPES
from goodtransfer.io import InputError, read_json

CURVE_METRICS = ("AP", "AP50", "AP75")
CURVE_PANELS = {"pretrain_epochs": "epochs", "finetune_iters": "iterations"}


def _number(path: Path, where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{path}: {where} is {value!r}; expected a number")
    return float(value)


def _numbers(path: Path, where: str, values: Any, length: int | None = None) -> list[float]:
    if not isinstance(values, list) or (length is not None and len(values) != length):
        expected = "a list of numbers" + ("" if length is None else f" of length {length}")
        raise InputError(f"{path}: {where} is {values!r:.80}; expected {expected}")
    return [_number(path, f"{where}[{i}]", value) for i, value in enumerate(values)]


def _object(path: Path) -> dict[str, Any]:
    values = read_json(path)
    if not isinstance(values, dict):
        raise InputError(f"{path}: expected a JSON object of the paper's series")
    return values


def _entry(path: Path, values: Mapping[str, Any], key: str, what: str) -> Any:
    if key not in values:
        raise InputError(f"{path}: no {what} {key!r}; it has {sorted(values)}")
    return values[key]


def class_key(name: str) -> str:
    """'TV monitor' -> 'tvmonitor': the paper's printed class names as VOC's class names."""
    return name.lower().replace(" ", "")


def fp_breakdown(path: Path, labels: Mapping[str, str]) -> dict[str, dict[str, dict[str, float]]]:
    """Fig. 7: ``{our label: {class: {FP type: percent}}}`` from ``{paper label: {class: {type: %}}}``."""
    values = _object(path)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for ours, theirs in labels.items():
        classes = _entry(path, values, theirs, "series")
        if not isinstance(classes, dict) or not classes:
            raise InputError(f"{path}: {theirs!r} is not an object of classes")
        out[ours] = {
            name: {kind: _number(path, f"{theirs}.{name}.{kind}", _entry(path, shares, kind, "FP type"))
                   for kind in FP_TYPES}
            for name, shares in classes.items()
        }  # fmt: skip
    return out


Trend = dict[str, dict[str, dict[str, list[float]]]]  # {label: {class: {FP type: [percent per point]}}}


def fp_trend(path: Path, labels: Mapping[str, str]) -> tuple[list[int], Trend]:
    """Fig. 1: the trend points (top 25, 50, ... false positives) and ``{our label: {class: {type:
    [percent per point]}}}`` from keys ``"<Class>/<paper label>"`` holding ``<type>_pct`` lists."""
    values = _object(path)
    points: list[int] | None = None
    out: Trend = {ours: {} for ours in labels}
    by_paper = {theirs: ours for ours, theirs in labels.items()}
    for key, entry in values.items():
        name, _, theirs = key.rpartition("/")
        if theirs not in by_paper:
            continue
        here = _numbers(path, f"{key}.total_false_positives", entry.get("total_false_positives"))
        if points is not None and here != points:
            raise InputError(
                f"{path}: {key}.total_false_positives is {here}; expected {points} as the others"
            )
        points = [int(p) for p in here]
        out[by_paper[theirs]][class_key(name)] = {
            kind: _numbers(path, f"{key}.{kind}_pct", entry.get(f"{kind}_pct"), len(points))
            for kind in FP_TYPES
        }
    missing = [ours for ours, classes in out.items() if not classes]
    if missing or points is None:
        raise InputError(
            f"{path}: no '<class>/<label>' series for {[labels[m] for m in missing]}; it has {sorted(values)}"
        )
    return points, out


def training_curves(path: Path, labels: Mapping[str, str]) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Fig. 4: ``{our label: {panel: {x key: [...], AP: [...], AP50: [...], AP75: [...]}}}`` (the shape
    of ``figures.plot_training_curves``'s series) from keys ``"<panel>|<metric>|<paper label>"``."""
    values = _object(path)
    out: dict[str, dict[str, dict[str, list[float]]]] = {}
    for ours, theirs in labels.items():
        out[ours] = {}
        for panel, x_key in CURVE_PANELS.items():
            series: dict[str, list[float]] = {}
            for metric in CURVE_METRICS:
                key = f"{panel}|{metric}|{theirs}"
                entry = _entry(path, values, key, "curve")
                x = _numbers(path, f"{key}.x", entry.get("x") if isinstance(entry, dict) else None)
                if series and x != series[x_key]:
                    raise InputError(f"{path}: {key}.x differs from the {panel} x of the other metrics")
                series[x_key] = x
                series[metric] = _numbers(path, f"{key}.y", entry.get("y"), len(x))
            out[ours][panel] = series
    return out


def distances(path: Path, labels: Mapping[str, str]) -> dict[str, list[float]]:
    """Fig. 6: ``{our label: [perceptual distance per image, by image index]}`` from ``{paper label:
    [{index, lpips_distance}, ...]}``; every series must cover the same image indices."""
    values = _object(path)
    out: dict[str, list[float]] = {}
    indices: list[float] | None = None
    for ours, theirs in labels.items():
        entries = _entry(path, values, theirs, "series")
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise InputError(f"{path}: {theirs!r} is not a list of {{index, lpips_distance}}")
        ordered = sorted(entries, key=lambda e: _number(path, f"{theirs}[].index", e.get("index")))
        here = [float(e["index"]) for e in ordered]
        if indices is not None and here != indices:
            raise InputError(f"{path}: {theirs!r} has other image indices than {list(labels.values())[0]!r}")
        indices = here
        out[ours] = [_number(path, f"{theirs}[{e['index']:g}].lpips_distance", e.get("lpips_distance"))
                     for e in ordered]  # fmt: skip
    return out
