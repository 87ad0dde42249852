"""The paper's claims: Student's t against printed table values, paired intervals and verdicts, claims
evaluated from real metrics files, the paper's own effects from reference_results.yaml, the Claims section."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from goodtransfer import config as gtc
from goodtransfer.config_check import check_config
from goodtransfer.io import InputError, read_yaml, write_json
from goodtransfer.report.claims import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    evaluate_claims,
    paper_effect,
    verdict,
)
from goodtransfer.report.render import render_report
from goodtransfer.report.stats import incomplete_beta, one_sided_p, paired_interval, t_cdf, t_quantile

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = read_yaml(ROOT / "paper/reference/reference_results.yaml")
CONFIG = yaml.safe_load((ROOT / "config.yaml").read_text())


# Student's t quantiles as printed in every statistics table (two-sided 95% and 90%).
@pytest.mark.parametrize(
    ("p", "df", "expected"),
    [(0.975, 1, 12.706), (0.975, 2, 4.303), (0.975, 4, 2.776), (0.975, 9, 2.262), (0.975, 30, 2.042),
     (0.95, 1, 6.314), (0.95, 4, 2.132), (0.995, 4, 4.604)],
)  # fmt: skip
def test_t_quantile_matches_printed_tables(p: float, df: int, expected: float) -> None:
    assert t_quantile(p, df) == pytest.approx(expected, abs=5e-4)
    assert t_quantile(1 - p, df) == pytest.approx(-expected, abs=5e-4)
    assert t_cdf(t_quantile(p, df), df) == pytest.approx(p, abs=1e-9)


def test_incomplete_beta_matches_the_binomial_sum() -> None:
    # I_x(a, n - a + 1) = P(Binomial(n, x) >= a): I_0.4(2, 3) = P(Bin(4, 0.4) >= 2) = 0.5248.
    assert incomplete_beta(2, 3, 0.4) == pytest.approx(0.5248, abs=1e-12)
    assert t_cdf(0.0, 3) == pytest.approx(0.5)
    assert t_cdf(1.0, 1) == pytest.approx(0.75)  # Cauchy: 1/2 + atan(1)/pi


def test_paired_interval_of_known_differences() -> None:
    summary = paired_interval([1.0, 2.0, 3.0])
    half = 4.302653 / math.sqrt(3)  # t(0.975, 2) * std 1 / sqrt(3)
    assert (summary.n, summary.mean, summary.std, summary.df) == (3, 2.0, 1.0, 2)
    assert summary.low == pytest.approx(2.0 - half, abs=1e-6)
    assert summary.high == pytest.approx(2.0 + half, abs=1e-6)
    assert one_sided_p(summary.mean, summary.se, summary.df) == pytest.approx(1 - t_cdf(2 * math.sqrt(3), 2))


def test_one_pair_gives_no_interval_and_an_inconclusive_verdict() -> None:
    summary = paired_interval([0.7])
    assert summary.low is None and summary.high is None and summary.std is None
    assert verdict("greater", 0.0, summary.low, summary.high) == INCONCLUSIVE


@pytest.mark.parametrize(
    ("expect", "margin", "low", "high", "expected"),
    [("greater", 0, 0.1, 0.5, REPRODUCED), ("greater", 0, -0.1, 0.5, INCONCLUSIVE),
     ("greater", 0, -0.5, -0.1, NOT_REPRODUCED), ("greater", 0.2, 0.1, 0.5, INCONCLUSIVE),
     ("less", 0, -0.5, -0.1, REPRODUCED), ("less", 0, 0.1, 0.4, NOT_REPRODUCED),
     ("similar", 0.5, -0.3, 0.4, REPRODUCED), ("similar", 0.5, -0.3, 0.6, INCONCLUSIVE),
     ("similar", 0.5, 0.6, 0.9, NOT_REPRODUCED)],
)  # fmt: skip
def test_verdict_follows_where_the_interval_lies(expect, margin, low, high, expected) -> None:
    assert verdict(expect, margin, low, high) == expected


def _metrics(root: Path, protocol: str, run: str, values: dict[int, float], metric: str = "AP") -> list[str]:
    paths = []
    for seed, value in values.items():
        path = root / f"results/{protocol}/{run}/seed{seed}/metrics.json"
        write_json(path, {metric: value, "AP50": value + 30})
        paths.append(str(path))
    return paths


CLAIM = {
    "finding": "Sec. 3", "source": "Table 3", "statement": "Exemplar-v2 beats MoCo-v2 on VOC07",
    "protocol": "voc07", "metric": "AP", "a": "mocov2-frcgb", "b": "exemplarv2", "expect": "greater",
    "paper": {"table": "table3", "key": "VOC07_AP", "a": "MoCo-v2", "b": "Exemplar-v2"},
}  # fmt: skip


def test_claim_pairs_seeds_and_lists_its_files(tmp_path: Path) -> None:
    inputs = {
        "voc07/mocov2-frcgb": _metrics(tmp_path, "voc07", "mocov2-frcgb", {0: 40.0, 1: 42.0, 2: 41.0}),
        "voc07/exemplarv2": _metrics(tmp_path, "voc07", "exemplarv2", {0: 41.0, 1: 43.2, 2: 41.8}),
    }
    result = evaluate_claims({"c": CLAIM}, {"c": inputs}, REFERENCE)
    record = result["claims"][0]
    assert record["units"] == {"0": pytest.approx(1.0), "1": pytest.approx(1.2), "2": pytest.approx(0.8)}
    assert record["ours"]["mean"] == pytest.approx(1.0) and record["ours"]["n"] == 3
    assert record["paper_effect"] == pytest.approx(0.3)  # Table 3: 48.8 - 48.5
    assert record["ours"]["low"] == pytest.approx(1.0 - 4.302653 * 0.2 / math.sqrt(3), abs=1e-6)
    assert record["verdict"] == REPRODUCED  # [0.50, 1.50] lies above 0
    assert sorted(record["provenance"]) == sorted(inputs["voc07/mocov2-frcgb"] + inputs["voc07/exemplarv2"])
    assert "paired t test over seeds" in record["test"]


def test_a_changed_seed_changes_the_interval(tmp_path: Path) -> None:
    inputs = {
        "voc07/mocov2-frcgb": _metrics(tmp_path, "voc07", "mocov2-frcgb", {0: 40.0, 1: 42.0}),
        "voc07/exemplarv2": _metrics(tmp_path, "voc07", "exemplarv2", {0: 41.0, 1: 43.0}),
    }
    before = evaluate_claims({"c": CLAIM}, {"c": inputs}, REFERENCE)["claims"][0]
    _metrics(tmp_path, "voc07", "exemplarv2", {1: 45.0})
    after = evaluate_claims({"c": CLAIM}, {"c": inputs}, REFERENCE)["claims"][0]
    assert before["ours"]["std"] == 0.0 and before["verdict"] == REPRODUCED
    assert after["ours"]["mean"] == pytest.approx(2.0) and after["ours"]["high"] > before["ours"]["high"]
    assert after["verdict"] == INCONCLUSIVE  # [2 - 12.7 * 1, 2 + 12.7 * 1] straddles 0


@pytest.mark.parametrize(
    ("value", "message"), [(None, "is null"), ("40", "is '40'; expected a finite number")]
)
def test_undefined_or_non_numeric_metrics_fail_naming_file_and_field(tmp_path, value, message) -> None:
    inputs = {
        "voc07/mocov2-frcgb": _metrics(tmp_path, "voc07", "mocov2-frcgb", {0: 40.0}),
        "voc07/exemplarv2": _metrics(tmp_path, "voc07", "exemplarv2", {0: 41.0}),
    }
    write_json(inputs["voc07/exemplarv2"][0], {"AP": value})
    with pytest.raises(InputError, match=rf"exemplarv2/seed0/metrics.json: field 'AP' {message}"):
        evaluate_claims({"c": CLAIM}, {"c": inputs}, REFERENCE)


def test_nan_in_a_metrics_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "results/voc07/exemplarv2/seed0/metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"AP": NaN}')
    inputs = {
        "voc07/mocov2-frcgb": _metrics(tmp_path, "voc07", "mocov2-frcgb", {0: 40.0}),
        "voc07/exemplarv2": [str(path)],
    }
    with pytest.raises(InputError, match="exemplarv2/seed0/metrics.json"):
        evaluate_claims({"c": CLAIM}, {"c": inputs}, REFERENCE)


def test_versus_metric_and_spread_claims(tmp_path: Path) -> None:
    gap = {**CLAIM, "versus_metric": "AP50", "a": "s", "b": "m"}
    inputs = {
        "voc07/s": _metrics(tmp_path, "voc07", "s", {0: 40.0}),
        "voc07/m": _metrics(tmp_path, "voc07", "m", {0: 43.0}),
    }
    # _metrics writes AP50 = AP + 30: the AP gap and the AP50 gap are equal, their difference is 0.
    assert evaluate_claims({"g": gap}, {"g": inputs}, {**REFERENCE, "table3": REFERENCE["table3"]})["claims"][
        0
    ]["ours"]["mean"] == pytest.approx(0.0)
    spread = {**CLAIM, "kind": "spread", "a": ["s", "m"], "b": ["x", "y"], "paper": None}
    inputs |= {
        "voc07/x": _metrics(tmp_path, "voc07", "x", {0: 40.0}),
        "voc07/y": _metrics(tmp_path, "voc07", "y", {0: 41.0}),
    }
    record = evaluate_claims({"s": spread}, {"s": inputs}, REFERENCE)["claims"][0]
    assert record["ours"]["mean"] == pytest.approx(3.0 - 1.0) and record["paper_effect"] is None


def test_every_configured_claim_holds_on_the_papers_own_numbers() -> None:
    """Each claim's paper effect is computed from reference_results.yaml and points the claimed way."""
    effects = {}
    for name in CONFIG["report"]["claims"]:
        claim = CONFIG["claims"][name]
        effect = paper_effect(claim, REFERENCE)
        margin = claim.get("margin", 0)
        assert {"greater": effect > margin, "less": effect < -margin, "similar": abs(effect) < margin}[
            claim["expect"]
        ], (name, effect)
        effects[name] = effect
    assert len(effects) >= 12
    assert effects["table3-exemplarv2-voc07"] == pytest.approx(0.3)
    assert effects["table7-ap75-gap-exceeds-ap50-gap"] == pytest.approx(3.8)  # (52.7-48.9) - (76.8-76.8)
    assert effects["table2-moco-spread-smaller"] == pytest.approx((53.3 - 37.5) - (48.5 - 45.3))
    assert effects["figure7-supervised-more-localisation-errors"] == pytest.approx(53.25 - 45.7)
    assert effects["figure6-moco-reconstructs-closer"] == pytest.approx(5.59 - 6.43)
    assert effects["table10-queue-alone-no-gain"] == pytest.approx(0.1)


