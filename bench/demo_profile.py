"""Where the embedded demo's time goes: CPU and wall seconds of every job, summed per rule and protocol.

Runs Snakemake with a `python` on PATH that times each job's process (the interpreter's start-up, imports
and work together), then prints one row per kind of job: jobs, CPU seconds (user + system of the process
and its children), wall seconds, and the share of the whole. Run it in a fresh clone so nothing is reused:

    python bench/demo_profile.py --cores 2 --out /tmp/demo_profile.json [snakemake targets ...]

A job's kind is its `goodtransfer` command, with the downstream protocol (`downstream voc07`) or the
pretraining method; Snakemake's own time is the rest of the wall clock.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import stat
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

# The shim: run the real interpreter, then append one JSON line with argv, wall and CPU seconds.
SHIM = """#!{python}
import json, os, resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.call([{python!r}, *sys.argv[1:]])
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
with open({log!r}, "a") as log:
    log.write(json.dumps({{"argv": sys.argv[1:], "wall": time.perf_counter() - start,
                          "cpu": usage.ru_utime + usage.ru_stime, "rc": code}}) + "\\n")
sys.exit(code)
"""


def _kind(argv: list[str]) -> str:
    """`pretrain moco`, `downstream voc07`, `table`, ...: the command and what distinguishes its cost."""
    words = [a for a in argv if not a.startswith("-")]
    if "goodtransfer" not in argv and "-m" not in argv:
        return "python (other)"
    command = next((w for w in words if w not in {"goodtransfer"} and not w.isdigit()), "?")
    if "--spec" in argv:
        spec = json.loads(argv[argv.index("--spec") + 1])
        detail = spec.get("protocol") or spec.get("method") or ""
        return f"{command} {detail}".strip()
    return command


def summarise(records: list[dict], wall: float) -> list[dict]:
    rows: dict[str, dict] = defaultdict(lambda: {"jobs": 0, "cpu_s": 0.0, "wall_s": 0.0})
    for record in records:
        row = rows[_kind(record["argv"])]
        row["jobs"] += 1
        row["cpu_s"] += record["cpu"]
        row["wall_s"] += record["wall"]
    total_cpu = sum(r["cpu_s"] for r in rows.values())
    table = [{"kind": k, **v, "cpu_share": v["cpu_s"] / total_cpu} for k, v in rows.items()]
    table.sort(key=lambda r: -r["cpu_s"])
    total = {"kind": "total", "jobs": len(records), "cpu_s": total_cpu, "wall_s": wall, "cpu_share": 1.0}
    return [*table, total]


def main() -> int:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True, help="the per-job records and the summary, JSON")
    parser.add_argument("targets", nargs="*", default=["paper/build/report.pdf"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as shim_dir:
        log = Path(shim_dir) / "jobs.jsonl"
        shim = Path(shim_dir) / "python"
        shim.write_text(SHIM.format(python=sys.executable, log=str(log)))
        shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
        env = {**os.environ, "PATH": f"{shim_dir}{os.pathsep}{os.environ['PATH']}"}
        command = [sys.executable, "-m", "snakemake", "--profile", "profiles/local"]
        command += ["--cores", str(args.cores), *args.targets]
        print("running:", shlex.join(command), file=sys.stderr)
        start = time.perf_counter()
        code = os.spawnvpe(os.P_WAIT, command[0], command, env)
        wall = time.perf_counter() - start
        records = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    table = summarise(records, wall)
    args.out.write_text(json.dumps({"summary": table, "jobs": records, "snakemake_rc": code}, indent=1))
    print(f"{'kind':28} {'jobs':>5} {'CPU s':>9} {'wall s':>9} {'CPU %':>6}")
    for row in table:
        share = 100 * row["cpu_share"]
        print(f"{row['kind']:28} {row['jobs']:5d} {row['cpu_s']:9.1f} {row['wall_s']:9.1f} {share:6.1f}")
    return code


if __name__ == "__main__":
    sys.exit(main())
