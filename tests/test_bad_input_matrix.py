"""The bad-input matrix: every kind of bad input (config, names, data, checkpoints, non-finite training,
kills) ends with a non-zero exit, a message naming the file or key and what was expected, no traceback,
and no final output that looks finished."""

from __future__ import annotations

import pytest

from tests.bad_inputs import config as config_cases
from tests.bad_inputs import data as data_cases
from tests.bad_inputs import training as training_cases
from tests.bad_inputs.common import Case

CASES: list[Case] = []
for _module in (config_cases, data_cases, training_cases):  # each area module contributes its CASES
    CASES += _module.CASES


def test_matrix_covers_at_least_forty_kinds():
    kinds = [case.kind for case in CASES]
    assert len(set(kinds)) == len(kinds), "duplicate kinds"
    assert len(kinds) >= 40, kinds


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.kind)
def test_bad_input_fails_clearly_and_leaves_no_output(case: Case, tmp_path):
    outcome = case.make(tmp_path)
    assert outcome.returncode != 0, f"{case.kind}: exited 0\n{outcome.message[-2000:]}"
    if case.returncode is not None:
        assert outcome.returncode == case.returncode, outcome.message[-2000:]
    missing = [fragment for fragment in case.expect if fragment not in outcome.message]
    assert not missing, f"{case.kind}: message lacks {missing}:\n{outcome.message[-3000:]}"
    assert "Traceback (most recent call last)" not in outcome.message, outcome.message[-3000:]
    left = [str(path) for path in outcome.outputs if path.exists()]
    assert not left, f"{case.kind}: final outputs exist after the failure: {left}"
