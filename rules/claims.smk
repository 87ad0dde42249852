# The paper's claims (config `claims`, checked: `report.claims`): `snakemake claims` compares the runs each
# claim names with paired statistics and writes results/claims.json; the report prints it as its Claims
# section. A claim's runs get the seeds it asks for (goodtransfer.config.downstream_seeds).


rule claims:
    input:
        files=lambda w: sorted(set(flat_files(checked_claim_inputs()))),
        reference="paper/reference/reference_results.yaml",
    output:
        "results/claims.json",
    log:
        "logs/report/claims.log",
    conda:
        PYTHON_ENV
    container:
        PYTHON_CONTAINER
    params:
        claims=lambda w: spec_json(checked_claims()),
        inputs=lambda w: spec_json(checked_claim_inputs()),
    shell:
        "python -m goodtransfer claims --claims {params.claims:q} --inputs {params.inputs:q}"
        " --reference {input.reference:q} --out {output:q} 2> {log:q}"
