"""When a table cell is marked: our mean is further from the paper's than the seeds can explain.

The difference of two means, ours over n seeds (sample std s) and the paper's over its runs (MoCo
averages 5, with a run-to-run std sigma per metric), has standard error sqrt(s^2/n + sigma^2/runs). A cell
is marked when |ours - paper| exceeds q times that: q is Student's t(level, n - 1) when s is ours; with
one seed s is unknown and the paper's sigma stands in for it, with the normal quantile. A metric with one
seed and no reported spread is not judged: nothing says how far a single run may fall.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

from goodtransfer.io import InputError, is_finite_number
from goodtransfer.report.stats import t_quantile

MARK = "*"  # after our number in a table; the note under the table prints the rule


@dataclass(frozen=True)
class Tolerance:
    level: float = 0.95
    paper_runs: int = 5
    paper_std: Mapping[str, float] = field(default_factory=dict)  # column key -> run-to-run std

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any], where: str = "tolerance") -> Tolerance:
        """Settings checked: level in (0, 1), paper_runs >= 1, each std finite and >= 0."""
        level = settings.get("level", 0.95)
        if isinstance(level, bool) or not isinstance(level, int | float) or not 0 < level < 1:
            raise InputError(f"{where}.level: got {level!r}; expected a number between 0 and 1")
        runs = settings.get("paper_runs", 5)
        if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
            raise InputError(f"{where}.paper_runs: got {runs!r}; expected a whole number >= 1")
        stds = settings.get("paper_std") or {}
        for key, value in stds.items():
            if not is_finite_number(value) or value < 0:
                raise InputError(f"{where}.paper_std.{key}: got {value!r}; expected a finite number >= 0")
        return cls(float(level), runs, {key: float(value) for key, value in stds.items()})

    def as_dict(self) -> dict[str, Any]:
        return {"level": self.level, "paper_runs": self.paper_runs, "paper_std": dict(self.paper_std)}

    def allowed(self, key: str, std: float | None, n: int) -> float | None:
        """The largest |ours - paper| the seeds explain for column ``key``; None: not judged."""
        sigma = self.paper_std.get(key)
        upper = 0.5 + self.level / 2
        if n >= 2 and std is not None:
            ours, quantile = std, t_quantile(upper, n - 1)
        elif sigma is not None:
            ours, quantile = sigma, NormalDist().inv_cdf(upper)
        else:
            return None
        return quantile * math.sqrt(ours**2 / n + (sigma or 0.0) ** 2 / self.paper_runs)

    def rule(self, columns: Sequence[tuple[str, str]]) -> str:
        """The note under a table: the rule, with the paper's spread of the table's columns (key, label)."""
        spreads = [f"{label} {self.paper_std[key]:g}" for key, label in columns if key in self.paper_std]
        known = (
            f"the paper's run-to-run std ({', '.join(spreads)})" if spreads else "the paper's run-to-run std"
        )
        return (
            f"our mean differs from the paper's by more than the seeds explain: |ours - paper| > "
            f"q sqrt(s^2/n + sigma^2/{self.paper_runs}), s our std over n seeds, sigma {known}, q Student's "
            f"t({0.5 + self.level / 2:g}, n-1); with one seed s = sigma and q the normal quantile. "
            "A cell with one seed and no reported spread is not marked."
        )
