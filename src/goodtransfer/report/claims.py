"""The paper's claims as checked results: each claim's effect in the paper and in our runs, a paired 95%
interval, a paired t test and a verdict, with the files every number came from.

A claim (config ``claims.<id>``) compares pretraining runs on one protocol metric. Its effect is computed
per *unit* -- a seed for table cells (run A's seed s against run B's seed s: both fine-tune from the same
seeded initialisation of the heads and the same data order, so seed noise is shared), a class for Figure
7's localisation share, an image for Figure 6's distance -- and the units' differences are summarised by
:func:`goodtransfer.report.stats.paired_interval`. Kinds:

* ``difference``: B - A; with ``versus_metric`` (B - A on ``metric``) - (B - A on ``versus_metric``) (the
  AP75 gap against the AP50 gap); with ``baseline: {a, b}`` (B - A) - (baseline B - baseline A).
* ``spread``: the range of ``metric`` over runs ``a`` minus its range over runs ``b``.
* ``fp_share``: per class, B's share (%) of a false-positive type minus A's (``results/fp_analysis``).
* ``distance``: per image, B's perceptual distance minus A's (an inversion figure's metrics.json).

Why a t test: with 2 to 5 seeds a sign test cannot reach 5% (its smallest two-sided p at n=5 is 0.0625),
and seed noise of a fine-tuning metric is close to normal. One unit gives no spread: the verdict is then
"inconclusive at this n", never a guess.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from goodtransfer.config import REPLICA, claim_runs
from goodtransfer.io import InputError, is_finite_number, read_json
from goodtransfer.report.stats import one_sided_p, paired_interval
from goodtransfer.report.tables import reference_value

LEVEL = 0.95
REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive at this n"
SEED_FOLDER = re.compile(r"seed([0-9]+)")

Units = dict[str, float]  # unit (seed, class or image) -> value


# --- our values -------------------------------------------------------------------------------------


def _number(value: Any, path: str, field: str, undefined: Mapping[str, Any] | None = None) -> float:
    """A finite number; null, NaN, a string or a missing field fails naming the file and field."""
    if value is None:
        reason = (undefined or {}).get(field, "no reason recorded")
        raise InputError(f"{path}: field {field!r} is null ({reason}); a claim needs a finite number")
    if not is_finite_number(value):
        raise InputError(f"{path}: field {field!r} is {value!r}; expected a finite number")
    return float(value)


def seed_values(paths: Sequence[str], metric: str) -> Units:
    """``metric`` of each seed's results/<protocol>/<run>/seed<N>/metrics.json, keyed by the seed ('N');
    a pretrain_seeds replica's (<run>+s<k>) by both seeds ('s<k>:N'), so replicas pair with replicas."""
    values: Units = {}
    for path in paths:
        match = SEED_FOLDER.fullmatch(Path(path).parent.name)
        if match is None:
            raise InputError(f"{path}: expected a metrics file in a seed<N> folder")
        replica = REPLICA.fullmatch(Path(path).parent.parent.name)
        unit = match[1] if replica is None else f"s{replica['index']}:{match[1]}"
        metrics = read_json(path)
        if metric not in metrics:
            raise InputError(f"{path}: field {metric!r} missing; a claim compares it")
        values[unit] = _number(metrics[metric], path, metric, metrics.get("undefined"))
    return values


def _cell(files: Mapping[str, Sequence[str]], protocol: str, run: str, metric: str) -> Units:
    key = f"{protocol}/{run}"
    if not files.get(key):
        raise InputError(f"claims: no metrics files given for {key}")
    return seed_values(files[key], metric)


def _paired(parts: Sequence[Units], combine: Callable[[list[float]], float], where: str) -> Units:
    """``combine`` of the parts' values at each unit present in every part (pairing by unit)."""
    common = sorted(set.intersection(*(set(part) for part in parts)), key=_unit_order)
    if not common:
        raise InputError(f"{where}: the compared runs share no seed, class or image to pair them by")
    return {unit: combine([part[unit] for part in parts]) for unit in common}


def _unit_order(unit: str) -> tuple[int, int, str]:
    """Seeds in number order, then pretraining replicas ('s1:0', ...), then names (classes, images)."""
    if unit.isdigit():
        return (0, int(unit), "")
    return (1, 0, unit) if re.fullmatch(r"s[0-9]+:[0-9]+", unit) else (2, 0, unit)


def _fp_shares(path: str, kind: str) -> Units:
    """Per class with false positives: the share (%) of false positives of ``kind`` (Loc, Sim, ...)."""
    analysis = read_json(path)
    classes = analysis.get("classes") if isinstance(analysis, dict) else None
    if not isinstance(classes, dict):
        raise InputError(f"{path}: field 'classes' missing; expected a false-positive analysis")
    shares: Units = {}
    for name, entry in classes.items():
        if entry.get("false_positives"):
            share = (entry.get("fractions") or {}).get(kind)
            shares[name] = 100.0 * _number(share, path, f"classes.{name}.fractions.{kind}")
    return shares