def test_claim_seeds_add_seeds_only_to_the_compared_runs() -> None:
    assert gtc.downstream_seeds(CONFIG, "voc07", "mocov2-frcgb") == [0, 1]
    assert gtc.downstream_seeds(CONFIG, "voc07", "exemplarv2") == [0, 1]
    assert gtc.downstream_seeds(CONFIG, "voc07", "supervised-frcgb") == [0]
    assert gtc.downstream_seeds(CONFIG, "coco", "exemplarv2") == [0]
    paper_like = {**CONFIG, "seeds": {"default": 1, "claims": {"coco": 3}}}
    assert gtc.downstream_seeds(paper_like, "coco", "exemplarv2") == [0, 1, 2]
    assert gtc.downstream_seeds(paper_like, "coco", "supervised-f") == [0]


@pytest.mark.parametrize(
    ("change", "message"),
    [({"a": "mocov9"}, "claims.table3-exemplarv2-voc07.a: 'mocov9' is not a pretraining run"),
     ({"protocol": "voc99"}, "claims.table3-exemplarv2-voc07.protocol: 'voc99' is not a protocol"),
     ({"expect": "similar"}, "claims.table3-exemplarv2-voc07.margin: expect: similar needs a margin")],
)  # fmt: skip
def test_config_check_names_a_bad_claim(change, message) -> None:
    config = json.loads(json.dumps(CONFIG))
    config["claims"]["table3-exemplarv2-voc07"].update(change)
    with pytest.raises(InputError, match=message):
        check_config(config)


