"""`snakemake -n` stays light: planning imports no torch, torchvision or matplotlib (the Snakefile and rules
import goodtransfer's config modules only), and pandas only through the SLURM extra's executor plugin,
which Snakemake imports at every start when it is installed (`pip install -e '.[slurm]'`)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.workflow import copy_workflow, no_slurm_cluster

HEAVY = ("torch", "torchvision", "matplotlib", "pycocotools", "tensorboard")


def imported_modules(importtime_log: str) -> set[str]:
    """Top-level package names in a ``python -X importtime`` log (self | cumulative | name)."""
    names = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+([\w.]+)$", importtime_log, re.M)
    return {name.split(".")[0] for name in names}


def test_importtime_log_parsing():
    log = "import time: self [us] | cumulative | imported package\nimport time:  12 |  30 |   pandas.core\n"
    assert imported_modules(log) == {"pandas"}


def test_dry_run_of_the_default_config_imports_no_torch_and_pandas_only_for_the_slurm_plugin(tmp_path):
    workdir = copy_workflow(tmp_path)
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "snakemake", "-n", "--quiet"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **no_slurm_cluster()},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    imported = imported_modules(done.stderr)
    assert {"snakemake", "goodtransfer"} <= imported
    assert imported.isdisjoint(HEAVY), sorted(imported & set(HEAVY))
    if "pandas" in imported:
        assert "snakemake_executor_plugin_slurm" in imported
