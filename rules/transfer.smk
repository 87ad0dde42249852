# Downstream protocols (paper Sec. 2 and 4): each protocol of the config's `downstream` section names a task
# (ImageNet linear readout, VOC Faster R-CNN, COCO Mask R-CNN, Cityscapes DeepLab-v3, Mini-ImageNet
# few-shot, MAFL landmarks) and its settings. Each run of a protocol, once per seed of the config's
# `seeds`, writes results/<protocol>/<run>/seed<seed>/metrics.json; a table cell is the mean over the seeds.
# Files a task writes beside the metrics (VOC's detections.json) are recorded in them with their SHA-256.


rule downstream:
    input:
        checkpoint=lambda w: checkpoint_of(w.run),
        data=lambda w: protocol_checks(w.protocol),
    output:
        metrics="results/{protocol}/{run}/seed{seed}/metrics.json",
    log:
        "logs/{protocol}/{run}/seed{seed}.log",
    wildcard_constraints:
        protocol=protocols_pattern(),
    conda:
        PYTHON_ENV
    container:
        PYTHON_CONTAINER
    threads: config["threads_per_job"]
    resources:
        runtime=60,
    params:
        checkpoint=lambda w: checkpoint_file(w.run),
        spec=lambda w: spec_json(gtc.downstream_spec(config, w.protocol, w.run, w.seed)),
        root=lambda w: dataset_root(gtc.downstream_entry(config, w.protocol)["dataset"]),
        state_dir="results/{protocol}/{run}/seed{seed}/state",
        extra=lambda w: extra_train_args(w.protocol),
    shell:
        "python -m goodtransfer --threads {threads} downstream --spec {params.spec:q}"
        " --checkpoint {params.checkpoint:q} --data {params.root:q} --metrics {output.metrics:q}"
        " --state-dir {params.state_dir:q} {params.extra} --data-check {input.data:q} 2> {log:q}"
