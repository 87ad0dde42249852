"""Atomic outputs: nothing half-written is left under the final name, and files get normal modes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from goodtransfer.io import InputError, atomic_path, read_json, write_json


def test_failed_write_leaves_neither_target_nor_temporary_file(tmp_path):
    target = tmp_path / "metrics.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text('{"AP": ')
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_written_file_has_the_umask_mode_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "m.json", {"AP": 1.0})
    finally:
        os.umask(old)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o644
    assert read_json(tmp_path / "m.json") == {"AP": 1.0}


def test_write_json_refuses_nan_naming_its_key(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"table.json: cells.AP.tolerance is nan is not finite"):
        write_json(tmp_path / "table.json", {"cells": {"AP": {"tolerance": float("nan")}}})
    assert not (tmp_path / "table.json").exists()
