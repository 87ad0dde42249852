"""The Apptainer definitions (containers/*.def) agree with the conda envs (envs/*.yaml) and pyproject's pins.

Apptainer has no Debian or PyPI package, so CI cannot build the images: it checks them by parsing.
spython reads each definition (only reads: its writer back to .def is broken); a small regex reads the
`pip install` pins of %post. A definition and its env must install the same packages (the local
package aside) at the same versions, and any package pyproject.toml pins must have pyproject's version.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml
from spython.main.parse.parsers import SingularityParser

ROOT = Path(__file__).resolve().parents[1]
DEFINITIONS = sorted((ROOT / "containers").glob("*.def"))
ENVS = sorted((ROOT / "envs").glob("*.yaml"))

DIGEST_FROM = re.compile(
    r"^From:\s*(?P<image>[\w./-]+)@sha256:[0-9a-f]{64}\s*$", re.MULTILINE | re.IGNORECASE
)
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([A-Za-z0-9.+!_-]+)$")
# pip options whose next token is a value, not a requirement.
VALUE_OPTIONS = {
    "-r", "--requirement", "-c", "--constraint", "-i", "--index-url", "--extra-index-url",
    "-f", "--find-links", "-t", "--target", "--prefix", "--root", "--src",
}  # fmt: skip


def normalize(name: str) -> str:
    """PEP 503 name: `PyYAML`, `pyyaml` and `py_yaml` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def is_local(token: str) -> bool:
    return token.startswith(("/", ".", "-e"))


def requirement_pins(tokens: list[str], where: str) -> tuple[dict[str, str], list[str]]:
    """Pins of pip requirement tokens; an unpinned one is a problem (local paths are the package itself)."""
    pins: dict[str, str] = {}
    problems = []
    skip_next = False
    for token in tokens:
        if skip_next or token.startswith("-"):
            skip_next = token in VALUE_OPTIONS
            continue
        if is_local(token):
            continue
        match = PIN.match(token)
        if match is None:
            problems.append(f"{where}: '{token}' is not pinned with == (pin it as in pyproject.toml)")
            continue
        name, version = normalize(match[1]), match[2]
        if pins.get(name, version) != version:
            problems.append(f"{name}: {where} pins it twice, {pins[name]} and {version}")
        pins[name] = version
    return pins, problems


def logical_lines(lines: list[str]) -> list[str]:
    """Join shell continuation lines (`\\` at the end) into one command line."""
    joined, current = [], ""
    for line in lines:
        if line.endswith("\\"):
            current += line[:-1] + " "
        else:
            joined.append(current + line)
            current = ""
    return joined + ([current] if current else [])


def pip_install_args(command: str) -> list[str]:
    """Arguments of every `pip install` in one shell line (up to `&&`, `;` or `|`)."""
    tokens = shlex.split(command, comments=True)
    args = []
    for i, token in enumerate(tokens[1:], start=1):
        if token == "install" and Path(tokens[i - 1]).name in {"pip", "pip3"}:
            for arg in tokens[i + 1 :]:
                if arg in {"&&", "||", ";", "|"}:
                    break
                args.append(arg)
    return args


def parse_definition(path: Path):
    return SingularityParser(str(path)).recipe["spython-base"]


def definition_pins(path: Path) -> tuple[dict[str, str], list[str]]:
    pins: dict[str, str] = {}
    problems = []
    for line in logical_lines(parse_definition(path).install):
        found, bad = requirement_pins(pip_install_args(line), f"{path} %post")
        problems += bad
        for name, version in found.items():
            if pins.get(name, version) != version:
                problems.append(f"{name}: {path} %post pins it twice, {pins[name]} and {version}")
            pins[name] = version
    return pins, problems


def env_pins(path: Path) -> tuple[dict[str, str], list[str]]:
    pip_lists = [d["pip"] for d in yaml.safe_load(path.read_text())["dependencies"] if isinstance(d, dict)]
    return requirement_pins([entry for entries in pip_lists for entry in entries], str(path))