def test_report_claims_must_name_declared_claims() -> None:
    config = json.loads(json.dumps(CONFIG))
    config["report"]["claims"] = ["no-such-claim"]
    with pytest.raises(InputError, match=r"report.claims\[0\]: 'no-such-claim' is not a claim"):
        check_config(config)


def test_claims_section_is_rendered_with_escaped_text(tmp_path: Path) -> None:
    inputs = {
        "voc07/mocov2-frcgb": _metrics(tmp_path, "voc07", "mocov2-frcgb", {0: 40.0, 1: 42.0}),
        "voc07/exemplarv2": _metrics(tmp_path, "voc07", "exemplarv2", {0: 41.0, 1: 43.5}),
    }
    claim = {**CLAIM, "statement": "AP_75 gap & 50% more"}
    claims = evaluate_claims({"c": claim}, {"c": inputs}, REFERENCE)
    context = {"scale_note": "test", "provenance": []}
    tex = render_report([], context, ROOT / "paper", claims=claims)
    assert r"\section{Claims}" in tex and r"AP\_75 gap \& 50\% more" in tex
    assert "+0.30" in tex and "+1.25" in tex and "[" in tex and INCONCLUSIVE in tex
    assert r"& same & " in tex and "Same sign as the paper: 1 of 1 claims" in tex


