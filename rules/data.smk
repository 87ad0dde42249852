# Datasets. Generated stand-ins (config `generate:`) are ordinary outputs; a real dataset is checked
# in place, so a wrong path fails in the check job naming the folder and the expected layout.


def generated_dataset(wildcards):
    entry = gtc.dataset_of(config, wildcards.dataset)
    return [entry["root"]] if entry.get("generate") else []


def generator_args(name):
    entry = gtc.dataset_of(config, name)
    options = dict(entry["generate"], seed=config["seed"])
    if entry["kind"] == "voc":
        options["classes"] = entry["classes"]
    return " ".join(
        f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in options.items()
    )


for _name, _entry in config["datasets"].items():
    if _entry.get("generate"):

        rule:
            name:
                f"generate_{_name}"
            output:
                directory(_entry["root"]),
            params:
                kind="imagenet" if _entry["kind"] == "imagefolder" else "voc",
                args=generator_args(_name),
            log:
                f"logs/data/generate_{_name}.log",
            conda:
                PYTHON_ENV
            container:
                PYTHON_CONTAINER
            shell:
                "python -m goodtransfer.data.synthetic {params.kind} --root {output} {params.args} 2> {log}"


rule check_dataset:
    input:
        generated_dataset,
    output:
        "results/datasets/{dataset}.json",
    params:
        root=lambda w: dataset_root(w.dataset),
        kind=lambda w: gtc.dataset_of(config, w.dataset)["kind"],
        classes=lambda w: " ".join(gtc.dataset_of(config, w.dataset).get("classes", [])),
    log:
        "logs/data/check_{dataset}.log",
    conda:
        PYTHON_ENV
    container:
        PYTHON_CONTAINER
    shell:
        "python -m goodtransfer check-dataset --kind {params.kind} --root {params.root}"
        " --classes {params.classes} --out {output} 2> {log}"
