"""``python -m goodtransfer.follow <targets> <snakemake options>``: run Snakemake and print one line per
finished job (jobs done of the total, elapsed time, an estimate of the time left), keeping Snakemake's full
output in a log file; at the end, where the targets are and how long the run took, or the log's tail.
``--warm``: the jobs run in a warm fork server (goodtransfer.warm) for the length of the run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TextIO

FINISHED = re.compile(r"Finished jobid: \d+ \(Rule: (?P<rule>[^)]+)\)")
PROGRESS = re.compile(r"(?P<done>\d+) of (?P<total>\d+) steps \(\d+%\) done")
NOTHING = "Nothing to be done"
WARM_LOG = Path("logs/warm-server.log")
# What Snakemake exports to a one-thread job (snakemake.shell): the server must start with what its
# clients start with (goodtransfer.warm.START_ENV_PREFIXES); a job of more threads runs fresh.
ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "GOTO_NUM_THREADS", "OPENBLAS_NUM_THREADS",
              "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")}  # fmt: skip


def clock(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def progress_line(done: int, total: int, elapsed: float, rule: str) -> str:
    """``[ 12/171] 3m12s elapsed, about 42m left: pretrain``; the estimate assumes the jobs left cost what
    the finished ones did on average (early jobs are cheap data generation, so it starts low)."""
    left = elapsed / done * (total - done) if done else 0.0
    width = len(str(total))
    return f"[{done:{width}d}/{total}] {clock(elapsed)} elapsed, about {clock(left)} left: {rule}"


def follow(lines: TextIO, log: TextIO, out: TextIO, start: float) -> None:
    """Copy Snakemake's output ``lines`` into ``log``; write a progress line to ``out`` per finished job."""
    rule = "?"
    for line in lines:
        log.write(line)
        if finished := FINISHED.search(line):
            rule = finished["rule"]
        elif step := PROGRESS.search(line):
            done, total = int(step["done"]), int(step["total"])
            print(progress_line(done, total, time.monotonic() - start, rule), file=out, flush=True)
        elif NOTHING in line:
            print(line.strip(), file=out, flush=True)


@contextmanager
def warm_server(log_path: Path = WARM_LOG, timeout: float = 120.0) -> Iterator[dict[str, str]]:
    """Start ``goodtransfer.warm`` on a socket in a private folder; yield the variables that send the jobs
    to it (none if it did not come up: they run fresh); stop it at the end, whatever the end."""
    folder = Path(tempfile.mkdtemp(prefix="goodtransfer-warm-"))  # mode 0700: only we can connect
    address = folder / "socket"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "goodtransfer.warm", "serve", str(address), "--log", str(log_path)]
    with log_path.open("a") as log:
        server = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                  env={**os.environ, **ONE_THREAD}, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while not address.exists() and server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if address.exists():
            print(f"jobs run in a warm server (one line per job: {log_path})", flush=True)
            yield {"GOODTRANSFER_WARM": str(address)}
        else:
            print(f"the warm server did not start (see {log_path}); the jobs start fresh", flush=True)
            yield {}
    finally:
        server.terminate()  # its running jobs get SIGTERM and unwind
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    warm = "--warm" in args
    args = [a for a in args if a != "--warm"]
    with warm_server() if warm else nullcontext({}) as env:
        return _run(args, {**os.environ, **env})


def _run(args: list[str], env: dict[str, str]) -> int:
    log_path = Path("logs/snakemake-follow.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # The targets: the arguments before the first option (after it, --configfile would take them as files).
    first_option = next((i for i, a in enumerate(args) if a.startswith("-")), len(args))
    targets = args[:first_option]
    start = time.monotonic()
    print(f"snakemake {' '.join(args)}  (full output: {log_path})", flush=True)
    command = [sys.executable, "-m", "snakemake", *args]
    with (
        log_path.open("w") as log,
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env
        ) as run,
    ):
        assert run.stdout is not None
        follow(run.stdout, log, sys.stdout, start)
    took = clock(time.monotonic() - start)
    if run.returncode != 0:
        tail = deque(log_path.read_text().splitlines(), maxlen=40)
        print("\n".join(tail), file=sys.stderr)
        print(f"failed after {took} (exit {run.returncode}); full output: {log_path}", file=sys.stderr)
        return run.returncode
    print(f"done in {took}" + "".join(f"\n  {Path(t).resolve()}" for t in targets if Path(t).exists()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
