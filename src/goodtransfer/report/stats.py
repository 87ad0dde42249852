"""Paired statistics for the paper's claims: Student's t without scipy (not a dependency of this project).

The t distribution's CDF is the regularized incomplete beta function, evaluated by its continued fraction
(modified Lentz's method); quantiles come from bisecting that CDF. Accurate to ~1e-10, far below the
rounding of any number the report prints.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

_TINY = 1e-300
_EPS = 1e-15


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) (converges fast for x < (a + 1) / (a + b + 2))."""
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    fraction = d
    for m in range(1, 1000):
        # Even step d_{2m}, then odd step d_{2m+1} of the fraction's coefficients.
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            fraction *= c * d
        if abs(c * d - 1.0) < _EPS:
            return fraction
    raise ArithmeticError(f"incomplete beta: no convergence for a={a}, b={b}, x={x}")


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), for a, b > 0 and 0 <= x <= 1."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"incomplete beta: x = {x}; expected 0 <= x <= 1")
    if x in (0.0, 1.0):
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b  # the symmetry I_x = 1 - I_1-x


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"t distribution: df = {df}; expected > 0")
    tail = 0.5 * incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (t(0.975, 4) = 2.776)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"t quantile: p = {p}; expected 0 < p < 1")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:  # t(0.9995, 1) is ~637: a few doublings
        low, high = high, 2.0 * high
    for _ in range(200):
        middle = 0.5 * (low + high)
        if t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
        if high - low < 1e-12 * max(1.0, high):
            break
    return 0.5 * (low + high)


@dataclass(frozen=True)
class Paired:
    """Mean of paired differences, its standard error and a two-sided ``level`` interval from Student's t
    (None when n < 2: one difference says nothing about its own spread)."""

    n: int
    mean: float
    std: float | None
    se: float | None
    df: int | None
    low: float | None
    high: float | None
    level: float

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def paired_interval(differences: Sequence[float], level: float = 0.95) -> Paired:
    """Summary of the per-unit differences (one per seed, class or image): their mean and a t interval."""
    n = len(differences)
    if n == 0:
        raise ValueError("paired interval: no differences")
    if not all(math.isfinite(value) for value in differences):
        raise ValueError(f"paired interval: non-finite difference in {list(differences)}")
    mean = sum(differences) / n
    if n < 2:
        return Paired(n, mean, None, None, None, None, None, level)
    std = math.sqrt(sum((value - mean) ** 2 for value in differences) / (n - 1))
    se = std / math.sqrt(n)
    half = t_quantile(0.5 + level / 2.0, n - 1) * se
    return Paired(n, mean, std, se, n - 1, mean - half, mean + half, level)


def one_sided_p(mean_minus_margin: float, se: float | None, df: int | None) -> float | None:
    """P(T >= t) for t = (mean - margin) / se: the one-sided paired t test that the effect exceeds the
    margin; a zero spread gives 0 or 1 (every unit on one side); None without an interval."""
    if se is None or df is None:
        return None
    if se == 0.0:
        return 0.0 if mean_minus_margin > 0 else 1.0
    return 1.0 - t_cdf(mean_minus_margin / se, df)
