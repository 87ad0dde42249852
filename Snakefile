# goodtransfer: Zhao et al., "What Makes Instance Discrimination Good for Transfer Learning?" (ICLR 2021).
# Every paper table is a target; the report paper/build/report.pdf is the root of the DAG.
import os

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

from goodtransfer.config import add_pretrain_replicas
from goodtransfer.config_check import check_config
from goodtransfer.io import InputError
from goodtransfer.schema import validate_config

min_version("9.0")

# envs/*.yaml install the project from ${GOODTRANSFER_ROOT}: Snakemake creates an env from a copy of its
# file in the conda prefix, where conda runs pip, so a relative path there would not lead here.
os.environ.update(GOODTRANSFER_ROOT=workflow.basedir)


configfile: "config.yaml"


# The schema, then beyond it: every name and cross-reference, and the numbers a job would trip on hours
# later. The message names the key (and, for a nested --config value, the overlay file to use instead);
# the checker's frames would only hide it.
try:
    validate_config(config)
    # pretrain_seeds: runs pretrained again from other seeds
    add_pretrain_replicas(config)
    check_config(config)
except InputError as err:
    raise WorkflowError(str(err)) from None


report: "paper/report/workflow.rst"


# A run name is one path component (config_check.NAME, or run@epN for a kept backbone); a downstream run's
# seed is a number (results/<protocol>/<run>/seed<N>).
wildcard_constraints:
    run="[A-Za-z0-9_+-][A-Za-z0-9._+-]*(@ep[0-9]+)?",
    seed="[0-9]+",


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/pretrain.smk"
include: "rules/transfer.smk"
include: "rules/figures.smk"
include: "rules/report.smk"
include: "rules/claims.smk"
include: "rules/publish.smk"


rule all:
    default_target: True
    input:
        "paper/build/report.pdf",
