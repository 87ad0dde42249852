"""Test order for `make test`'s two workers (pytest-xdist, whole files per worker, handed out in collection
order): the files that take minutes go first, so that the short ones fill the other worker meanwhile
instead of one slow file running alone at the end. The order within each file is unchanged."""

from __future__ import annotations

import pytest

# The slowest files of `make test`, slowest first (the durations it prints at the end).
SLOW_FIRST = (
    "test_pretrain_beats_random.py",
    "test_slurm.py",
    "test_full_report.py",
    "test_readme_commands.py",
    "test_transfer_workflow.py",
    "test_stale_state.py",
    "test_workflow.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))  # stable: files keep their order
