# The paper's claims (config `claims`, checked: `report.claims`): `snakemake claims` compares the runs each
# claim names with paired statistics and writes results/claims.json; the report prints it as its Claims
# section. A claim's runs get the seeds it asks for (goodtransfer.config.downstream_seeds).


def claim_inputs(claim):
    """The files a claim reads: per-seed metrics of its runs, a false-positive analysis per run, or an
    inversion figure's metrics."""
    kind = claim.get("kind", "difference")
    if kind == "fp_share":
        return {
            side: f"results/fp_analysis/{claim['protocol']}/{claim[side]}.json"
            for side in ("a", "b")
        }
    if kind == "distance":
        return {"metrics": f"results/inversion/{claim['figure']}/metrics.json"}
    return {
        f"{claim['protocol']}/{run}": downstream_metrics(claim["protocol"], run)
        for run in gtc.claim_runs(claim)
    }


def checked_claims():
    """The claims `report.claims` lists, id -> declaration, in that order."""
    return {name: config["claims"][name] for name in gtc.checked_claims(config)}


def checked_claim_inputs():
    return {name: claim_inputs(claim) for name, claim in checked_claims().items()}


def flat_files(inputs):
    if isinstance(inputs, str):
        return [inputs]
    values = inputs.values() if isinstance(inputs, dict) else inputs
    return [path for value in values for path in flat_files(value)]


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
