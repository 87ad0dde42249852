# Downstream protocols (paper Sec. 2 and 4): ImageNet linear readout, VOC detection fine-tuning, and the
# registered tasks of the config's `transfer` section (COCO Mask R-CNN, Cityscapes DeepLab-v3,
# Mini-ImageNet few-shot, MAFL landmarks). Each writes metrics.json, which the tables read.


rule linear_readout:
    input:
        checkpoint=lambda w: checkpoint_of(w.run),
        data=lambda w: dataset_check(config["linear"]["dataset"]),
    output:
        metrics="results/linear/{run}/metrics.json",
    log:
        "logs/linear/{run}.log",
    conda:
        PYTHON_ENV
    container:
        PYTHON_CONTAINER
    threads: config["threads_per_job"]
    params:
        spec=lambda w: spec_json(gtc.linear_spec(config, w.run)),
        root=lambda w: dataset_root(config["linear"]["dataset"]),
    shell:
        "python -m goodtransfer --threads {threads} linear --spec {params.spec:q} --checkpoint {input.checkpoint}"
        " --data {params.root} --metrics {output.metrics} 2> {log}"


rule voc_detection:
    input:
        checkpoint=lambda w: checkpoint_of(w.run),
        data=lambda w: detection_checks(w.protocol),
    output:
        metrics="results/{protocol}/{run}/metrics.json",
        detections="results/{protocol}/{run}/detections.json",
    log:
        "logs/{protocol}/{run}.log",
    wildcard_constraints:
        protocol="voc07|voc0712",
    conda:
        PYTHON_ENV
    container:
        PYTHON_CONTAINER
    threads: config["threads_per_job"]
    resources:
        runtime=60,
    params:
        spec=lambda w: spec_json(gtc.detection_spec(config, w.protocol, w.run)),
        root=lambda w: dataset_root(config["detection"][w.protocol]["dataset"]),
        state_dir="results/{protocol}/{run}/state",
        extra=lambda w: extra_train_args(w.protocol),
    shell:
        "python -m goodtransfer --threads {threads} voc --spec {params.spec:q} --checkpoint {input.checkpoint} --data {params.root}"
        " --metrics {output.metrics} --detections {output.detections}"
        " --state-dir {params.state_dir} {params.extra} 2> {log}"


rule transfer:
    input:
        checkpoint=lambda w: checkpoint_of(w.run),
        data=lambda w: dataset_check(config["transfer"][w.protocol]["dataset"]),
    output:
        metrics="results/{protocol}/{run}/metrics.json",
    log:
        "logs/{protocol}/{run}.log",
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
        spec=lambda w: spec_json(gtc.transfer_spec(config, w.protocol, w.run)),
        root=lambda w: dataset_root(config["transfer"][w.protocol]["dataset"]),
        state_dir="results/{protocol}/{run}/state",
    shell:
        "python -m goodtransfer --threads {threads} transfer --spec {params.spec:q} --checkpoint {input.checkpoint}"
        " --data {params.root} --metrics {output.metrics} --state-dir {params.state_dir} 2> {log}"
