"""results/claims.json reshaped for the report's Claims section: one row per claim, numbers formatted.

Strings stay plain ``str`` (the template environment escapes them); numbers come back as ``LatexSafe``
from :func:`goodtransfer.report.latex.format_number`.
"""

from __future__ import annotations

from typing import Any

from goodtransfer.io import InputError, is_finite_number
from goodtransfer.report.latex import LatexSafe, format_number

DECIMALS = 2
FIELDS = ("id", "finding", "source", "statement", "verdict", "test", "unit")
# Whether our mean effect points the paper's way: a weaker reading than the verdict, which one pair can give.
SIGN = {True: "same", False: "opposite", None: "--"}


def _signed(value: float | None) -> LatexSafe:
    if value is None:
        return format_number(None, DECIMALS)
    text = format_number(value, DECIMALS)
    return LatexSafe(f"+{text}" if value > 0 else text)


def _p(value: Any) -> LatexSafe:
    if value is None:
        return format_number(None)
    if value < 0.001:
        return LatexSafe("$<$0.001")
    return format_number(value, 3)


def claim_row(record: Any, where: str) -> dict[str, Any]:
    """One claim's cells: source, statement, paper effect, our mean, interval, n, p and verdict."""
    if not isinstance(record, dict):
        raise InputError(f"{where}: expected an object, got {type(record).__name__}")
    required = (*FIELDS, "ours", "paper_effect", "p_value", "same_sign_as_paper")
    missing = [field for field in required if field not in record]
    if missing:
        raise InputError(f"{where}: missing fields {missing}")
    ours = record["ours"]
    for key in ("mean", "low", "high"):
        value = ours.get(key)
        if value is not None and not is_finite_number(value):
            raise InputError(f"{where}.ours.{key}: expected a finite number or null, got {value!r}")
    interval = (
        format_number(None)
        if ours.get("low") is None
        else LatexSafe(f"[{_signed(ours['low'])}, {_signed(ours['high'])}]")
    )
    return {
        **{field: str(record[field]) for field in FIELDS},
        "paper": _signed(record["paper_effect"]),
        "ours": _signed(ours["mean"]),
        "interval": interval,
        "n": str(ours["n"]),
        "p": _p(record["p_value"]),
        "sign": SIGN[record["same_sign_as_paper"]],
    }


def claims_view(claims: Any, where: str = "claims") -> dict[str, Any]:
    """The Claims section: rows grouped by finding (in first-seen order), the verdict counts, the tests."""
    if not isinstance(claims, dict) or not isinstance(claims.get("claims"), list):
        raise InputError(f"{where}: expected an object with a 'claims' list")
    rows = [claim_row(record, f"{where}.claims[{index}]") for index, record in enumerate(claims["claims"])]
    findings: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        findings.setdefault(row["finding"], []).append(row)
    counts = claims.get("verdicts") or {}
    signs = [
        record["same_sign_as_paper"]
        for record in claims["claims"]
        if record["same_sign_as_paper"] is not None
    ]
    return {
        "same_sign": f"{sum(signs)} of {len(signs)}",
        "findings": [{"label": label, "rows": members} for label, members in findings.items()],
        "counts": [{"verdict": str(verdict), "count": str(count)} for verdict, count in counts.items()],
        "tests": sorted({row["test"] for row in rows}),
        "level": format_number(100 * float(claims.get("level", 0.95)), 0),
    }
