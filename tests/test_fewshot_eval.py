"""Few-shot summary: the CloserLookFewShot mean and 95% interval (population std)."""

from __future__ import annotations

import math

import pytest

from goodtransfer.evaluate.fewshot import mean_and_ci95
from goodtransfer.io import InputError


def test_hand_case_uses_population_std_over_sqrt_n() -> None:
    # [60, 70, 80, 90]: mean 75; squared deviations 225 + 25 + 25 + 225 = 500
    # population std = sqrt(500 / 4) = sqrt(125) = 11.180..; 1.96 * 11.180.. / sqrt(4) = 10.956..
    # (the sample std sqrt(500 / 3) would give 12.65.., which this rules out)
    mean, ci = mean_and_ci95([60.0, 70.0, 80.0, 90.0])
    assert mean == pytest.approx(75.0)
    assert ci == pytest.approx(1.96 * math.sqrt(125.0) / 2.0)
    assert ci == pytest.approx(10.9567, abs=1e-4)


def test_equal_accuracies_give_zero_interval() -> None:
    assert mean_and_ci95([0.5, 0.5, 0.5]) == (0.5, 0.0)


@pytest.mark.parametrize("accuracies", [[], [80.0]])
def test_fewer_than_two_episodes_are_rejected(accuracies: list[float]) -> None:
    with pytest.raises(InputError, match="at least 2 episodes"):
        mean_and_ci95(accuracies)


def test_non_finite_accuracy_is_rejected_naming_the_episode() -> None:
    with pytest.raises(InputError, match="episode 1 is not finite"):
        mean_and_ci95([80.0, float("nan"), 70.0])
