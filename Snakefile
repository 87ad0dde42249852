# goodtransfer: Zhao et al., "What Makes Instance Discrimination Good for Transfer Learning?" (ICLR 2021).
# Every paper table is a target; the report paper/build/report.pdf is the root of the DAG.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


validate(config, "rules/schemas/config.schema.yaml")


report: "paper/report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/pretrain.smk"
include: "rules/transfer.smk"
include: "rules/figures.smk"
include: "rules/report.smk"
include: "rules/publish.smk"


rule all:
    default_target: True
    input:
        "paper/build/report.pdf",
