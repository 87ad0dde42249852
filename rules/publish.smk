# Sharing (DVC): `snakemake publish` adds and pushes every finished pretraining run to the DVC remote.
# Commit the .dvc files it lists; elsewhere `git pull && dvc pull` brings the runs, and Snakemake
# treats them as done (the pretrain rule's dataset input is ancient).


localrules:
    publish,


rule publish:
    input:
        finished_runs,
    log:
        "logs/publish.log",
    conda:
        PYTHON_ENV
    container:
        PYTHON_CONTAINER
    params:
        runs=lambda w, input: [str(Path(path).parent) for path in input[::2]],
    shell:
        "python -m goodtransfer publish {params.runs:q} 2> {log:q}"
