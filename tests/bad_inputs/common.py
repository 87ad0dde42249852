"""One bad input: how to make it, how to run the real command on it, and what must come out."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Outcome:
    """What a real command did with a bad input: its exit status, the text a user reads (stderr and/or
    the job's log), and the final outputs that must not exist afterwards."""

    returncode: int
    message: str
    outputs: Sequence[Path] = field(default_factory=list)


@dataclass(frozen=True)
class Case:
    """``kind`` names the bad input (area-what, e.g. ``config-row-undefined-run``); ``make`` builds it
    under a fresh folder and runs the command; the message must contain every fragment of ``expect``
    (the file or key, and what was expected)."""

    kind: str
    make: Callable[[Path], Outcome]
    expect: tuple[str, ...]
    returncode: int | None = None  # None: any non-zero status


def goodtransfer(*args: str, cwd: Path | None = None, timeout: int = 300) -> Outcome:
    """``python -m goodtransfer ARGS`` in a child process, as a rule runs it."""
    done = subprocess.run(
        [sys.executable, "-m", "goodtransfer", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Outcome(done.returncode, done.stdout + done.stderr)
