# Figures (paper Sec. 2.3, App. F): each figure of the config's `figures` section is a target named after
# it, drawn from analyses of the runs it names beside the paper's values (its `paper` key); the report
# includes those listed in `report.figures`.


rule fp_analysis:
    input:
        metrics=lambda w: f"results/{w.protocol}/{w.run}/seed{first_seed(w.protocol)}/metrics.json",
        data=lambda w: protocol_checks(w.protocol),
    output:
        "results/fp_analysis/{protocol}/{run}.json",
    log:
        "logs/fp_analysis/{protocol}/{run}.log",
    wildcard_constraints:
        protocol=voc_protocols_pattern(),
    conda:
        PYTHON_ENV
    container:
        PYTHON_CONTAINER
    params:
        root=lambda w: dataset_root(gtc.downstream_entry(config, w.protocol)["dataset"]),
        split=lambda w: gtc.downstream_entry(config, w.protocol)["test_split"],
        options=lambda w: spec_json(fp_analysis_options(w.protocol)),
    shell:
        "python -m goodtransfer fp-analysis --metrics {input.metrics:q} --voc-root {params.root:q}"
        " --split {params.split:q} --options {params.options:q} --out {output:q} 2> {log:q}"


for _figure, _entry in config.get("figures", {}).items():
    if _entry["kind"] not in FP_FIGURES:
        continue

    rule:
        name:
            _figure
        input:
            analyses=figure_analyses(_entry),
            paper=paper_values(_entry),
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
            "python -m goodtransfer figure --name {params.name:q} --spec {params.spec:q}"
            " --analyses {input.analyses:q}"
            " --out-pdf {output.pdf:q} --out-json {output.record:q} 2> {log:q}"


# Figures 2 and 6: deep-image-prior inversion of res5 features, one reconstruction per run and image. The
# optimisation is its own job; its work folder keeps the reconstructions, reused when their inputs match.
rule invert:
    input:
        checkpoints=lambda w: [
            checkpoint_of(run["run"]) for run in config["figures"][w.figure]["runs"]
        ],
        data=lambda w: dataset_check(config["figures"][w.figure]["images"]["dataset"]),
        lpips=lambda w: lpips_files(config["figures"][w.figure]),
    output:
        metrics="results/inversion/{figure}/metrics.json",
        grid="results/inversion/{figure}/reconstructions.pdf",
    log:
        "logs/inversion/{figure}.log",
    wildcard_constraints:
        figure=inversion_figures_pattern(),
    conda:
        PYTHON_ENV
    container:
        PYTHON_CONTAINER
    threads: config["threads_per_job"]
    params:
        spec=lambda w: spec_json(inversion_spec(config["figures"][w.figure])),
        root=lambda w: dataset_root(config["figures"][w.figure]["images"]["dataset"]),
        work_dir="results/inversion/{figure}",
    shell:
        "python -m goodtransfer --threads {threads} invert --name {wildcards.figure:q} --spec {params.spec:q}"
        " --checkpoints {input.checkpoints:q} --data {params.root:q} --work-dir {params.work_dir:q}"
        " --metrics {output.metrics:q} --out-pdf {output.grid:q} 2> {log:q}"


for _figure, _entry in config.get("figures", {}).items():
    if _entry["kind"] != "inversion":
        continue

    rule:
        name:
            _figure
        input:
            metrics=f"results/inversion/{_figure}/metrics.json",
            grid=f"results/inversion/{_figure}/reconstructions.pdf",
            paper=paper_values(_entry),
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
            "python -m goodtransfer figure --name {params.name:q} --spec {params.spec:q}"
            " --inversion-metrics {input.metrics:q} --grid {input.grid:q}"
            " --out-pdf {output.pdf:q} --out-json {output.record:q} 2> {log:q}"


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
        "python -m goodtransfer random-network --net {wildcards.net:q} --seed {params.seed} --out {output:q} 2> {log:q}"


# Paper scale: LPIPS's ImageNet-trained SqueezeNet (torchvision's file) and LPIPS's linear layers (the lpips
# package's weights/v0.1/squeeze.pth), fetched once as released checkpoints are; addresses in the registry.
# Without network access, place the file the config names there yourself: then nothing is fetched.
rule fetch_lpips_weights:
    output:
        "checkpoints/lpips/{name}.pth",
    log:
        "logs/lpips/{name}.log",
    wildcard_constraints:
        name="[^/]+",
    conda:
        PYTHON_ENV
    container:
        PYTHON_CONTAINER
    params:
        url=lambda w: released_url(w.name, "paper/reference/lpips_weights.yaml"),
        sha256=lambda w: released_sha256(w.name, "paper/reference/lpips_weights.yaml"),
    shell:
        "python -m goodtransfer fetch --url {params.url:q} --sha256 {params.sha256:q} --out {output:q} 2> {log:q}"


# Figure 4: VOC07 AP against pretraining epoch (backbones kept every `keep_every` epochs) and against
# fine-tuning iteration (a run of `curve_protocol`, evaluated every `eval_period` iterations).
for _figure, _entry in config.get("figures", {}).items():
    if _entry["kind"] != "training_curves":
        continue
    _epochs, _curves = curve_inputs(_entry)

    rule:
        name:
            _figure
        input:
            epochs=[path for by_epoch in _epochs.values() for path in by_epoch.values()],
            curves=list(_curves.values()),
            paper=paper_values(_entry),
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
            epochs=spec_json(_epochs),
            curves=spec_json(_curves),
        shell:
            "python -m goodtransfer figure --name {params.name:q} --spec {params.spec:q}"
            " --epoch-metrics {params.epochs:q} --curve-metrics {params.curves:q}"
            " --out-pdf {output.pdf:q} --out-json {output.record:q} 2> {log:q}"
