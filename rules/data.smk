# Datasets. Generated stand-ins (config `generate:`) are ordinary outputs; a real dataset is checked
# in place, so a wrong path fails in the check job naming the folder and the expected layout.


for _name, _entry in config["datasets"].items():
    if _entry.get("generate"):

        rule:
            name:
                f"generate_{_name}"
            output:
                directory(_entry["root"]),
            log:
                f"logs/data/generate_{_name}.log",
            conda:
                PYTHON_ENV
            container:
                PYTHON_CONTAINER
            params:
                kind=_entry["kind"],
                options=generator_options(_name),
                seed=generator_seed(_name),
            shell:
                "python -m goodtransfer generate --kind {params.kind:q} --root {output:q} --seed {params.seed}"
                " --options {params.options:q} 2> {log:q}"


# ImageNet subsets (Table 2): trees of links into the source dataset, made after it passed its check.
for _name, _entry in config["datasets"].items():
    if _entry.get("derive"):

        rule:
            name:
                f"derive_{_name}"
            input:
                dataset_check(_entry["derive"]["from"]),
            output:
                directory(_entry["root"]),
            log:
                f"logs/data/derive_{_name}.log",
            conda:
                PYTHON_ENV
            container:
                PYTHON_CONTAINER
            params:
                source=dataset_root(_entry["derive"]["from"]),
                args=derive_args(_name),
            shell:
                "python -m goodtransfer derive-subset --source {params.source:q} --out {output:q} {params.args} 2> {log:q}"


rule check_dataset:
    input:
        generated_dataset,
    output:
        "results/datasets/{dataset}.json",
    log:
        "logs/data/check_{dataset}.log",
    conda:
        PYTHON_ENV
    container:
        PYTHON_CONTAINER
    params:
        root=lambda w: dataset_root(w.dataset),
        kind=lambda w: gtc.dataset_of(config, w.dataset)["kind"],
        classes=lambda w: gtc.dataset_of(config, w.dataset).get("classes", []),
        decode=lambda w: check_option(w.dataset, "decode", "fast"),
        sample=lambda w: check_option(w.dataset, "sample", 32),
    shell:
        "python -m goodtransfer check-dataset --kind {params.kind:q} --root {params.root:q}"
        " --classes {params.classes:q} --decode {params.decode:q} --decode-sample {params.sample:q}"
        " --out {output:q} 2> {log:q}"


# `snakemake track_datasets`: check every real dataset inside the repository in place and `dvc add` it.
localrules:
    track_datasets,


rule track_datasets:
    log:
        "logs/data/track_datasets.log",
    conda:
        PYTHON_ENV
    container:
        PYTHON_CONTAINER
    params:
        commands=lambda w: track_commands(),
    shell:
        "({params.commands}) 2> {log:q}"
