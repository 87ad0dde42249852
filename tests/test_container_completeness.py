"""Every rule's conda env and container hold what its command imports and runs, and the env files'
project line resolves from the copy Snakemake creates an env from.

The checker (tests/completeness.py) maps each rule of the real workflow to the distributions and
executables its command needs; the negative cases run the same checker on a copy of one definition or env
file with one package taken out. No conda here (`conda`, `mamba`, `micromamba` are not installed): the env
location comes from Snakemake's own Env class, and the step conda would take, running pip on the env's pip
lines in the folder of the env file it was given, runs the real pip on them in that folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.api import SnakemakeApi
from snakemake.common import copy_permission_safe
from snakemake.settings.types import (
    DAGSettings,
    DeploymentMethod,
    DeploymentSettings,
    OutputSettings,
    ResourceSettings,
)

from tests import completeness
from tests.test_containers import is_local
from tests.workflow import copy_workflow

ROOT = Path(__file__).resolve().parents[1]


def uses_by_name() -> dict[str, completeness.RuleUse]:
    return {use.name: use for use in completeness.workflow_rules()}


def test_every_rule_with_software_is_mapped_to_its_commands():
    uses = uses_by_name()
    assert {"check_dataset", "pretrain", "downstream", "invert", "publish", "track_datasets"} <= set(uses)
    assert {"table_json", "table_tex", "report_context", "report"} <= set(uses)
    for use in uses.values():
        assert use.env is not None and use.env.is_file(), f"rule {use.name}: conda env {use.env}"
        assert use.definition is not None and use.definition.is_file(), f"rule {use.name}: {use.definition}"
        assert use.commands, f"rule {use.name}: no command found in its shell line"
    # The launcher param: python for one GPU, torchrun with one rank per GPU for several.
    assert {exe for exe, _ in uses["pretrain"].commands} == {"python", "torchrun"}
    # track_datasets' commands are built by a workflow function (track_commands) behind {params.commands}.
    assert uses["track_datasets"].commands == (("python", "-m goodtransfer track-dataset"),)
    assert uses["report"].commands[0][1].startswith("-m goodtransfer.report.render report")


def test_needs_follow_lazy_imports_third_party_submodules_and_started_executables():
    uses = uses_by_name()
    invert = completeness.needs_of(uses["invert"])
    # goodtransfer.cli imports each command's module inside its handler: invert reaches matplotlib that way.
    assert "matplotlib" in invert.distributions, invert.distributions
    assert "goodtransfer.cli > goodtransfer.evaluate.inversion" in invert.distributions["matplotlib"]
    # torch.utils.tensorboard imports tensorboard, which torch does not require.
    assert "tensorboard" in completeness.needs_of(uses["pretrain"]).distributions
    assert "dvc" in completeness.needs_of(uses["publish"]).executables
    assert "git" in completeness.needs_of(uses["report_context"]).executables
    report = completeness.needs_of(uses["report"])
    assert {"latexmk", "pdflatex", "python"} <= set(report.executables)
    assert {"jinja2", "pyyaml"} <= set(report.distributions)
    # Only the subcommand's own handler counts: rendering pulls in no torch, fetching no matplotlib.
    assert "torch" not in report.distributions
    assert "matplotlib" not in completeness.needs_of(uses["fetch_released_checkpoint"]).distributions


def test_every_env_and_image_holds_what_its_rules_need():
    problems = completeness.completeness_problems()
    assert problems == [], "\n".join(problems)


def test_host_executables_of_an_env_are_in_its_rules_images():
    """An env that leaves an executable to the host (LaTeX: conda-forge has none that builds the report)
    names it; the image of the same rules must then have it, so the container route is complete."""
    for use in completeness.workflow_rules():
        host = (
            completeness.env_provides(use.env).executables
            - completeness.env_provides(use.env, host=False).executables
        )
        missing = host - completeness.definition_provides(use.definition).executables
        assert not missing, (
            f"rule {use.name}: {use.env} leaves {missing} to the host; {use.definition} lacks them"
        )


def without(text: str, word: str) -> str:
    """``text`` less the YAML list item ``word`` or, failing that, its first whole word ``word``."""
    item = re.compile(rf"^\s*- {re.escape(word)}(?:\s+#.*)?\n", re.MULTILINE)
    if item.search(text):
        return item.sub("", text, count=1)
    return re.sub(rf"(?<=\s){re.escape(word)}(?=\s)", "", text, count=1)


REMOVALS = [
    ("containers/pytorch.def", "matplotlib==3.11.2", "invert", "lacks matplotlib"),
    ("containers/pytorch.def", "tensorboard==2.21.0", "pretrain", "lacks tensorboard"),
    ("containers/pytorch.def", "dvc==3.67.1", "publish", "no executable dvc"),
    ("containers/pytorch.def", "pycocotools==2.0.11", "downstream", "lacks pycocotools"),
    ("containers/pytorch.def", "git", "report_context", "no executable git"),
    ("containers/report.def", "latexmk", "report", "no executable latexmk"),
    ("containers/report.def", "jinja2==3.1.6", "table_tex", "lacks jinja2"),
    ("envs/pytorch.yaml", "matplotlib==3.11.2", "invert", "lacks matplotlib"),
    ("envs/pytorch.yaml", "torchvision==0.29.1", "downstream", "lacks torchvision"),
    ("envs/pytorch.yaml", "git", "report_context", "no executable git"),
    ("envs/report.yaml", "pyyaml==6.0.3", "report", "lacks pyyaml"),
    ("envs/report.yaml", "latexmk", "report", "no executable latexmk"),
]


@pytest.mark.parametrize(
    ("source", "word", "rule", "message"), REMOVALS, ids=[f"{s}-{w}" for s, w, *_ in REMOVALS]
)
def test_a_package_taken_out_of_a_definition_is_reported(
    tmp_path: Path, source: str, word: str, rule: str, message: str
):
    original = ROOT / source
    text = original.read_text()
    changed = without(text, word)
    assert changed != text, f"{word} is not in {source}"
    copy = tmp_path / original.name
    copy.write_text(changed)
    problems = completeness.completeness_problems(replace={original: copy})
    assert any(p.startswith(f"rule {rule}: {copy}") and message in p for p in problems), problems
    assert all(str(copy) in p for p in problems), problems  # the untouched files stay complete


# ---- the env files' project line, resolved as Snakemake and conda resolve it ------------------------------


def project_copy(target: Path) -> Path:
    """A copy of the workflow with the package, as a checkout elsewhere."""
    copy_workflow(target)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, target / name)
    shutil.copytree(ROOT / "src", target / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return target


def env_file_copies(project: Path, conda_prefix: Path | None) -> dict[Path, Path]:
    """Each env file of the workflow -> the copy Snakemake creates the env from: ``<env address>.yaml``
    (deployment/conda.py, Env.create: copy_permission_safe(env_file, env_path + ".yaml"), then
    ``conda env create --file <copy>``). The address is Snakemake's (Env.address: the conda prefix plus
    a hash of the file's content and the prefix's location)."""
    copies = {}
    with SnakemakeApi(OutputSettings(quiet={"all"}, enable_file_logging=False)) as api:
        workflow_api = api.workflow(
            resource_settings=ResourceSettings(),
            deployment_settings=DeploymentSettings(
                deployment_method={DeploymentMethod.CONDA}, conda_prefix=conda_prefix
            ),
            snakefile=project / "Snakefile",
            workdir=project,
        )
        workflow = workflow_api.dag(DAGSettings()).workflow_api._workflow
        # The persistence (and with it the conda prefix) of `snakemake --sdm conda`, without a DAG.
        workflow._prepare_dag(forceall=False, ignore_incomplete=True, lock_warn_only=False, nolock=True)
        for rule in workflow.rules:
            if rule.conda_env is None:
                continue
            env = rule.expand_conda_env({}).get_conda_env(workflow)
            # The hash includes a pin file (envs/<name>.<platform>.pin.txt) if one exists; its name needs
            # `conda info` for the platform, and there is none for any platform (checked below).
            env._content_pin = b""
            source = Path(env.file.get_path_or_uri(secret_free=True)).resolve()
            copy = Path(env.address + ".yaml")
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy_permission_safe(str(source), str(copy))
            copies[source] = copy
    return copies


def conda_pip_install(env_copy: Path) -> subprocess.CompletedProcess[str]:
    """What `conda env create --file env_copy` does with the env's local pip lines
    (conda/env/installers/pip.py): write them to a requirements file in the folder of the file it was
    given and run pip there (cwd too), with conda's environment. A dry run: resolves, installs nothing."""
    spec = yaml.safe_load(env_copy.read_text())
    lines = [line for d in spec["dependencies"] if isinstance(d, dict) for line in d["pip"] if is_local(line)]
    workdir = env_copy.resolve().parent
    requirements = workdir / "condaenv.test.requirements.txt"
    requirements.write_text("\n".join(lines) + "\n")
    report = workdir / "pip-report.json"
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--no-index"]
    command += ["--no-build-isolation", "--quiet", "--report", str(report), "-r", requirements.name]
    done = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=300)
    if done.returncode == 0:
        done.stdout = report.read_text()
    return done