def _distances(path: str, label: str) -> Units:
    """Per image: the perceptual distance of ``label``'s reconstruction (an inversion metrics.json)."""
    metrics = read_json(path)
    entry = metrics.get(label) if isinstance(metrics, dict) else None
    if not isinstance(entry, dict) or not isinstance(entry.get("lpips_per_image"), list):
        raise InputError(f"{path}: field {label!r}.lpips_per_image missing; expected an inversion record")
    images = entry.get("images") or []
    if len(images) != len(entry["lpips_per_image"]):
        raise InputError(
            f"{path}: {label!r} has {len(images)} images but {len(entry['lpips_per_image'])} values"
        )
    return {
        Path(image).name: _number(value, path, f"{label}.lpips_per_image[{index}]")
        for index, (image, value) in enumerate(zip(images, entry["lpips_per_image"], strict=True))
    }


def our_units(claim_id: str, claim: Mapping[str, Any], inputs: Mapping[str, Any]) -> Units:
    """The claim's effect at each unit, from the files in ``inputs`` (see ``claim_inputs`` in the rules)."""
    where, kind = f"claims.{claim_id}", claim.get("kind", "difference")
    if kind == "fp_share":
        a, b = _fp_shares(inputs["a"], claim["metric"]), _fp_shares(inputs["b"], claim["metric"])
        return _paired([a, b], lambda v: v[1] - v[0], f"{where} (classes with false positives)")
    if kind == "distance":
        a, b = _distances(inputs["metrics"], claim["a"]), _distances(inputs["metrics"], claim["b"])
        return _paired([a, b], lambda v: v[1] - v[0], f"{where} (images)")
    protocol = claim["protocol"]
    if kind == "spread":
        a = [_cell(inputs, protocol, run, claim["metric"]) for run in claim["a"]]
        b = [_cell(inputs, protocol, run, claim["metric"]) for run in claim["b"]]
        return _paired([*a, *b], lambda v: _range(v[: len(a)]) - _range(v[len(a) :]), where)
    metrics = [claim["metric"], *([claim["versus_metric"]] if claim.get("versus_metric") else [])]
    runs = claim_runs(claim)
    parts = [_cell(inputs, protocol, run, metric) for metric in metrics for run in runs]
    return _paired(parts, lambda v: _difference_of(v, len(runs), len(metrics)), where)


def _range(values: Sequence[float]) -> float:
    return max(values) - min(values)


def _difference_of(values: Sequence[float], runs: int, metrics: int) -> float:
    """(b - a) [- (baseline b - baseline a)] for the first metric, minus the same for the second metric;
    ``values`` hold every run's value for the first metric, then for the second."""

    def one(v: Sequence[float]) -> float:
        return (v[1] - v[0]) - ((v[3] - v[2]) if runs == 4 else 0.0)

    first = one(values[:runs])
    return first - one(values[runs:]) if metrics == 2 else first


# --- the paper's effect -------------------------------------------------------------------------------


def _paper_cell(reference: Mapping[str, Any], spec: Mapping[str, Any], row: Any, key: str) -> float:
    group, index, label = None, 0, row
    if isinstance(row, dict):
        group, label = row.get("group"), row["row"]
        index, label = (label, None) if isinstance(label, int) else (0, label)
    value = reference_value(reference, spec["table"], group, index, key, label)
    if value is None:
        raise InputError(f"reference: table {spec['table']!r} row {row!r} has no number for {key!r}")
    return value


def paper_effect(claim: Mapping[str, Any], reference: Mapping[str, Any]) -> float | None:
    """The paper's effect, from the numbers it printed (paper/reference/reference_results.yaml)."""
    spec, kind = claim.get("paper"), claim.get("kind", "difference")
    if spec is None:
        return None
    if kind == "distance":
        means = reference[spec["figure"]]["mean_perceptual_distance"]
        return float(means[spec["b"]]) - float(means[spec["a"]])
    if kind == "fp_share":
        values = reference[spec["figure"]]["values"]
        a, b = values[spec["a"]], values[spec["b"]]
        shared = sorted(set(a) & set(b))
        return sum(float(b[c][spec["key"]]) - float(a[c][spec["key"]]) for c in shared) / len(shared)
    if kind == "spread":
        a = [_paper_cell(reference, spec, row, spec["key"]) for row in spec["a"]]
        b = [_paper_cell(reference, spec, row, spec["key"]) for row in spec["b"]]
        return _range(a) - _range(b)
    rows = [
        spec["a"],
        spec["b"],
        *((spec["baseline"]["a"], spec["baseline"]["b"]) if "baseline" in spec else ()),
    ]
    keys = [spec["key"], *([spec["versus_key"]] if "versus_key" in spec else [])]
    values = [_paper_cell(reference, spec, row, key) for key in keys for row in rows]
    return _difference_of(values, len(rows), len(keys))


