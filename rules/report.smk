# Tables and the report. A table is declared in the config (rows = pretraining runs, columns =
# protocol metrics); `snakemake table1` builds one, `paper/build/report.pdf` builds them all.


rule table_json:
    input:
        lambda w: [path for paths in table_metrics(w.table).values() for path in paths],
        reference=lambda w: table_reference(w.table),
        deviations=deviations_registry(),
    output:
        report(
            "results/tables/{table}.json",
            caption="../paper/report/table.rst",
            category="Tables",
        ),
    log:
        "logs/tables/{table}.log",
    conda:
        PYTHON_ENV
    container:
        PYTHON_CONTAINER
    params:
        declaration=lambda w: spec_json(config["tables"][w.table]),
        metrics=lambda w: spec_json(table_metrics(w.table)),
        note=config["report"]["scale_note"],
        tolerance=lambda w: (
            []
            if table_tolerance(w.table) is None
            else ["--tolerance", spec_json(table_tolerance(w.table))]
        ),
        deviations=deviations_args(),
    shell:
        "python -m goodtransfer table --name {wildcards.table:q} --declaration {params.declaration:q}"
        " --metrics {params.metrics:q} --reference {input.reference:q} --note {params.note:q} {params.tolerance:q}"
        " {params.deviations:q} --out {output:q} 2> {log:q}"


rule table_tex:
    input:
        table="results/tables/{table}.json",
        template="paper/tables/table.tex.j2",
    output:
        "paper/build/tables/{table}.tex",
    log:
        "logs/tables/{table}_tex.log",
    conda:
        REPORT_ENV
    container:
        REPORT_CONTAINER
    shell:
        "python -m goodtransfer.report.render table --table-json {input.table:q} --templates paper"
        " --out-tex {output:q} 2> {log:q}"


for _table in config["tables"]:

    rule:
        name:
            _table
        input:
            f"results/tables/{_table}.json",
            f"paper/build/tables/{_table}.tex",


rule report_context:
    input:
        tables=expand("results/tables/{table}.json", table=config["report"]["tables"]),
        deviations=deviations_registry(),
    output:
        "results/report/context.json",
    log:
        "logs/report/context.log",
    conda:
        PYTHON_ENV
    container:
        PYTHON_CONTAINER
    params:
        config=spec_json(config),
        scale_note=config["report"]["scale_note"],
    shell:
        "python -m goodtransfer report-context --tables {input.tables:q} --config {params.config:q}"
        " --scale-note {params.scale_note:q} --out {output:q} 2> {log:q}"


rule report:
    input:
        tables=expand("results/tables/{table}.json", table=config["report"]["tables"]),
        context="results/report/context.json",
        figures=report_figures(),
        claims=["results/claims.json"] if gtc.checked_claims(config) else [],
        templates=["paper/report.tex.j2", "paper/tables/table.tex.j2"],
    output:
        tex="paper/build/report.tex",
        pdf=report(
            "paper/build/report.pdf",
            caption="../paper/report/report.rst",
            category="Report",
        ),
    log:
        "logs/report/report.log",
    conda:
        REPORT_ENV
    container:
        REPORT_CONTAINER
    params:
        claims=lambda w, input: (
            f"--claims {shlex.quote(input.claims[0])}" if input.claims else ""
        ),
    shell:
        "python -m goodtransfer.report.render report --tables {input.tables:q} --context {input.context:q}"
        " --figures {input.figures:q} {params.claims} --templates paper --out-tex {output.tex:q} --out-pdf {output.pdf:q} 2> {log:q}"