def pyproject_pins(path: Path) -> dict[str, str]:
    project = tomllib.loads(path.read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    return {normalize(m[1]): m[2] for m in map(PIN.match, requirements) if m}


def pin_problems(definition: Path, env: Path, pyproject: Path) -> list[str]:
    """Every way the definition, its env and pyproject disagree, one message each."""
    in_def, problems = definition_pins(definition)
    in_env, env_bad = env_pins(env)
    problems += env_bad
    for name in sorted(in_def.keys() - in_env.keys()):
        problems.append(f"{name}: {definition} installs {in_def[name]} but {env} lacks it (add it there)")
    for name in sorted(in_env.keys() - in_def.keys()):
        problems.append(f"{name}: {env} pins {in_env[name]} but {definition} lacks it (add it to %post)")
    for name in sorted(in_def.keys() & in_env.keys()):
        if in_def[name] != in_env[name]:
            problems.append(f"{name}: {definition} pins {in_def[name]} but {env} pins {in_env[name]}")
    locked = pyproject_pins(pyproject)
    for source, pins in ((definition, in_def), (env, in_env)):
        for name in sorted(pins.keys() & locked.keys()):
            if pins[name] != locked[name]:
                problems.append(f"{name}: {source} pins {pins[name]} but {pyproject} pins {locked[name]}")
    return problems


def env_of(definition: Path) -> Path:
    return ROOT / "envs" / f"{definition.stem}.yaml"


def ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


def test_there_are_definitions_and_envs():
    assert {p.stem for p in DEFINITIONS} >= {"pytorch", "report"}
    assert {p.stem for p in ENVS} == {p.stem for p in DEFINITIONS}


@pytest.mark.parametrize("definition", DEFINITIONS, ids=ids(DEFINITIONS))
def test_definition_bootstraps_from_a_docker_image(definition: Path):
    header = definition.read_text().split("\n%", 1)[0]
    assert re.search(r"^Bootstrap:\s*docker\s*$", header, re.MULTILINE | re.IGNORECASE), definition
    assert re.search(r"^From:\s*\S+", header, re.MULTILINE | re.IGNORECASE), definition
    assert parse_definition(definition).fromHeader, f"{definition}: spython found no From: image"


@pytest.mark.parametrize("definition", DEFINITIONS, ids=ids(DEFINITIONS))
def test_base_image_is_pinned_by_digest_with_its_tag_in_a_comment(definition: Path):
    header = definition.read_text().split("\n%", 1)[0]
    pinned = DIGEST_FROM.search(header)
    assert pinned, (
        f"{definition}: pin the base image as From: <image>@sha256:<digest> (a tag moves); "
        "`docker buildx imagetools inspect <image>:<tag>` prints the digest"
    )
    tag = re.search(rf"^#\s*{re.escape(pinned['image'])}:[\w.-]+\b", header, re.MULTILINE)
    assert tag, f"{definition}: name the tag the digest was taken from in a comment above From:"


@pytest.mark.parametrize("definition", DEFINITIONS, ids=ids(DEFINITIONS))
def test_definition_pins_equal_its_env_and_pyproject(definition: Path):
    assert env_of(definition).is_file(), f"{definition} has no env file {env_of(definition)}"
    assert pin_problems(definition, env_of(definition), ROOT / "pyproject.toml") == []


@pytest.mark.parametrize("definition", DEFINITIONS, ids=ids(DEFINITIONS))
def test_definition_labels_name_its_env_and_its_pins(definition: Path):
    labels = dict(line.split(" ", 1) for line in parse_definition(definition).labels if " " in line)
    assert labels.get("org.goodtransfer.env") == definition.stem, f"{definition}: labels {labels}"
    in_post, _ = definition_pins(definition)
    in_label = labels.get("org.goodtransfer.pins", "").strip('"').split()
    label_pins, problems = requirement_pins(in_label, f"{definition} label")
    assert problems == []
    assert {name: in_post.get(name) for name in label_pins} == label_pins, f"{definition}: label pins"


@pytest.mark.parametrize("definition", DEFINITIONS, ids=ids(DEFINITIONS))
def test_definition_copies_only_existing_package_files(definition: Path):
    sources = [line.split()[0] for line in parse_definition(definition).files if not line.startswith("#")]
    assert sources, f"{definition}: %files copies nothing, so pip cannot install goodtransfer"
    for source in sources:
        # `.` would copy .venv, data/ and results/ into the image.
        assert source != ".", f"{definition}: %files copies the whole checkout"
        assert (ROOT / source).exists(), f"{definition}: %files source {source} does not exist"


def test_wrong_pin_is_reported_with_package_files_and_both_versions(tmp_path: Path):
    text = (ROOT / "containers/pytorch.def").read_text()
    assert "torch==2.14.1 " in text
    wrong = tmp_path / "pytorch.def"
    wrong.write_text(text.replace("torch==2.14.1 ", "torch==2.13.0 "))
    problems = pin_problems(wrong, ROOT / "envs/pytorch.yaml", ROOT / "pyproject.toml")
    assert problems, "a wrong torch pin went unnoticed"
    assert all(p.startswith("torch: ") for p in problems), problems
    for other in ("envs/pytorch.yaml", "pyproject.toml"):
        parts = (str(wrong), other, "2.13.0", "2.14.1")
        assert any(all(part in p for part in parts) for p in problems), (other, problems)


def test_unpinned_and_missing_packages_are_reported(tmp_path: Path):
    text = (ROOT / "containers/report.def").read_text()
    extra = tmp_path / "report.def"
    extra.write_text(text.replace("%runscript", "    pip install scipy six==1.17.0\n\n%runscript"))
    problems = pin_problems(extra, ROOT / "envs/report.yaml", ROOT / "pyproject.toml")
    assert len(problems) == 2, problems
    assert "'scipy' is not pinned" in problems[0]
    assert problems[1].startswith("six: ") and "envs/report.yaml lacks it" in problems[1]


def test_pip_install_args_reads_continuations_options_and_env_prefixes():
    lines = [
        'FORCE_CUDA=1 ARCH="8.0;9.0" pip install --no-deps --index-url https://x/y \\',
        "    torch==2.14.1 /opt/pkg  # comment",
        "python -m pip install -q PyYAML==6.0.3 && pip3 install numpy==2.4.6",
    ]
    pins, problems = {}, []
    for line in logical_lines(lines):
        found, bad = requirement_pins(pip_install_args(line), "t")
        pins.update(found)
        problems += bad
    assert pins == {"torch": "2.14.1", "pyyaml": "6.0.3", "numpy": "2.4.6"}
    assert problems == []


def rule_containers() -> dict[str, set[str]]:
    """Each `container:` value in rules/*.smk, resolved through the constants they define, and where."""
    texts = {path: path.read_text() for path in sorted((ROOT / "rules").glob("*.smk"))}
    constants = {
        name: value
        for text in texts.values()
        for name, value in re.findall(r"^([A-Z][A-Z0-9_]*)\s*=\s*[\"']([^\"']+)[\"']", text, re.MULTILINE)
    }
    used: dict[str, set[str]] = {}
    for path, text in texts.items():
        for value in re.findall(r"^\s*container:\s*\n?\s*(\S+)", text, re.MULTILINE):
            image = value.strip("\"',")
            image = constants.get(image, image)
            used.setdefault(image, set()).add(path.name)
    return used


def test_every_rule_container_has_a_definition():
    used = rule_containers()
    assert used, "no rule declares a container: the regex over rules/*.smk is stale"
    for image, files in used.items():
        if "://" in image:  # a registry image needs no definition here
            continue
        assert re.fullmatch(r"containers/[\w-]+\.sif", image), f"{files}: {image} is not containers/*.sif"
        definition = ROOT / image.replace(".sif", ".def")
        assert definition.is_file(), f"{files} use {image} but {definition} is missing"


@pytest.mark.parametrize("env", ENVS, ids=ids(ENVS))
def test_env_parses_and_pins_python_311(env: Path):
    spec = yaml.safe_load(env.read_text())
    assert spec["name"] == f"goodtransfer-{env.stem}"
    assert "python=3.11" in spec["dependencies"], f"{env}: list python=3.11"
    # The project from ${GOODTRANSFER_ROOT} (set by the Snakefile): a relative path would resolve from
    # Snakemake's copy of the file (tests/test_container_completeness.py resolves it as Snakemake does).
    pip = [line for d in spec["dependencies"] if isinstance(d, dict) for line in d.get("pip", [])]
    assert "-e ${GOODTRANSFER_ROOT}" in pip, f"{env}: install the project with -e ${{GOODTRANSFER_ROOT}}"