# --- verdict --------------------------------------------------------------------------------------------


def verdict(expect: str, margin: float, low: float | None, high: float | None) -> str:
    """From the 95% interval: wholly on the claimed side of the margin -> reproduced; wholly on the other
    side -> not reproduced; straddling it (or no interval, n = 1) -> inconclusive at this n."""
    if low is None or high is None:
        return INCONCLUSIVE
    if expect == "greater":
        return REPRODUCED if low > margin else NOT_REPRODUCED if high < margin else INCONCLUSIVE
    if expect == "less":
        return REPRODUCED if high < -margin else NOT_REPRODUCED if low > -margin else INCONCLUSIVE
    if expect == "similar":
        inside = -margin < low and high < margin
        return REPRODUCED if inside else NOT_REPRODUCED if low > margin or high < -margin else INCONCLUSIVE
    raise InputError(f"claims: expect {expect!r}; expected greater, less or similar")


def _p_value(expect: str, margin: float, mean: float, se: float | None, df: int | None) -> float | None:
    if expect == "greater":
        return one_sided_p(mean - margin, se, df)
    if expect == "less":
        return one_sided_p(-mean - margin, se, df)
    # Equivalence (two one-sided tests): the effect is above -margin and below +margin.
    above, below = one_sided_p(mean + margin, se, df), one_sided_p(margin - mean, se, df)
    return None if above is None or below is None else max(above, below)


UNITS = {"difference": "seeds", "spread": "seeds", "fp_share": "classes", "distance": "images"}
HYPOTHESIS = {"greater": "effect > {m:g}", "less": "effect < {neg:g}", "similar": "|effect| < {m:g}"}


def describe_test(claim: Mapping[str, Any]) -> str:
    kind, expect, margin = claim.get("kind", "difference"), claim["expect"], float(claim.get("margin", 0))
    test = "two one-sided paired t tests" if expect == "similar" else "one-sided paired t test"
    hypothesis = HYPOTHESIS[expect].format(m=margin, neg=-margin if margin else 0.0)
    return f"{test} over {UNITS[kind]}, H1: {hypothesis}; {LEVEL:.0%} t interval"


def evaluate_claim(
    claim_id: str, claim: Mapping[str, Any], inputs: Mapping[str, Any], reference: Mapping[str, Any]
) -> dict[str, Any]:
    """One claim's record in results/claims.json."""
    units = our_units(claim_id, claim, inputs)
    summary = paired_interval(list(units.values()), LEVEL)
    expect, margin = claim["expect"], float(claim.get("margin", 0))
    paper = paper_effect(claim, reference)
    return {
        "id": claim_id,
        "finding": claim["finding"],
        "source": claim["source"],
        "statement": claim["statement"],
        "kind": claim.get("kind", "difference"),
        "expect": expect,
        "margin": margin,
        "paper_effect": paper,
        "ours": summary.as_dict(),
        "units": units,
        "unit": UNITS[claim.get("kind", "difference")],
        "test": describe_test(claim),
        "p_value": _p_value(expect, margin, summary.mean, summary.se, summary.df),
        "same_sign_as_paper": None if paper is None or paper == 0 else (summary.mean > 0) == (paper > 0),
        "verdict": verdict(expect, margin, summary.low, summary.high),
        "provenance": sorted(_files(inputs)),
    }


def _files(inputs: Any) -> list[str]:
    if isinstance(inputs, str):
        return [inputs]
    if isinstance(inputs, Mapping):
        return [path for value in inputs.values() for path in _files(value)]
    return [path for value in inputs for path in _files(value)]


def evaluate_claims(
    claims: Mapping[str, Mapping[str, Any]], inputs: Mapping[str, Any], reference: Mapping[str, Any]
) -> dict[str, Any]:
    """Every claim in ``claims`` (id -> declaration), with ``inputs`` (id -> its files)."""
    records = []
    for claim_id, claim in claims.items():
        if claim_id not in inputs:
            raise InputError(f"claims: no input files given for claim {claim_id!r}")
        try:
            records.append(evaluate_claim(claim_id, claim, inputs[claim_id], reference))
        except InputError as err:
            raise InputError(f"claim {claim_id!r}: {err}") from None
    counts = {
        name: sum(r["verdict"] == name for r in records)
        for name in (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)
    }
    return {"level": LEVEL, "claims": records, "verdicts": counts}
