# Shared wiring: resolved job specs (they are the rules' params, so a config edit reruns exactly the
# jobs it affects), software environments and paths.
import json
import re
import shlex
from pathlib import Path

from snakemake.exceptions import WorkflowError

from goodtransfer import config as gtc
from goodtransfer.fetch import released_sha256, released_url
from goodtransfer.config_check import detection_protocols
from goodtransfer.published import check_published_run

FP_FIGURES = (
    "fp_trend",
    "fp_breakdown",
)  # figures drawn from Hoiem-style false-positive analyses
PYTHON_ENV = "../envs/pytorch.yaml"
PYTHON_CONTAINER = "containers/pytorch.sif"
REPORT_ENV = "../envs/report.yaml"
REPORT_CONTAINER = "containers/report.sif"


def spec_json(spec):
    return json.dumps(spec, sort_keys=True)


def dataset_root(name):
    return gtc.dataset_of(config, name)["root"]


def dataset_check(name):
    return f"results/datasets/{name}.json"


def protocols_pattern():
    """Wildcard constraint matching exactly the configured ``downstream`` protocols."""
    return "|".join(map(re.escape, config["downstream"])) or "(?!)"


def voc_protocols_pattern():
    """The protocols of task voc_detection (the false-positive analyses read their detections)."""
    return "|".join(map(re.escape, detection_protocols(config))) or "(?!)"


def protocol_checks(protocol):
    """The dataset checks a protocol needs: its own dataset and any extra training set."""
    entry = gtc.downstream_entry(config, protocol)
    names = [
        entry["dataset"],
        *(item["dataset"] for item in entry.get("extra_train", [])),
    ]
    return [dataset_check(name) for name in names]


def extra_train_args(protocol):
    pairs = gtc.extra_train_sets(config, protocol)
    return " ".join(
        f"--extra-train {shlex.quote(root)} {shlex.quote(split)}"
        for root, split in pairs
    )


def pretrain_dataset(run):
    return gtc.pretrain_spec(config, run)["dataset"]


def pretrain_input(run):
    """An imported run depends on its source file; a trained one on its dataset's check (and a task run on
    its init_from file). A published run (its checkpoint tracked by DVC, e.g. after `git clone` +
    `dvc pull`) is not retrained while the config still describes it: its dataset check, where this
    workspace has one, is an input whose age does not count, so publishing changes nothing Snakemake
    reruns on; a changed setting fails here naming the keys.
    """
    trained = Path(checkpoint_of(run))
    spec = gtc.pretrain_spec(config, run)
    if Path(f"{trained}.dvc").is_file():
        if not trained.is_file():
            raise WorkflowError(
                f"{trained} is published with DVC ({trained}.dvc) but not in this workspace: "
                f"run `dvc pull {trained}.dvc`, or delete the .dvc files to retrain it"
            )
        check_published_run(run, spec, trained, trained.parent / "train_log.json")
        source = spec.get("import_from") or dataset_check(spec["dataset"])
        return [ancient(source)] if Path(source).is_file() else []
    if spec.get("import_from"):
        return [spec["import_from"]]
    return [dataset_check(spec["dataset"]), *filter(None, [spec.get("init_from")])]


EPOCH_RUN = re.compile(r"(?P<run>.+)@ep(?P<epoch>[0-9]+)")


def split_epoch(run):
    """'mocov2-frcgb@ep10' -> ('mocov2-frcgb', 10): the backbone that run kept at epoch 10 (Figure 4);
    a plain run name -> (run, None)."""
    match = EPOCH_RUN.fullmatch(run)
    return (run, None) if match is None else (match["run"], int(match["epoch"]))


def checkpoint_of(run):
    """The finished pretraining a downstream job waits for (for 'run@epN' the whole run)."""
    return f"results/pretrain/{split_epoch(run)[0]}/checkpoint.pt"


