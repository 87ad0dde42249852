# Figures (paper Sec. 2.3, App. F): each figure of the config's `figures` section is a target named after
# it, drawn from analyses of the runs it names; the report includes those listed in `report.figures`.


rule fp_analysis:
    input:
        detections="results/{protocol}/{run}/detections.json",
        data=lambda w: detection_checks(w.protocol),
    output:
        "results/fp_analysis/{protocol}/{run}.json",
    log:
        "logs/fp_analysis/{protocol}/{run}.log",
    wildcard_constraints:
        protocol="voc07|voc0712",
    conda:
        PYTHON_ENV
    container:
        PYTHON_CONTAINER
    params:
        root=lambda w: dataset_root(config["detection"][w.protocol]["dataset"]),
        split=lambda w: config["detection"][w.protocol]["test_split"],
        options=lambda w: spec_json(fp_analysis_options(w.protocol)),
    shell:
        "python -m goodtransfer fp-analysis --detections {input.detections} --voc-root {params.root}"
        " --split {params.split} --options {params.options:q} --out {output} 2> {log}"


for _figure, _entry in config.get("figures", {}).items():

    rule:
        name:
            _figure
        input:
            figure_analyses(_entry),
        output:
            pdf=f"paper/build/figures/{_figure}.pdf",
            record=f"results/figures/{_figure}.json",
        log:
            f"logs/figures/{_figure}.log",
        conda:
            PYTHON_ENV
        container:
            PYTHON_CONTAINER
        params:
            name=_figure,
            spec=spec_json(_entry),
        shell:
            "python -m goodtransfer figure --name {params.name} --spec {params.spec:q} --analyses {input}"
            " --out-pdf {output.pdf} --out-json {output.record} 2> {log}"
