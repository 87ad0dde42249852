# Pretraining (paper Sec. 2.1, Table 1): one job per run of `pretrain.runs`. The run's resolved spec
# is its params: editing one run's settings reruns that run and what depends on it, nothing else.
from goodtransfer.launch import launcher, threads_per_process


rule pretrain:
    input:
        # Nothing for a run published with DVC: pulled, it counts as done (see pretrain_input).
        data=lambda w: pretrain_input(w.run),
    output:
        checkpoint="results/pretrain/{run}/checkpoint.pt",
        log_json="results/pretrain/{run}/train_log.json",
    log:
        "logs/pretrain/{run}.log",
    conda:
        PYTHON_ENV
    container:
        PYTHON_CONTAINER
    threads: config["threads_per_job"]
    resources:
        runtime=60,
    params:
        spec=lambda w: spec_json(gtc.pretrain_spec(config, w.run)),
        # A changed dataset definition (e.g. the stand-in's generate options) reruns the run.
        dataset=lambda w: spec_json(gtc.dataset_of(config, pretrain_dataset(w.run))),
        root=lambda w: dataset_root(pretrain_dataset(w.run)),
        state_dir="results/pretrain/{run}/state",
        # torchrun with one rank per GPU when a profile gives the job several (resource `gpu`).
        launcher=lambda w, resources: launcher(int(resources.get("gpu", 0))),
        threads=lambda w, threads, resources: threads_per_process(
            threads, int(resources.get("gpu", 0))
        ),
    shell:
        "{params.launcher} -m goodtransfer --threads {params.threads} pretrain --spec {params.spec:q} --data {params.root:q}"
        " --out {output.checkpoint:q} --state-dir {params.state_dir:q} --train-log {output.log_json:q}"
        " --data-check {input.data:q} 2> {log:q}"


rule pretraining:
    input:
        expand("results/pretrain/{run}/checkpoint.pt", run=gtc.pretrain_runs(config)),


rule fetch_released_checkpoint:
    output:
        "checkpoints/released/{name}.pth",
    log:
        "logs/released/{name}.log",
    conda:
        PYTHON_ENV
    container:
        PYTHON_CONTAINER
    params:
        url=lambda w: released_url(w.name, "paper/reference/released_checkpoints.yaml"),
        sha256=lambda w: released_sha256(
            w.name, "paper/reference/released_checkpoints.yaml"
        ),
    shell:
        "python -m goodtransfer fetch --url {params.url:q} --sha256 {params.sha256:q} --out {output:q} 2> {log:q}"
