"""``goodtransfer <command>``: the entry points that Snakemake rules call; each writes atomically."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from goodtransfer.io import InputError, read_yaml, sweep_leftovers, unwind_on_sigterm, write_json


def _threads(count: int) -> None:
    import torch

    torch.set_num_threads(max(count, 1))


def _pretrain(args: argparse.Namespace) -> None:
    from goodtransfer.pretrain.train import pretrain

    pretrain(json.loads(args.spec), args.data, args.out, args.state_dir, args.train_log, args.data_check)


def _downstream(args: argparse.Namespace) -> None:
    from goodtransfer.transfer.tasks import DownstreamJob, run

    extra = tuple((Path(root), split) for root, split in args.extra_train or [])
    spec = json.loads(args.spec)
    run(DownstreamJob(spec, args.checkpoint, args.data, args.metrics, args.state_dir, extra, args.data_check))


def _check_dataset(args: argparse.Namespace) -> None:
    from goodtransfer.data.registry import check

    write_json(args.out, check(args.kind, args.root, args.classes or None, args.decode, args.decode_sample))


def _generate(args: argparse.Namespace) -> None:
    from goodtransfer.data.registry import generate

    generate(args.kind, args.root, args.seed, json.loads(args.options))


def _table(args: argparse.Namespace) -> None:
    from goodtransfer.report.tables import build_table
    from goodtransfer.report.tolerance import Tolerance

    declaration = json.loads(args.declaration)
    metrics = json.loads(args.metrics)
    tolerance = None if args.tolerance is None else Tolerance.from_dict(json.loads(args.tolerance))
    notes = list(args.note or [])
    if args.deviations:
        from goodtransfer.report import deviations as dv

        entries = dv.at_scale(dv.load_registry(args.deviations), args.scale)
        notes += dv.note(dv.touching_table(entries, args.name, declaration))
    table = build_table(args.name, declaration, metrics, read_yaml(args.reference), notes, tolerance)
    write_json(args.out, table)


def _claims(args: argparse.Namespace) -> None:
    from goodtransfer.report.claims import evaluate_claims

    write_json(
        args.out, evaluate_claims(json.loads(args.claims), json.loads(args.inputs), read_yaml(args.reference))
    )


def _report_context(args: argparse.Namespace) -> None:
    from goodtransfer.report.context import build_context

    write_json(args.out, build_context(args.tables, json.loads(args.config), args.scale_note))


def _derive_subset(args: argparse.Namespace) -> None:
    from goodtransfer.data.subsets import derive_subset, read_class_list

    classes = read_class_list(args.classes_file) if args.classes_file else args.classes
    summary = derive_subset(args.source, args.out, classes=classes, fraction=args.fraction, seed=args.seed)
    print(f"derived {args.out}: {json.dumps(summary)}", file=sys.stderr)


def _track_dataset(args: argparse.Namespace) -> None:
    from goodtransfer.data.registry import check
    from goodtransfer.publish import track

    summary = check(args.kind, args.root, args.classes or None, args.decode, args.decode_sample)
    pointer = track(args.root)
    print(f"checked {args.root} ({json.dumps(summary)}); commit {pointer} with git", file=sys.stderr)


def _publish(args: argparse.Namespace) -> None:
    from goodtransfer.publish import publish

    tracked = publish(args.runs)
    print("published; commit these with git:\n  git add " + " ".join(map(str, tracked)), file=sys.stderr)


def _fetch(args: argparse.Namespace) -> None:
    from goodtransfer.fetch import fetch

    sha256 = fetch(args.url, args.out, expected_sha256=args.sha256)
    print(f"fetched {args.url} -> {args.out} (sha256 {sha256})", file=sys.stderr)


def _fp_analysis(args: argparse.Namespace) -> None:
    from goodtransfer.evaluate.error_analysis import write_analysis
    from goodtransfer.transfer.tasks import file_beside

    options = json.loads(args.options)
    detections = file_beside(args.metrics, "detections.json")
    write_analysis(
        args.out, detections, args.voc_root, args.split, top_n=options.pop("top_n", None), **options
    )


def _invert(args: argparse.Namespace) -> None:
    from goodtransfer.evaluate.inversion import invert_figure

    spec = json.loads(args.spec)
    invert_figure(args.name, spec, args.checkpoints, args.data, args.work_dir, args.metrics, args.out_pdf)


def _figure(args: argparse.Namespace) -> None:
    from goodtransfer.report import paper_figures as pf

    spec = json.loads(args.spec)
    if spec["kind"] == "inversion":
        if not (args.inversion_metrics and args.grid):
            raise InputError(f"figure {args.name}: an inversion figure needs --inversion-metrics and --grid")
        inputs = (args.inversion_metrics, args.grid)
        pf.make_inversion_figure(args.name, spec, *inputs, args.out_pdf, args.out_json)
    elif spec["kind"] == "training_curves":
        epochs, curves = json.loads(args.epoch_metrics), json.loads(args.curve_metrics)
        pf.make_training_curves_figure(args.name, spec, epochs, curves, args.out_pdf, args.out_json)
    else:
        pf.make_figure(args.name, spec, args.analyses, args.out_pdf, args.out_json)


def _random_network(args: argparse.Namespace) -> None:
    from goodtransfer.evaluate.perceptual import write_random_network

    write_random_network(args.net, args.seed, args.out)


def _released(args: argparse.Namespace) -> None:
    from goodtransfer.fetch import dvc_import_commands

    print("\n".join(dvc_import_commands(args.registry)))


def _spec(args: argparse.Namespace) -> None:
    from goodtransfer import config as gtc

    merged: dict = {}
    for path in ["config.yaml", *args.configfile]:
        merged = gtc.deep_merge(merged, read_yaml(path))
    if args.kind == "pretrain":
        spec = gtc.pretrain_spec(merged, args.run)
    else:
        spec = gtc.downstream_spec(merged, args.kind, args.run)
    print(json.dumps(spec, sort_keys=True))


def _decode_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--decode",
        choices=("fast", "full"),
        default="fast",
        help="fast: read every image header and decode a sample per split; full: decode every image",
    )
    command.add_argument(
        "--decode-sample", type=int, default=32, metavar="N", help="images decoded per split in fast mode"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="goodtransfer", description=__doc__)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for PyTorch")
    sub = parser.add_subparsers(dest="command", required=True)
    job = sub.add_parser("pretrain", help="pretrain one run")
    job.add_argument("--state-dir", type=Path, required=True, help="resumable state lives here")
    job.add_argument("--train-log", type=Path, required=True, help="per-epoch loss and speed, JSON")
    job.set_defaults(func=_pretrain)
    down = sub.add_parser("downstream", help="one run of a downstream protocol (goodtransfer.transfer.tasks)")
    down.add_argument("--checkpoint", type=Path, required=True, help="the backbone")
    down.add_argument("--metrics", type=Path, required=True, help="metrics.json; other outputs go beside it")
    down.add_argument("--state-dir", type=Path, required=True, help="resumable state lives here")
    down.add_argument(
        "--extra-train", nargs=2, action="append", metavar=("ROOT", "SPLIT"),
        help="another training set of the protocol's extra_train, e.g. VOC2012 trainval for 07+12",
    )  # fmt: skip
    down.set_defaults(func=_downstream)
    for command in (job, down):
        command.add_argument("--spec", required=True, help="the job's resolved spec, JSON")
        command.add_argument("--data", type=Path, required=True, help="dataset root")
        command.add_argument(
            "--data-check",
            type=Path,
            nargs="*",
            default=[],
            help="the datasets' check records: resumable state is keyed on their content",
        )
    job.add_argument("--out", type=Path, required=True)
    check = sub.add_parser("check-dataset", help="check a dataset's layout and write a summary")
    check.add_argument("--kind", required=True, help="a dataset kind: imagefolder, voc, coco, ...")
    check.add_argument("--root", type=Path, required=True)
    check.add_argument("--classes", nargs="*", default=None)
    check.add_argument("--out", type=Path, required=True)
    _decode_options(check)
    check.set_defaults(func=_check_dataset)
    generate = sub.add_parser("generate", help="write a generated stand-in dataset in its real format")
    generate.add_argument("--kind", required=True, help="a dataset kind: imagefolder, voc, coco, ...")
    generate.add_argument("--root", type=Path, required=True)
    generate.add_argument("--seed", type=int, required=True)
    generate.add_argument("--options", required=True, help="the dataset's generate options, JSON")
    generate.set_defaults(func=_generate)
    table = sub.add_parser("table", help="assemble a table JSON from metrics files")
    table.add_argument("--name", required=True)
    table.add_argument("--declaration", required=True, help="the table's config entry, JSON")
    table.add_argument(
        "--metrics", required=True, help="JSON mapping 'protocol/run' to the metrics.json of each seed"
    )
    table.add_argument(
        "--tolerance", help="JSON {level, paper_runs, paper_std}: mark cells further than the seeds explain"
    )
    table.add_argument("--reference", type=Path, required=True)
    table.add_argument("--note", action="append")
    table.add_argument(
        "--deviations", type=Path, help="registry of departures: note those touching the table"
    )
    table.add_argument(
        "--scale", choices=("embedded", "paper", "released"), default="embedded", help="of --deviations"
    )
    table.add_argument("--out", type=Path, required=True)
    table.set_defaults(func=_table)
    claims = sub.add_parser("claims", help="check the paper's claims with paired statistics")
    claims.add_argument("--claims", required=True, help="the config's claims section, JSON")
    claims.add_argument("--inputs", required=True, help="JSON mapping each claim to its metrics files")
    claims.add_argument("--reference", type=Path, required=True)
    claims.add_argument("--out", type=Path, required=True)
    claims.set_defaults(func=_claims)
    context = sub.add_parser("report-context", help="collect the report's provenance")
    context.add_argument("--tables", type=Path, nargs="+", required=True)
    context.add_argument("--config", required=True, help="the workflow config, JSON")
    context.add_argument("--scale-note", required=True)
    context.add_argument("--out", type=Path, required=True)
    context.set_defaults(func=_report_context)
    derive = sub.add_parser("derive-subset", help="an ImageNet subset as a tree of links (Table 2)")
    derive.add_argument("--source", type=Path, required=True)
    derive.add_argument("--out", type=Path, required=True)
    derive.add_argument("--classes-file", type=Path, help="keep these classes (one WordNet id per line)")
    derive.add_argument("--classes", nargs="+", help="keep these classes (instead of --classes-file)")
    derive.add_argument("--fraction", type=float, help="keep this fraction of each class's training images")
    derive.add_argument("--seed", type=int, default=0)
    derive.set_defaults(func=_derive_subset)
    track = sub.add_parser("track-dataset", help="check a real dataset in place, then `dvc add` it")
    track.add_argument("--kind", required=True)
    track.add_argument("--root", type=Path, required=True)
    track.add_argument("--classes", nargs="*", default=None)
    _decode_options(track)
    track.set_defaults(func=_track_dataset)
    share = sub.add_parser("publish", help="dvc add + dvc push finished pretraining runs")
    share.add_argument("runs", type=Path, nargs="+", help="run folders, e.g. results/pretrain/mocov2-f")
    share.set_defaults(func=_publish)
    fetch = sub.add_parser("fetch", help="download a released checkpoint (atomic, records its SHA-256)")
    fetch.add_argument("--url", required=True)
    fetch.add_argument("--out", type=Path, required=True)
    fetch.add_argument(
        "--sha256", default="", help="the digest (or its leading hex digits) the file must have; else refused"
    )
    fetch.set_defaults(func=_fetch)
    fp = sub.add_parser("fp-analysis", help="false-positive types of VOC detections (Hoiem et al. 2012)")
    fp.add_argument(
        "--metrics", type=Path, required=True, help="a VOC run's metrics.json (detections beside)"
    )
    fp.add_argument("--voc-root", type=Path, required=True)
    fp.add_argument("--split", required=True)
    fp.add_argument("--options", default="{}", help="analysis options, JSON (top_n, toolbox_cut, ...)")
    fp.add_argument("--out", type=Path, required=True)
    fp.set_defaults(func=_fp_analysis)
    figure = sub.add_parser("figure", help="plot a paper figure from its analyses")
    figure.add_argument("--name", required=True)
    figure.add_argument("--spec", required=True, help="the figure's config entry, JSON")
    figure.add_argument("--analyses", type=Path, nargs="*", default=[], help="fp_* figures: one per run")
    figure.add_argument("--inversion-metrics", type=Path, help="inversion: the metrics.json of `invert`")
    figure.add_argument("--grid", type=Path, help="inversion: the grid PDF of `invert`")
    figure.add_argument(
        "--epoch-metrics", default="{}", help="training_curves: JSON {label: {epoch: metrics.json}}"
    )
    figure.add_argument(
        "--curve-metrics", default="{}", help="training_curves: JSON {label: metrics.json with a curve}"
    )
    figure.add_argument("--out-pdf", type=Path, required=True)
    figure.add_argument("--out-json", type=Path, required=True)
    figure.set_defaults(func=_figure)
    invert = sub.add_parser("invert", help="deep-image-prior inversions of an inversion figure (Figs. 2, 6)")
    invert.add_argument("--name", required=True)
    invert.add_argument("--spec", required=True, help="the figure's config entry with its settings, JSON")
    invert.add_argument("--checkpoints", type=Path, nargs="+", required=True, help="one per run, in order")
    invert.add_argument("--data", type=Path, required=True, help="the dataset the images come from")
    invert.add_argument("--work-dir", type=Path, required=True, help="input and reconstruction PNGs")
    invert.add_argument("--metrics", type=Path, required=True, help="LPIPS per run and image, JSON")
    invert.add_argument("--out-pdf", type=Path, required=True, help="the grid of inputs and reconstructions")
    invert.set_defaults(func=_invert)
    network = sub.add_parser("random-network", help="a seeded random LPIPS feature network (a stand-in)")
    network.add_argument("--net", required=True)
    network.add_argument("--seed", type=int, required=True)
    network.add_argument("--out", type=Path, required=True)
    network.set_defaults(func=_random_network)
    released = sub.add_parser("released", help="print `dvc import-url` lines for the authors' checkpoints")
    released.add_argument("--registry", type=Path, default=Path("paper/reference/released_checkpoints.yaml"))
    released.set_defaults(func=_released)
    spec = sub.add_parser("spec", help="print a job's resolved spec (JSON), as the workflow passes it")
    spec.add_argument("kind", help="pretrain, or a downstream protocol such as linear or voc07")
    spec.add_argument("run")
    spec.add_argument("--configfile", nargs="*", default=[], help="overrides on top of ./config.yaml")
    spec.set_defaults(func=_spec)
    return parser


OUTPUT_ARGS = ("out", "metrics", "train_log", "out_pdf", "out_json")
OWNED_DIR_ARGS = ("state_dir", "work_dir")


def _sweep(args: argparse.Namespace) -> None:
    """Leftovers of a killed earlier run of this job: temporary files beside its outputs, a partial
    dataset folder of the one it generates, temporary files in its own state folders. Under torchrun
    rank 0 sweeps, before the process group forms (no rank writes before that)."""
    if os.environ.get("RANK", "0") != "0":
        return
    outputs = [getattr(args, name) for name in OUTPUT_ARGS if getattr(args, name, None)]
    if args.command == "generate":
        outputs.append(args.root)
    owned = [Path(getattr(args, name)) for name in OWNED_DIR_ARGS if getattr(args, name, None)]
    if args.command == "pretrain":
        owned.append(Path(args.out).parent / "epochs")  # the backbones kept every keep_every epochs
    sweep_leftovers(outputs, owned)


def _message(err: InputError) -> str:
    """The error's own text; one raised in a DataLoader worker arrives wrapped in the worker's traceback."""
    text = str(err)
    if "Original Traceback (most recent call last)" not in text:
        return text
    last = text.rstrip().splitlines()[-1]
    return last.removeprefix(f"{InputError.__module__}.{InputError.__name__}: ")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # SLURM sends SIGTERM at the time limit: unwind (so atomic writes delete their temporary files)
    # and exit with the conventional 128 + 15; the next attempt resumes from the last saved state.
    unwind_on_sigterm()
    try:
        _sweep(args)
        if args.command in {"pretrain", "downstream", "invert"}:
            _threads(args.threads)
        args.func(args)
    except InputError as err:
        print(f"goodtransfer {args.command}: error: {_message(err)}", file=sys.stderr)
        return 2
    except SystemExit as stop:
        if stop.code == 128 + signal.SIGTERM:  # printed after unwinding: the clean-up has happened
            print(
                f"goodtransfer {args.command}: stopped by SIGTERM; its temporary files are removed and no "
                "output was finished; run the job again to resume from its last saved state",
                file=sys.stderr,
            )
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
