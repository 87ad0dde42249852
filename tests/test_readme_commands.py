"""Every command of the README's fenced shell blocks runs as printed.

Each command is classified by its program (and subcommand): `snakemake` commands run as dry runs (`-n`
added) in a fresh copy of the workflow, and a stated job count ("(376 jobs)", "42 pretraining runs") must
equal the plan's; `make` runs as `make -n`; cheap commands (`goodtransfer spec`, `printf > overlay.yaml`)
run for real; what would train, build images or change the repository is checked as far as it can be
without doing so (its options exist, its files exist). A command of a kind the test does not know fails
the test: a new README command cannot slip through untested.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.workflow import ROOT, copy_workflow, no_slurm_cluster

README = ROOT / "README.md"
FENCE = re.compile(r"^```(\S*)\s*$")
SHELL_LANGUAGES = {"bash", "sh", "shell"}
OTHER_LANGUAGES = {"", "yaml", "text"}  # the layout listing; never commands
STATED_JOBS = re.compile(r"\((\d+) jobs\)")
STATED_PRETRAININGS = re.compile(r"(\d+) pretraining runs")
# Snakemake without a profile, --cores or --jobs refuses local execution ("cores have to be specified").
CORES_OPTIONS = ("--profile", "--cores", "-c", "--jobs", "-j")


@dataclass
class Command:
    line: int  # README line of the command's first line
    text: str  # the command as printed, continuation lines joined
    comment: str  # its trailing comment
    words: list[str] = field(default_factory=list)


def readme_commands(text: str) -> list[Command]:
    """The commands of every fenced shell block, in order; any other fenced block must be a known
    non-command language."""
    commands: list[Command] = []
    language: str | None = None
    pending: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        fence = FENCE.match(line)
        if fence:
            if language is None:
                language = fence[1]
                assert language in SHELL_LANGUAGES | OTHER_LANGUAGES, (
                    f"README.md:{number}: block {language!r}"
                )
            else:
                language = None
            continue
        if language not in SHELL_LANGUAGES or (not line.strip() and not pending):
            continue
        pending.append((number, line))
        if line.rstrip().endswith("\\"):
            continue
        joined = " ".join(part.rstrip().removesuffix("\\").strip() for _, part in pending)
        words = shlex.split(joined, comments=True)
        if words:
            comment = joined.partition(" # ")[2].strip()
            commands.append(Command(pending[0][0], joined, comment, words))
        pending = []
    return commands


def split_and(words: list[str]) -> list[list[str]]:
    """``a && b`` as its two commands."""
    parts: list[list[str]] = [[]]
    for word in words:
        if word == "&&":
            parts.append([])
        else:
            parts[-1].append(word)
    return parts


@dataclass
class Session:
    """What the commands share: the workflow copy they run in and shell variables set by earlier ones."""

    workdir: Path
    variables: dict[str, str] = field(default_factory=dict)
    plans: dict[str, str] = field(default_factory=dict)  # command text -> dry-run output


def run(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
    env = {**os.environ, **no_slurm_cluster(), "PATH": path}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def expand(words: list[str], session: Session) -> list[str]:
    return [session.variables.get(word[1:], word) if word.startswith("$") else word for word in words]


def job_counts(output: str) -> dict[str, int]:
    """Snakemake's 'Job stats' table of a dry run: rule -> job count, and 'total'."""
    table = output.partition("Job stats:")[2]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table.split("\n\n")[0], re.M)}


def snakemake_dry_run(command: Command, words: list[str], session: Session) -> None:
    options = set(words)
    dry = "-n" in options or "--dry-run" in options
    assert dry or options & set(CORES_OPTIONS), (
        f"README.md:{command.line}: `{command.text}` runs locally without --cores or a profile; "
        "Snakemake refuses it ('cores have to be specified')"
    )
    args = [sys.executable, "-m", "snakemake", *words[1:], *([] if dry else ["-n"])]
    done = run(args, session.workdir)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"README.md:{command.line}: `{command.text}` fails:\n{output[-3000:]}"
    counts = job_counts(done.stdout)
    if stated := STATED_JOBS.search(command.comment):
        assert counts.get("total") == int(stated[1]), (
            f"README.md:{command.line}: the comment says {stated[1]} jobs, "
            f"the plan lists {counts.get('total')}"
        )
    if stated := STATED_PRETRAININGS.search(command.comment):
        assert counts.get("pretrain") == int(stated[1]), (
            f"README.md:{command.line}: the comment says {stated[1]} pretraining runs, "
            f"the plan has {counts.get('pretrain')}"
        )
    session.plans[command.text] = done.stdout