def test_claims_section_says_when_our_effect_points_against_the_paper(tmp_path: Path) -> None:
    inputs = {  # Exemplar-v2 below MoCo-v2 on both seeds: the paper's +0.30 the other way round
        "voc07/mocov2-frcgb": _metrics(tmp_path, "voc07", "mocov2-frcgb", {0: 42.0, 1: 44.0}),
        "voc07/exemplarv2": _metrics(tmp_path, "voc07", "exemplarv2", {0: 41.0, 1: 43.5}),
    }
    claims = evaluate_claims({"c": CLAIM}, {"c": inputs}, REFERENCE)
    assert claims["claims"][0]["same_sign_as_paper"] is False
    tex = render_report([], {"scale_note": "test", "provenance": []}, ROOT / "paper", claims=claims)
    assert r"& opposite & " in tex and "Same sign as the paper: 0 of 1 claims" in tex


def test_pretrain_seeds_add_replicas_pretrained_from_other_seeds() -> None:
    config = json.loads(json.dumps({**CONFIG, "pretrain_seeds": {"exemplarv2": 3}}))
    gtc.add_pretrain_replicas(config)
    assert gtc.pretrain_replicas(config, "exemplarv2") == ["exemplarv2", "exemplarv2+s1", "exemplarv2+s2"]
    seeds = [gtc.pretrain_spec(config, run)["seed"] for run in gtc.pretrain_replicas(config, "exemplarv2")]
    assert seeds == [0, 1, 2]
    base, replica = gtc.pretrain_spec(config, "exemplarv2"), gtc.pretrain_spec(config, "exemplarv2+s1")
    assert {k: v for k, v in base.items() if k not in ("seed", "run")} == {
        k: v for k, v in replica.items() if k not in ("seed", "run")
    }
    # The replica of a claim-bearing run gets the claim's fine-tuning seeds too.
    assert gtc.downstream_seeds(config, "voc07", "exemplarv2+s2") == [0, 1]
    check_config(config)
    with pytest.raises(InputError, match="pretrain_seeds: 'nope' is not a run"):
        gtc.add_pretrain_replicas({**config, "pretrain_seeds": {"nope": 2}})


def test_replicas_pair_with_replicas_of_the_other_run(tmp_path: Path) -> None:
    inputs = {
        "voc07/mocov2-frcgb": _metrics(tmp_path, "voc07", "mocov2-frcgb", {0: 40.0})
        + _metrics(tmp_path, "voc07", "mocov2-frcgb+s1", {0: 42.0}),
        "voc07/exemplarv2": _metrics(tmp_path, "voc07", "exemplarv2", {0: 41.0})
        + _metrics(tmp_path, "voc07", "exemplarv2+s1", {0: 42.5}),
    }
    record = evaluate_claims({"c": CLAIM}, {"c": inputs}, REFERENCE)["claims"][0]
    assert record["units"] == {"0": pytest.approx(1.0), "s1:0": pytest.approx(0.5)}
    assert record["ours"]["n"] == 2
