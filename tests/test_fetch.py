"""Released checkpoints are fetched atomically with their SHA-256 recorded; a bad address loses nothing."""

from __future__ import annotations

import hashlib

import pytest

from goodtransfer.fetch import fetch, released_url
from goodtransfer.io import InputError, read_json
from tests.workflow import ROOT

REGISTRY = ROOT / "paper/reference/released_checkpoints.yaml"


def test_fetch_copies_the_file_and_records_url_and_sha256(tmp_path):
    source = tmp_path / "moco_v2_imagenet.pth"
    source.write_bytes(b"weights" * 1000)
    out = tmp_path / "checkpoints/released/moco_v2_imagenet.pth"
    digest = fetch(source.as_uri(), out)
    assert out.read_bytes() == source.read_bytes()
    assert digest == hashlib.sha256(source.read_bytes()).hexdigest()
    assert read_json(f"{out}.json") == {"url": source.as_uri(), "sha256": digest}


def test_unreachable_address_fails_naming_it_and_writes_nothing(tmp_path):
    out = tmp_path / "x.pth"
    missing = (tmp_path / "absent.pth").as_uri()
    with pytest.raises(InputError, match="absent.pth: could not fetch"):
        fetch(missing, out)
    assert list(tmp_path.iterdir()) == []


def test_registry_gives_the_authors_address_and_rejects_unknown_names():
    assert released_url("exemplar_v2", REGISTRY).endswith("/good_transfer/exemplar_v2.pth")
    with pytest.raises(InputError, match="exemplar_v3"):
        released_url("exemplar_v3", REGISTRY)