def checkpoint_file(run):
    """The backbone a downstream job reads: the run's final one, or the one kept at epoch N."""
    base, epoch = split_epoch(run)
    spec = gtc.pretrain_spec(config, base)
    if epoch is None or epoch == spec["epochs"]:
        return checkpoint_of(base)
    keep = spec.get("keep_every", 0)
    if not keep or epoch % keep or epoch > spec["epochs"]:
        raise WorkflowError(
            f"{run}: pretraining run {base!r} keeps no backbone at epoch {epoch}; set "
            f"pretrain.runs.{base}.keep_every to a divisor of {epoch} (epochs: {spec['epochs']})"
        )
    return f"results/pretrain/{base}/epochs/epoch_{epoch:04d}.pt"


def curve_inputs(entry):
    """Figure 4's metrics: per label, {epoch: VOC metrics of the backbone kept then} and the
    fine-tuning run evaluated every eval_period iterations."""
    protocol, curve = entry["protocol"], entry["curve_protocol"]
    epochs, curves = {}, {}
    for item in entry["runs"]:
        final = gtc.pretrain_spec(config, item["run"])["epochs"]
        epochs[item["label"]] = {
            epoch: downstream_metrics(
                protocol, item["run"] if epoch == final else f"{item['run']}@ep{epoch}"
            )[0]
            for epoch in entry["epochs"]
        }
        curves[item["label"]] = downstream_metrics(curve, item["run"])[0]
    return epochs, curves


def check_option(name, key, default):
    """A dataset's ``check`` setting: ``decode`` (fast: headers and a sample, full: every image), ``sample``."""
    return gtc.dataset_of(config, name).get("check", {}).get(key, default)


def generated_dataset(wildcards):
    """A dataset this workflow makes (a generated stand-in or a derived subset) is an input of its check."""
    entry = gtc.dataset_of(config, wildcards.dataset)
    return [entry["root"]] if entry.get("generate") or entry.get("derive") else []


def derive_args(name):
    derive = gtc.dataset_of(config, name)["derive"]
    args = ["--seed", config["seed"]]
    if derive.get("classes_file"):
        args += ["--classes-file", derive["classes_file"]]
    if derive.get("classes"):
        args += ["--classes", *derive["classes"]]
    if derive.get("fraction") is not None:
        args += ["--fraction", derive["fraction"]]
    return shlex.join(map(str, args))


def track_commands():
    """`goodtransfer track-dataset` for every real dataset (not generated, not derived) in the repository."""
    commands = []
    for name, entry in config["datasets"].items():
        root = Path(entry["root"])
        if (
            entry.get("generate")
            or entry.get("derive")
            or root.is_absolute()
            or ".." in root.parts
        ):
            continue
        decode = entry.get("check", {}).get("decode", "fast")
        words = ["--kind", entry["kind"], "--root", str(root), "--decode", decode]
        words += ["--classes", *entry["classes"]] if entry.get("classes") else []
        commands.append(f"python -m goodtransfer track-dataset {shlex.join(words)}")
    if not commands:
        raise WorkflowError(
            "track_datasets: no real dataset inside the repository; DVC tracks folders in the repository "
            "(e.g. data/imagenet, with `generate: false`)"
        )
    return " && ".join(commands)


def generator_options(name):
    """The stand-in generator's options as JSON (VOC also needs the class list)."""
    entry = gtc.dataset_of(config, name)
    options = dict(entry["generate"])
    options.pop("seed", None)  # generator_seed's
    if entry["kind"] == "voc":
        options["classes"] = entry["classes"]
    return json.dumps(options, sort_keys=True)


def generator_seed(name):
    """A stand-in's own ``generate.seed`` (so two sets of one kind differ, e.g. VOC2012 and VOC2007), else
    the workflow's seed."""
    return gtc.dataset_of(config, name)["generate"].get("seed", config["seed"])


