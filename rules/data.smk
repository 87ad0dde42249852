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
                seed=config["seed"],
            shell:
                "python -m goodtransfer generate --kind {params.kind} --root {output} --seed {params.seed}"
                " --options {params.options:q} 2> {log}"


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
        classes=lambda w: " ".join(gtc.dataset_of(config, w.dataset).get("classes", [])),
    shell:
        "python -m goodtransfer check-dataset --kind {params.kind} --root {params.root}"
        " --classes {params.classes} --out {output} 2> {log}"
