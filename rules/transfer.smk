# Downstream protocols (paper Sec. 2 and 4): ImageNet linear readout, VOC detection fine-tuning, and the
# registered tasks of the config's `transfer` section (COCO Mask R-CNN, Cityscapes DeepLab-v3,
# Mini-ImageNet few-shot, MAFL landmarks). Each run of a protocol, once per seed of the config's `seeds`,
# writes results/<protocol>/<run>/seed<seed>/metrics.json; a table cell is the mean over the seeds.


rule linear_readout:
    input:
        checkpoint=lambda w: checkpoint_of(w.run),
        data=lambda w: dataset_check(config["linear"]["dataset"]),
    output:
        metrics="results/linear/{run}/seed{seed}/metrics.json",
    log:
        "logs/linear/{run}/seed{seed}.log",
    conda:
        PYTHON_ENV
    container:
        PYTHON_CONTAINER
    threads: config["threads_per_job"]
    params:
        checkpoint=lambda w: checkpoint_file(w.run),
        spec=lambda w: spec_json(gtc.linear_spec(config, w.run, w.seed)),
        root=lambda w: dataset_root(config["linear"]["dataset"]),
        state_dir="results/linear/{run}/seed{seed}/state",
    shell:
        "python -m goodtransfer --threads {threads} linear --spec {params.spec:q} --checkpoint {params.checkpoint:q}"
        " --data {params.root:q} --metrics {output.metrics:q} --state-dir {params.state_dir:q}"
        " --data-check {input.data:q} 2> {log:q}"


rule voc_detection:
    input:
        checkpoint=lambda w: checkpoint_of(w.run),
        data=lambda w: detection_checks(w.protocol),
    output:
        metrics="results/{protocol}/{run}/seed{seed}/metrics.json",
        detections="results/{protocol}/{run}/seed{seed}/detections.json",
    log:
        "logs/{protocol}/{run}/seed{seed}.log",
    wildcard_constraints:
        protocol=detection_protocols_pattern(),
    conda:
        PYTHON_ENV
    container:
        PYTHON_CONTAINER
    threads: config["threads_per_job"]
    resources:
        runtime=60,
    params:
        checkpoint=lambda w: checkpoint_file(w.run),
        spec=lambda w: spec_json(gtc.detection_spec(config, w.protocol, w.run, w.seed)),
        root=lambda w: dataset_root(detection_entry(w.protocol)["dataset"]),
        state_dir="results/{protocol}/{run}/seed{seed}/state",
        extra=lambda w: extra_train_args(w.protocol),
    shell:
        "python -m goodtransfer --threads {threads} voc --spec {params.spec:q} --checkpoint {params.checkpoint:q} --data {params.root:q}"
        " --metrics {output.metrics:q} --detections {output.detections:q}"
        " --state-dir {params.state_dir:q} {params.extra} --data-check {input.data:q} 2> {log:q}"


rule transfer:
    input:
        checkpoint=lambda w: checkpoint_of(w.run),
        data=lambda w: dataset_check(config["transfer"][w.protocol]["dataset"]),
    output:
        metrics="results/{protocol}/{run}/seed{seed}/metrics.json",
    log:
        "logs/{protocol}/{run}/seed{seed}.log",
    wildcard_constraints:
        protocol=transfer_protocols_pattern(),
    conda:
        PYTHON_ENV
    container:
        PYTHON_CONTAINER
    threads: config["threads_per_job"]
    resources:
        runtime=60,
    params:
        checkpoint=lambda w: checkpoint_file(w.run),
        spec=lambda w: spec_json(gtc.transfer_spec(config, w.protocol, w.run, w.seed)),
        root=lambda w: dataset_root(config["transfer"][w.protocol]["dataset"]),
        state_dir="results/{protocol}/{run}/seed{seed}/state",
    shell:
        "python -m goodtransfer --threads {threads} transfer --spec {params.spec:q} --checkpoint {params.checkpoint:q}"
        " --data {params.root:q} --metrics {output.metrics:q} --state-dir {params.state_dir:q}"
        " --data-check {input.data:q} 2> {log:q}"
