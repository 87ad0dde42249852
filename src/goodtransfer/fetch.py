"""Fetch a released checkpoint once, atomically, recording its URL and SHA-256 beside it."""

from __future__ import annotations

import hashlib
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from goodtransfer.io import InputError, atomic_path, read_yaml, write_json

_HEX = re.compile(r"[0-9a-f]{8,64}")


def _entry(name: str, registry: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    entries: dict[str, Any] = read_yaml(registry)
    if name not in entries["files"]:
        raise InputError(
            f"{registry}: no released checkpoint named {name!r}; known: {sorted(entries['files'])}"
        )
    return entries, entries["files"][name] or {}


def released_url(name: str, registry: str | Path) -> str:
    """The download address of released checkpoint ``name``: the entry's own ``url``, else the authors'
    ``base_url`` + name + .pth."""
    entries, entry = _entry(name, registry)
    return entry.get("url") or f"{entries['base_url']}{name}.pth"


def released_sha256(name: str, registry: str | Path) -> str:
    """The SHA-256 (or its published leading hex digits) the entry's file must have; "" when the
    publisher gave none (the authors' own files: then only the digest recorded at the first fetch holds)."""
    _, entry = _entry(name, registry)
    expected = str(entry.get("sha256", ""))
    if expected and not _HEX.fullmatch(expected):
        raise InputError(
            f"{registry}: files.{name}.sha256 is {expected!r}; expected 8 to 64 lowercase hex digits"
        )
    return expected


def dvc_import_commands(registry: str | Path, folder: str = "checkpoints/released") -> list[str]:
    """``dvc import-url`` lines for every released checkpoint: DVC then records each file's checksum at
    import, and ``import_from`` loading verifies it (``publish.verify_recorded_checksum``)."""
    entries: dict[str, Any] = read_yaml(registry)
    return [f"dvc import-url {released_url(name, registry)} {folder}/{name}.pth" for name in entries["files"]]


def fetch(url: str, out: Path, expected_sha256: str = "", timeout_s: float = 60.0) -> str:
    """Stream ``url`` into ``out`` (atomically) and return its SHA-256; ``<out>.json`` records both. With
    ``expected_sha256`` (whole or leading digits, as publishers print it) a file whose digest differs is
    refused before it takes ``out``'s name."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response, atomic_path(out) as tmp:
            with open(tmp, "wb") as handle:
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    handle.write(chunk)
            if not digest.hexdigest().startswith(expected_sha256):
                raise InputError(
                    f"{url}: SHA-256 {digest.hexdigest()} does not start with {expected_sha256}, the digest "
                    f"the registry records for it; nothing was written to {out} (a changed or wrong file)"
                )
    except (urllib.error.URLError, OSError) as err:
        raise InputError(
            f"{url}: could not fetch the checkpoint ({err}); nothing was written to {out}. "
            f"Without network access, copy the file to {out} by hand: then nothing is fetched"
        ) from None
    write_json(out.with_suffix(out.suffix + ".json"), {"url": url, "sha256": digest.hexdigest()})
    return digest.hexdigest()
