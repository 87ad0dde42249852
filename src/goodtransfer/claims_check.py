"""The config's ``claims`` checked at start-up (see goodtransfer.config_check): every run, protocol and
figure a claim names exists, and each kind has the fields it reads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from goodtransfer.config_check import check_run_ref, detection_protocols, expect_in, fail, section

NEEDS = {
    "difference": ("protocol", "metric"),
    "spread": ("protocol", "metric"),
    "fp_share": ("protocol", "metric"),
    "distance": ("figure",),
}


def check_claims(config: Mapping[str, Any]) -> None:
    claims = config.get("claims") or {}
    for index, name in enumerate(config["report"].get("claims", [])):
        expect_in(f"report.claims[{index}]", name, claims, "a claim of claims")
    protocols = list(section(config, "downstream"))
    for protocol in config.get("seeds", {}).get("claims", {}):
        expect_in("seeds.claims", protocol, protocols, "a protocol")
    for name, claim in claims.items():
        check_claim(config, f"claims.{name}", claim)
    check_pretrain_seeds(config)


def check_claim(config: Mapping[str, Any], key: str, claim: Mapping[str, Any]) -> None:
    kind = claim.get("kind", "difference")
    for field in NEEDS[kind]:
        if field not in claim:
            fail(key, f"a {kind} claim needs {field!r}")
    if claim["expect"] == "similar" and not claim.get("margin"):
        fail(f"{key}.margin", "expect: similar needs a margin > 0 (the largest effect still 'similar')")
    if kind == "distance":
        check_distance(config, key, claim)
        return
    allowed = detection_protocols(config) if kind == "fp_share" else list(section(config, "downstream"))
    expect_in(
        f"{key}.protocol",
        claim["protocol"],
        allowed,
        "a protocol" + (" of task voc_detection" * (kind == "fp_share")),
    )
    lists = kind == "spread"
    for side in ("a", "b"):
        if isinstance(claim[side], list) != lists:
            fail(f"{key}.{side}", f"expected {'a list of runs' if lists else 'one run'} for a {kind} claim")
        for run in claim[side] if lists else [claim[side]]:
            check_run_ref(config, f"{key}.{side}", run, epochs_allowed=False)
    if claim.get("baseline") and kind != "difference":
        fail(f"{key}.baseline", f"only a difference claim has a baseline, not a {kind} claim")
    for side, run in (claim.get("baseline") or {}).items():
        check_run_ref(config, f"{key}.baseline.{side}", run, epochs_allowed=False)


def check_distance(config: Mapping[str, Any], key: str, claim: Mapping[str, Any]) -> None:
    figures = section(config, "figures")
    inversions = [name for name, entry in figures.items() if entry["kind"] == "inversion"]
    expect_in(f"{key}.figure", claim["figure"], inversions, "an inversion figure")
    labels = [item["label"] for item in figures[claim["figure"]]["runs"]]
    for side in ("a", "b"):
        expect_in(f"{key}.{side}", claim[side], labels, f"a run label of figures.{claim['figure']}")


def check_pretrain_seeds(config: Mapping[str, Any]) -> None:
    runs = config["pretrain"]["runs"]
    for run in config.get("pretrain_seeds") or {}:
        expect_in("pretrain_seeds", run, runs, "a pretraining run")
