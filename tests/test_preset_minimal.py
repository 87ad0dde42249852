"""The presets state only what differs from what they are merged over, and what they resolve to is pinned.

Snakemake merges ``--configfile presets/paper.yaml`` over config.yaml (mappings recursively, lists and
scalars replaced), and presets/released.yaml over both. A preset value equal to the one beneath it is
noise that hides the real differences; a key the preset leaves out silently takes config.yaml's value, so
every job spec the paper presets resolve to is pinned by digest (tests/configs/paper_specs.json).

Update the digests after a deliberate change:  PYTHONPATH=src python -m tests.test_preset_minimal --update
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from snakemake.common.configfile import load_configfile

from goodtransfer import config as gtc
from goodtransfer.io import read_yaml

ROOT = Path(__file__).resolve().parents[1]
DIGESTS = ROOT / "tests/configs/paper_specs.json"
UPDATE = "PYTHONPATH=src python -m tests.test_preset_minimal --update"
LAYERS = {"paper": ("presets/paper.yaml",), "paper+released": ("presets/paper.yaml", "presets/released.yaml")}


def _canonical(value: Any) -> str:
    # Typed: 1, 1.0 and true differ in a spec, so a preset stating one over another is not a repeat.
    return json.dumps(value, sort_keys=True)


def repeated_leaves(preset: Mapping[str, Any], base: Mapping[str, Any], path: str = "") -> Iterator[str]:
    """Key paths where ``preset`` states the value ``base`` already has (a list is one leaf)."""
    for key, value in preset.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in base:
            continue
        if isinstance(value, Mapping) and isinstance(base[key], Mapping):
            yield from repeated_leaves(value, base[key], where)
        elif _canonical(value) == _canonical(base[key]):
            yield where


def merged(*overlays: str) -> dict[str, Any]:
    config = read_yaml(ROOT / "config.yaml")
    for overlay in overlays:
        config = gtc.deep_merge(config, read_yaml(ROOT / overlay))
    return config


@pytest.mark.parametrize("layers", list(LAYERS.values()), ids=list(LAYERS))
def test_preset_states_no_value_of_the_configs_beneath_it(layers):
    *beneath, preset = layers
    repeats = list(repeated_leaves(read_yaml(ROOT / preset), merged(*beneath)))
    assert not repeats, (
        f"{preset} repeats the value merged in from {' + '.join(['config.yaml', *beneath])} at "
        f"{', '.join(repeats)}; delete these keys from {preset} (the merge supplies them)"
    )


@pytest.mark.parametrize("preset", ["presets/paper.yaml", "presets/released.yaml"])
def test_preset_reads_the_same_in_snakemake_and_in_the_tests(preset):
    # Snakemake reads config files through yte; YAML anchors and merge keys (<<) must mean the same there.
    assert load_configfile(str(ROOT / preset)) == read_yaml(ROOT / preset)


def resolved_specs(config: Mapping[str, Any]) -> dict[str, Any]:
    """Every job spec the workflow derives from ``config``, and the raw sections the rules read directly."""
    config = json.loads(json.dumps(config))
    gtc.add_pretrain_replicas(config)  # as the Snakefile does: pretrain_seeds replicas are runs
    specs: dict[str, Any] = {
        f"pretrain/{run}": gtc.pretrain_spec(config, run) for run in gtc.pretrain_runs(config)
    }
    for protocol in gtc.downstream_protocols(config):
        if "lr_by_method" in gtc.downstream_entry(config, protocol):  # the spec depends on the run
            for run in gtc.pretrain_runs(config):
                specs[f"downstream/{protocol}/{run}"] = gtc.downstream_spec(config, protocol, run)
        else:
            specs[f"downstream/{protocol}"] = gtc.downstream_spec(config, protocol, "RUN")
        specs[f"downstream/{protocol}/extra_train"] = gtc.extra_train_sets(config, protocol)
    protocols = [*gtc.downstream_protocols(config), "default"]
    specs["seeds"] = {protocol: gtc.downstream_seeds(config, protocol) for protocol in protocols}
    specs["claim_seeds"] = {
        f"{claim['protocol']}/{run}": gtc.downstream_seeds(config, claim["protocol"], run)
        for claim in (config["claims"][name] for name in gtc.checked_claims(config))
        for run in gtc.claim_replicas(config, claim)
    }
    specs["claims"] = {name: config["claims"][name] for name in gtc.checked_claims(config)}
    for table, declaration in config["tables"].items():
        specs[f"tables/{table}"] = {**declaration, "runs": gtc.table_runs(config, table)}
    specs.update({f"figures/{name}": entry for name, entry in config.get("figures", {}).items()})
    specs.update({f"datasets/{name}": gtc.dataset_of(config, name) for name in config["datasets"]})
    specs.update({key: config[key] for key in ("report", "compute", "seed", "threads_per_job")})
    return specs


def spec_digests() -> dict[str, dict[str, str]]:
    return {
        name: {key: hashlib.sha256(_canonical(spec).encode()).hexdigest()[:16] for key, spec in specs.items()}
        for name, specs in ((name, resolved_specs(merged(*layers))) for name, layers in LAYERS.items())
    }


def test_paper_job_specs_are_the_pinned_ones():
    pinned, now = json.loads(DIGESTS.read_text()), spec_digests()
    changed = [
        f"{layer}: {key}"
        for layer in sorted(pinned.keys() | now.keys())
        for key in sorted(pinned.get(layer, {}).keys() | now.get(layer, {}).keys())
        if pinned.get(layer, {}).get(key) != now.get(layer, {}).get(key)
    ]
    assert not changed, (
        f"the paper presets now resolve to other job specs (config.yaml, presets/paper.yaml or "
        f"presets/released.yaml changed, or how specs are resolved): {'; '.join(changed)}. A config.yaml "
        f"key the preset does not state carries over into the paper runs; state the paper's value in the "
        f"preset. If the change is deliberate, update {DIGESTS.relative_to(ROOT)}: {UPDATE}"
    )


if __name__ == "__main__" and sys.argv[1:] == ["--update"]:
    DIGESTS.write_text(json.dumps(spec_digests(), indent=1) + "\n")
    print(f"wrote {DIGESTS}")
