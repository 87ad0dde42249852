"""The registry of our departures from the paper (``paper/reference/deviations.yaml``): read and checked
here, named in a note under every table they touch, and listed in the report's appendix.

An entry touches tables and figures directly, or through the protocols and runs they are drawn from, so a
table declared later is covered by the entries of its protocols and runs. Entries hold at one scale or both
(``scales``: embedded, paper, or released, the paper scale from the authors' checkpoints); the config's
``report.deviations.scale`` says which a report is of.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from goodtransfer.io import InputError, read_yaml

SCALES = ("embedded", "paper", "released")  # config.yaml, presets/paper.yaml, + presets/released.yaml
TEXT_FIELDS = ("title", "ours", "paper", "why")
TOUCH_KEYS = ("tables", "figures", "protocols", "runs", "all")
_ID = re.compile(r"[a-z0-9_]+")

Entry = dict[str, Any]


def _entry(path: Path, index: int, raw: Any) -> Entry:
    where = f"{path}: deviations[{index}]"
    if not isinstance(raw, dict):
        raise InputError(f"{where}: expected a mapping with id, title, touches, ours, paper, why")
    if not isinstance(raw.get("id"), str) or not _ID.fullmatch(raw["id"]):
        raise InputError(f"{where}.id: {raw.get('id')!r}; expected one word of a-z, 0-9 and _")
    where = f"{path}: deviation {raw['id']!r}"
    for key in TEXT_FIELDS:
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise InputError(f"{where}: field {key!r} missing or empty; expected text")
    stray = sorted(set(raw) - {"id", "scales", "touches", *TEXT_FIELDS})
    if stray:
        raise InputError(f"{where}: unknown fields {stray}")
    scales = raw.get("scales", list(SCALES))
    if not isinstance(scales, list) or not scales or not set(scales) <= set(SCALES):
        raise InputError(f"{where}.scales: {scales!r}; expected a list of {list(SCALES)}")
    touches = raw.get("touches")
    if not isinstance(touches, dict) or not touches or not set(touches) <= set(TOUCH_KEYS):
        raise InputError(f"{where}.touches: {touches!r}; expected a mapping of {list(TOUCH_KEYS)}")
    for key, names in touches.items():
        valid = names is True if key == "all" else isinstance(names, list) and names
        if not valid or (key != "all" and not all(isinstance(name, str) for name in names)):
            expected = "true" if key == "all" else "a list of names"
            raise InputError(f"{where}.touches.{key}: {names!r}; expected {expected}")
    return {**raw, "scales": scales}


def load_registry(path: str | Path) -> list[Entry]:
    """Every entry of the registry file, checked: fields, scales and the shape of ``touches``."""
    path = Path(path)
    raw = read_yaml(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("deviations"), list):
        raise InputError(f"{path}: expected a mapping with a 'deviations' list")
    entries = [_entry(path, i, item) for i, item in enumerate(raw["deviations"])]
    ids = [entry["id"] for entry in entries]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise InputError(f"{path}: deviation ids {duplicates} appear more than once")
    return entries


def at_scale(entries: Sequence[Entry], scale: str) -> list[Entry]:
    """The entries that hold at ``scale`` (embedded, paper or released)."""
    if scale not in SCALES:
        raise InputError(f"report.deviations.scale: {scale!r}; expected one of {list(SCALES)}")
    return [entry for entry in entries if scale in entry["scales"]]


def check_references(entries: Sequence[Entry], config: Mapping[str, Any], where: str) -> None:
    """Every table, figure, protocol and run an entry names exists in ``config``."""
    known = {
        "tables": config.get("tables", {}),
        "figures": config.get("figures", {}),
        "protocols": config.get("downstream", {}),
        "runs": config.get("pretrain", {}).get("runs", {}),
    }
    for entry in entries:
        for key, names in entry["touches"].items():
            missing = [] if key == "all" else [name for name in names if name not in known[key]]
            if missing:
                raise InputError(
                    f"{where}: deviation {entry['id']!r}.touches.{key}: {missing} are not in the config's "
                    f"{key}; expected names of {sorted(known[key])}"
                )


def _touches(entry: Entry, kind: str, name: str, protocols: set[str], runs: set[str]) -> bool:
    touches = entry["touches"]
    return bool(
        touches.get("all")
        or name in touches.get(kind, ())
        or protocols & set(touches.get("protocols", ()))
        or runs & set(touches.get("runs", ()))
    )


def touching_table(entries: Sequence[Entry], name: str, declaration: Mapping[str, Any]) -> list[Entry]:
    """The entries that touch table ``name``: by name, or through its columns' protocols or rows' runs."""
    protocols = {column["protocol"] for column in declaration["columns"]}
    rows = [row for group in declaration["groups"] for row in group["rows"]]
    runs = {row["run"].split("@")[0] for row in rows if row.get("run")}  # a quoted row has no run
    return [entry for entry in entries if _touches(entry, "tables", name, protocols, runs)]


def touching_figure(entries: Sequence[Entry], name: str, figure: Mapping[str, Any]) -> list[Entry]:
    """The entries that touch figure ``name``: by name, or through its protocols or runs."""
    protocols = {figure[key] for key in ("protocol", "curve_protocol") if key in figure}
    runs = {run["run"].split("@")[0] for run in figure["runs"]}
    return [entry for entry in entries if _touches(entry, "figures", name, protocols, runs)]


def note(entries: Sequence[Entry]) -> list[str]:
    """The note under a table: the titles and ids of the departures that touch it."""
    if not entries:
        return []
    named = "; ".join(f"{entry['title']} [{entry['id']}]" for entry in entries)
    return [f"Departs from the paper (see the appendix, Departures from the paper): {named}."]


def appendix(entries: Sequence[Entry], scale: str, config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every entry for the report's appendix, with whether it holds at this scale and the tables and
    figures of ``config`` it touches (those at this scale first, in the registry's order)."""
    listed = []
    for entry in entries:
        tables = [t for t, d in config.get("tables", {}).items() if touching_table([entry], t, d)]
        figures = [f for f, d in config.get("figures", {}).items() if touching_figure([entry], f, d)]
        listed.append(
            {
                **{key: entry[key] for key in ("id", *TEXT_FIELDS)},
                "here": scale in entry["scales"],
                "scales": entry["scales"],
                "tables": tables,
                "figures": figures,
            }
        )
    return sorted(listed, key=lambda item: not item["here"])
