"""A table cell is marked only when our mean is further from the paper's than the seeds can explain."""

from __future__ import annotations

import math

import pytest

from goodtransfer.io import InputError, write_json
from goodtransfer.report.tables import build_table
from goodtransfer.report.tolerance import Tolerance

MOCO_VOC = Tolerance(0.95, 5, {"VOC07_AP": 0.2, "VOC07_AP75": 0.4})


def test_one_seed_uses_the_papers_spread_for_ours_with_the_normal_quantile() -> None:
    assert MOCO_VOC.allowed("VOC07_AP", None, 1) == pytest.approx(1.959964 * math.sqrt(0.04 + 0.04 / 5))
    assert MOCO_VOC.allowed("VOC07_AP75", None, 1) == pytest.approx(1.959964 * math.sqrt(0.16 * 1.2))


def test_several_seeds_use_our_std_with_students_t_and_the_papers_spread() -> None:
    # n = 5, s = 0.5: t(0.975, 4) = 2.776 times sqrt(0.25/5 + 0.04/5).
    assert MOCO_VOC.allowed("VOC07_AP", 0.5, 5) == pytest.approx(2.776445 * math.sqrt(0.05 + 0.008), rel=1e-6)
    # No reported spread: ours alone.
    assert MOCO_VOC.allowed("ImageNet_Acc", 0.5, 5) == pytest.approx(2.776445 * 0.5 / math.sqrt(5), rel=1e-6)


def test_one_seed_without_a_reported_spread_is_not_judged() -> None:
    assert MOCO_VOC.allowed("ImageNet_Acc", None, 1) is None


@pytest.mark.parametrize(
    ("settings", "message"),
    [({"level": 1.5}, "tolerance.level: got 1.5"), ({"paper_runs": 0}, "tolerance.paper_runs: got 0"),
     ({"paper_std": {"AP": -1}}, "tolerance.paper_std.AP: got -1")],
)  # fmt: skip
def test_bad_settings_are_refused_naming_the_key(settings, message) -> None:
    with pytest.raises(InputError, match=message):
        Tolerance.from_dict(settings)


def _table(tmp_path, values: dict[int, float]) -> dict:
    files = []
    for seed, value in values.items():
        write_json(tmp_path / f"seed{seed}/metrics.json", {"AP": value})
        files.append(str(tmp_path / f"seed{seed}/metrics.json"))
    declaration = {
        "caption": "c", "row_header": "r", "reference": "t",
        "columns": [
            {"key": "VOC07_AP", "label": "AP", "group": "VOC07", "protocol": "voc07", "metric": "AP"}
        ],
        "groups": [{"label": "g", "rows": [{"label": "MoCo", "run": "moco"}]}],
    }  # fmt: skip
    reference = {"t": {"rows": [{"method": "MoCo", "VOC07_AP": 48.5}]}}
    return build_table("t", declaration, {"voc07/moco": files}, reference, [], MOCO_VOC)


def test_marks_follow_the_seeds_and_the_note_prints_the_rule(tmp_path) -> None:
    near = _table(tmp_path / "near", {0: 48.9})["groups"][0]["rows"][0]["cells"]["VOC07_AP"]
    assert near["deviates"] is False  # 0.4 < 0.43 with one seed
    far = _table(tmp_path / "far", {0: 49.0})["groups"][0]["rows"][0]["cells"]["VOC07_AP"]
    assert far["deviates"] is True
    # Two noisy seeds with the same 0.5 offset: t(0.975, 1) = 12.7 widens the tolerance; not marked.
    table = _table(tmp_path / "noisy", {0: 48.0, 1: 50.0})
    assert table["groups"][0]["rows"][0]["cells"]["VOC07_AP"]["deviates"] is False
    assert any("VOC07 AP 0.2" in note and "seeds explain" in note for note in table["notes"])