def snakemake_report(command: Command, words: list[str], session: Session) -> None:
    # The report needs the finished workflow's files: tests/test_full_report.py runs this command after
    # its tiny workflow. Here: that test still does.
    assert words[1:3] == ["--report", "report.html"], command.text
    assert '"--report", "report.html"' in (ROOT / "tests/test_full_report.py").read_text()


def snakemake_track_datasets(command: Command, words: list[str], session: Session) -> None:
    """Tracks real datasets inside the repository: the embedded default has none, and the command says so;
    with a real dataset configured as the README's "Real datasets" says, it plans."""
    args = [sys.executable, "-m", "snakemake", *words[1:], "-n"]
    done = run(args, session.workdir)
    assert done.returncode != 0 and "no real dataset inside the repository" in done.stdout + done.stderr
    real = copy_workflow(session.workdir.parent / "real-dataset")
    config = yaml.safe_load((real / "config.yaml").read_text())
    config["datasets"]["imagenet"].update(root="data/imagenet", generate=False)
    (real / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    snakemake_dry_run(command, words, Session(real))


def snakemake_apptainer(command: Command, words: list[str], session: Session) -> None:
    """`--sdm apptainer` needs the apptainer binary even to plan. Without it (CI: no Debian or PyPI
    package), the command must get as far as asking for it (options, profile and config accepted), and
    plan without the software-deployment options."""
    if shutil.which("apptainer") or shutil.which("singularity"):
        snakemake_dry_run(command, words, session)
        return
    done = run([sys.executable, "-m", "snakemake", *words[1:], "-n"], session.workdir)
    output = done.stdout + done.stderr
    assert "The apptainer or singularity command has to be available" in output, output[-3000:]
    deployment = {"--sdm", "apptainer"} | {word for word in words if word.startswith("--apptainer-args")}
    snakemake_dry_run(command, [word for word in words if word not in deployment], session)


def snakemake_command(command: Command, words: list[str], session: Session) -> None:
    if "--report" in words:
        snakemake_report(command, words, session)
    elif "apptainer" in words:
        snakemake_apptainer(command, words, session)
    elif "track_datasets" in words:
        snakemake_track_datasets(command, words, session)
    else:
        snakemake_dry_run(command, words, session)


def make_dry_run(command: Command, words: list[str], session: Session) -> None:
    """`make -n` with the venv in a fresh folder: the commands `make` would run from a fresh clone."""
    venv = session.workdir / "make-venv"
    done = run(["make", "-n", f"VENV={venv}", *words[1:]], ROOT)
    assert done.returncode == 0, f"README.md:{command.line}: `{command.text}` fails:\n{done.stderr}"
    assert f"-m venv {venv}" in done.stdout, done.stdout
    index = next((word.partition("=")[2] for word in words if word.startswith("TORCH_INDEX=")), None)
    if index:
        pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
        torch_pins = " ".join(pin for pin in pins if re.match(r"torch(vision)?==", pin))
        assert f"--index-url {index} {torch_pins}" in done.stdout, done.stdout


def goodtransfer_command(command: Command, words: list[str], session: Session) -> None:
    done = run([sys.executable, "-m", "goodtransfer", *expand(words[1:], session)], session.workdir)
    assert done.returncode == 0, f"README.md:{command.line}: `{command.text}` fails:\n{done.stderr}"
    assert done.stdout.strip(), f"README.md:{command.line}: `{command.text}` printed nothing"
    session.variables["_"] = done.stdout.strip()


def assignment(command: Command, words: list[str], session: Session) -> None:
    """``name=$(goodtransfer ...)``: run the inner command, keep its output for ``"$name"`` later."""
    match = re.fullmatch(r"(\w+)=\$\((goodtransfer .*)\)", command.text.partition(" # ")[0].strip())
    assert match, f"README.md:{command.line}: only `name=$(goodtransfer ...)` is known: `{command.text}`"
    goodtransfer_command(command, shlex.split(match[2]), session)
    session.variables[match[1]] = session.variables.pop("_")


def torchrun_pretrain(command: Command, words: list[str], session: Session) -> None:
    """Trains at paper scale on a real ImageNet: every option it passes must exist, and the spec it
    passes must be the one `goodtransfer spec` printed above."""
    assert words[words.index("-m") + 1 : words.index("-m") + 3] == ["goodtransfer", "pretrain"], command.text
    ours = words[words.index("-m") + 3 :]
    help_text = run([sys.executable, "-m", "goodtransfer", "pretrain", "--help"], ROOT).stdout
    missing = [word for word in ours if word.startswith("--") and word not in help_text]
    assert not missing, f"README.md:{command.line}: `goodtransfer pretrain` has no {missing}"
    torchrun_help = run(["torchrun", "--help"], ROOT).stdout
    launcher = words[1 : words.index("-m")]
    missing = [word for word in launcher if word.startswith("--") and word not in torchrun_help]
    assert not missing, f"README.md:{command.line}: torchrun has no {missing}"
    assert "$spec" in ours and "spec" in session.variables, "the spec comes from `goodtransfer spec` above"


def printf_to_file(command: Command, words: list[str], session: Session) -> None:
    """``printf '...' > file``: writes a file the next commands read (run in the workflow copy)."""
    assert words[-2] == ">" and len(words) == 4, command.text
    done = run(["bash", "-c", command.text.partition(" # ")[0]], session.workdir)
    assert done.returncode == 0, done.stderr
    assert (session.workdir / words[-1]).read_text().strip()


def pip_install_extra(command: Command, words: list[str], session: Session) -> None:
    """``pip install -e '.[extra]'``: the extra exists, and its pinned packages are what this environment
    (installed by `make test`) has."""
    assert words[1:3] == ["install", "-e"] and len(words) == 4, command.text
    extra = re.fullmatch(r"\.\[(\w+)\]", words[3])
    assert extra, command.text
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extra[1] in extras, f"README.md:{command.line}: pyproject has no extra {extra[1]!r}"
    for pin in extras[extra[1]]:
        name, _, version = pin.partition("==")
        assert importlib.metadata.version(name) == version, pin


def apptainer_build(command: Command, words: list[str], session: Session) -> None:
    # CI cannot install Apptainer (no Debian or PyPI package); tests/test_containers.py parses the .def files.
    assert words[1] == "build" and words[2].endswith(".sif") and (ROOT / words[3]).is_file(), command.text


def repository_command(command: Command, words: list[str], session: Session) -> None:
    """git and dvc commands change the repository or need the lab's remote: the subcommand must exist
    (`git <sub> -h` prints its usage and exits 129; `dvc <sub> --help` exits 0)."""
    if words[0] == "git":
        done = run(["git", words[1], "-h"], ROOT)
        assert done.returncode == 129 and f"usage: git {words[1]}" in done.stdout + done.stderr, command.text
    else:
        done = run([sys.executable, "-m", "dvc", words[1], "--help"], ROOT)
        assert done.returncode == 0, f"README.md:{command.line}: `dvc {words[1]}` is not a command"


def kind(words: list[str]) -> Callable[[Command, list[str], Session], None] | None:
    program = words[0]
    if re.fullmatch(r"\w+=\$\(goodtransfer", program):
        return assignment
    return {
        "snakemake": snakemake_command,
        "make": make_dry_run if words[1:2] and words[1] in ("demo", "test") else None,
        "goodtransfer": goodtransfer_command if words[1:2] and words[1] in ("spec", "released") else None,
        "torchrun": torchrun_pretrain if "pretrain" in words else None,
        "printf": printf_to_file,
        "pip": pip_install_extra,
        "apptainer": apptainer_build,
        "git": repository_command if words[1:2] and words[1] in ("add", "commit", "pull") else None,
        "dvc": repository_command if words[1:2] and words[1] in ("pull", "push", "add") else None,
    }.get(program)


def test_readme_commands_are_all_of_a_known_kind():
    unknown = [
        f"README.md:{command.line}: {' '.join(part)}"
        for command in readme_commands(README.read_text())
        for part in split_and(command.words)
        if kind(part) is None
    ]
    assert unknown == []


def test_readme_extraction_joins_continuations_and_drops_comments():
    text = "```bash\nsnakemake -n a \\\n    b --configfile c.yaml   # plan (3 jobs)\n\nmake demo\n```\n"
    commands = readme_commands(text)
    assert [c.words for c in commands] == [
        ["snakemake", "-n", "a", "b", "--configfile", "c.yaml"],
        ["make", "demo"],
    ]
    assert commands[0].comment == "plan (3 jobs)" and commands[0].line == 2
    assert job_counts("Job stats:\njob  count\n---  ---\npretrain  42\ntotal  55\n\nrest") == {
        "pretrain": 42,
        "total": 55,
    }


@pytest.mark.workflow
def test_readme_commands_run_as_printed(tmp_path):
    if shutil.which("make") is None:
        pytest.fail("make is not installed; the README's first two commands need it")
    session = Session(copy_workflow(tmp_path / "readme"))
    commands = readme_commands(README.read_text())
    for command in commands:
        for part in split_and(command.words):
            handler = kind(part)
            assert handler is not None, f"README.md:{command.line}: unknown command `{command.text}`"
            handler(command, part, session)
    # The paper-scale plan is among them, and states its job count.
    paper_plans = [
        text for text in session.plans if "paper/build/report.pdf --configfile presets/paper.yaml" in text
    ]
    assert paper_plans and all(STATED_JOBS.search(text) for text in paper_plans), paper_plans
