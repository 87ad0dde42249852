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
    if _entry["kind"] == "inversion":
        continue

    rule:
        name:
            _figure
        input:
            figure_analyses(_entry),
        output:
            pdf=report(
                f"paper/build/figures/{_figure}.pdf",
                caption="../paper/report/figure.rst",
                category="Figures",
            ),
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


# Figures 2 and 6: deep-image-prior inversion of res5 features, one reconstruction per run and image.
for _figure, _entry in config.get("figures", {}).items():
    if _entry["kind"] != "inversion":
        continue

    rule:
        name:
            _figure
        input:
            checkpoints=[checkpoint_of(run["run"]) for run in _entry["runs"]],
            data=dataset_check(_entry["images"]["dataset"]),
            lpips=_entry["settings"]["lpips_weights"],
        output:
            pdf=report(
                f"paper/build/figures/{_figure}.pdf",
                caption="../paper/report/figure.rst",
                category="Figures",
            ),
            record=f"results/figures/{_figure}.json",
        log:
            f"logs/figures/{_figure}.log",
        conda:
            PYTHON_ENV
        container:
            PYTHON_CONTAINER
        threads: config["threads_per_job"]
        params:
            name=_figure,
            spec=spec_json(inversion_spec(_entry)),
            root=dataset_root(_entry["images"]["dataset"]),
            work_dir=f"results/inversion/{_figure}",
        shell:
            "python -m goodtransfer --threads {threads} figure --name {params.name} --spec {params.spec:q}"
            " --checkpoints {input.checkpoints} --data {params.root} --work-dir {params.work_dir}"
            " --out-pdf {output.pdf} --out-json {output.record} 2> {log}"


# The embedded default's stand-in for LPIPS's ImageNet-trained network (nothing is downloaded).
rule random_lpips_network:
    output:
        "data/generated/lpips/{net}_random.pth",
    log:
        "logs/data/random_lpips_{net}.log",
    conda:
        PYTHON_ENV
    container:
        PYTHON_CONTAINER
    params:
        seed=config["seed"],
    shell:
        "python -m goodtransfer random-network --net {wildcards.net} --seed {params.seed} --out {output} 2> {log}"