def downstream_metrics(protocol, run):
    """The metrics.json of each seed of ``run`` under ``protocol``."""
    return [
        f"results/{protocol}/{run}/seed{seed}/metrics.json"
        for seed in gtc.downstream_seeds(config, protocol, run)
    ]


def first_seed(protocol):
    """The seed whose run a figure draws (its detections, its curve)."""
    return gtc.downstream_seeds(config, protocol)[0]


def table_metrics(table):
    """'protocol/run' -> the seeds' metrics.json files, for every cell of ``table``."""
    declaration = config["tables"][table]
    protocols = {column["protocol"] for column in declaration["columns"]}
    return {
        f"{protocol}/{run}": downstream_metrics(protocol, run)
        for protocol in sorted(protocols)
        for run in gtc.table_runs(config, table)
    }


def table_reference(table):
    """The file of the table's reference numbers: the paper's (copied from its tables), or its own."""
    return config["tables"][table].get(
        "reference_file", "paper/reference/reference_results.yaml"
    )


def table_tolerance(table):
    """The table's tolerance settings, else the report's; None: no cell is marked."""
    return config["tables"][table].get("tolerance", config["report"].get("tolerance"))


def finished_runs(wildcards):
    """Checkpoint and training log of every pretraining run that has both (what `publish` shares)."""
    files = []
    for run in gtc.pretrain_runs(config):
        folder = Path(checkpoint_of(run)).parent
        if (folder / "checkpoint.pt").is_file() and (
            folder / "train_log.json"
        ).is_file():
            files += [str(folder / "checkpoint.pt"), str(folder / "train_log.json")]
    return files


def inversion_figures_pattern():
    """Wildcard constraint matching exactly the configured ``inversion`` figures."""
    names = [
        name
        for name, entry in config.get("figures", {}).items()
        if entry["kind"] == "inversion"
    ]
    return "|".join(map(re.escape, names)) or "(?!)"


def lpips_files(entry):
    """The LPIPS files an inversion figure reads: the feature network, and its linear layers if named."""
    settings = entry["settings"]
    return [
        path
        for path in (settings["lpips_weights"], settings.get("lpips_linear"))
        if path
    ]


def inversion_spec(entry):
    """What an inversion figure's `invert` job depends on: its runs and images, and its settings with the
    compute settings and seed (a caption edit redraws the figure, not the inversions).
    """
    settings = {**entry["settings"], **config["compute"], "seed": config["seed"]}
    return {"runs": entry["runs"], "images": entry["images"], "settings": settings}


def figure_analyses(entry):
    """One analysis per run a figure shows, in the figure's order."""
    return [
        f"results/fp_analysis/{entry['protocol']}/{run['run']}.json"
        for run in entry["runs"]
    ]


def paper_values(entry):
    """The file of the paper's values a figure draws beside ours, if it names one."""
    return [entry["paper"]["values"]] if "paper" in entry else []


def fp_analysis_options(protocol):
    """Hoiem-style analysis settings of the figures drawn from ``protocol`` (the same for all of them)."""
    for entry in config.get("figures", {}).values():
        if entry["kind"] in FP_FIGURES and entry["protocol"] == protocol:
            return entry.get("analysis", {})
    return {}


def deviations_registry():
    """The registry of departures from the paper, if the config names one (report.deviations)."""
    entry = config["report"].get("deviations")
    return [entry["registry"]] if entry else []


def deviations_args():
    """`goodtransfer table` arguments that put the registry's notes under a table."""
    entry = config["report"].get("deviations")
    return (
        ["--deviations", entry["registry"], "--scale", entry["scale"]] if entry else []
    )


def report_figures():
    return [
        f"results/figures/{name}.json" for name in config["report"].get("figures", [])
    ]


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
        f"{claim['protocol']}/{run}": [
            path
            for replica in gtc.pretrain_replicas(config, run)
            for path in downstream_metrics(claim["protocol"], replica)
        ]
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