@pytest.fixture
def clean_project_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a Snakefile sets the variable in this process: restore it afterwards."""
    monkeypatch.delenv(completeness.PROJECT_VARIABLE, raising=False)


def test_no_env_has_a_pin_file():
    assert not list((ROOT / "envs").glob("*.pin.txt")), (
        "pin files change Snakemake's env hash: see env_file_copies"
    )


@pytest.mark.usefixtures("clean_project_variable")
@pytest.mark.parametrize(
    "prefix", [None, "shared/conda-envs"], ids=["default-prefix", "conda-prefix-elsewhere"]
)
def test_env_project_line_resolves_to_the_project_from_snakemakes_copy(tmp_path: Path, prefix: str | None):
    project = project_copy(tmp_path / "checkout")
    conda_prefix = tmp_path / prefix if prefix else None
    copies = env_file_copies(project, conda_prefix)
    assert {p.name for p in copies} == {"pytorch.yaml", "report.yaml"}
    for source, copy in copies.items():
        expected = conda_prefix or project / ".snakemake" / "conda"
        assert copy.parent == expected.resolve(), (source, copy)
        done = conda_pip_install(copy)
        assert done.returncode == 0, f"{source} via {copy}:\n{done.stderr}"
        installs = json.loads(done.stdout)["install"]
        assert [item["metadata"]["name"] for item in installs] == ["goodtransfer"], installs
        assert installs[0]["download_info"]["url"] == project.resolve().as_uri(), installs[0]
        assert installs[0]["download_info"]["dir_info"] == {"editable": True}
    assert os.environ[completeness.PROJECT_VARIABLE] == str(project)  # set by the copy's Snakefile


@pytest.mark.usefixtures("clean_project_variable")
def test_a_relative_project_line_would_miss_the_project(tmp_path: Path):
    """Why the env files do not say `-e ..`: from Snakemake's copy, `..` is the conda prefix's parent."""
    project = project_copy(tmp_path / "checkout")
    env = project / "envs" / "report.yaml"
    env.write_text(env.read_text().replace("-e ${GOODTRANSFER_ROOT}", "-e .."))
    copy = env_file_copies(project, None)[env.resolve()]
    done = conda_pip_install(copy)
    assert done.returncode != 0
    assert f"file://{project.resolve() / '.snakemake'} " in done.stderr, done.stderr


# ---- the report image's TeX ----------------------------------------------------------------------------

LATEX_FILE = re.compile(
    r"\\(?P<kind>documentclass|usepackage|RequirePackage)(?:\[[^\]]*\])?\{(?P<names>[^}]+)\}"
)


def latex_files(templates: list[Path]) -> dict[str, Path]:
    """The .cls and .sty files the templates load -> the template that loads them."""
    files = {}
    for template in templates:
        for match in LATEX_FILE.finditer(template.read_text()):
            suffix = ".cls" if match["kind"] == "documentclass" else ".sty"
            for name in match["names"].split(","):
                files.setdefault(name.strip() + suffix, template)
    return files


def debian_package_of(tex_file: str) -> str:
    """The Debian package that ships a TeX file here (`make system-deps` installs the report's TeX)."""
    found = subprocess.run(["kpsewhich", tex_file], capture_output=True, text=True)
    assert found.returncode == 0, (
        f"kpsewhich finds no {tex_file}: run `make system-deps` (the Makefile's TeX)"
    )
    owner = subprocess.run(
        ["dpkg", "-S", os.path.realpath(found.stdout.strip())], capture_output=True, text=True
    )
    assert owner.returncode == 0, f"dpkg knows no package of {found.stdout.strip()}: {owner.stderr}"
    return owner.stdout.split(":", 1)[0]


@pytest.mark.skipif(
    shutil.which("dpkg") is None, reason="needs Debian's package database (the CI machine has it)"
)
def test_report_image_installs_the_debian_package_of_every_latex_file_the_report_loads():
    templates = sorted((ROOT / "paper").rglob("*.tex.j2"))
    files = latex_files(templates)
    assert {"article.cls", "booktabs.sty", "lmodern.sty"} <= set(files), files
    installed = completeness.apt_packages(ROOT / "containers" / "report.def")
    for tex_file, template in sorted(files.items()):
        package = debian_package_of(tex_file)
        assert package in installed, (
            f"{template} loads {tex_file} (Debian: {package}); containers/report.def lacks it"
        )
