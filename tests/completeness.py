"""What each rule's software environment must hold, and whether its env file and image declare it.

For every rule of the workflow (loaded with Snakemake's own API, so the rules are what Snakemake runs):

1. its command: the shell line, plus the strings of the functions its ``params`` call (the
   ``track_datasets`` commands, the ``pretrain`` launcher);
2. what the command runs: the executables in command position and the ``python -m`` entry points
   (``goodtransfer <subcommand>`` or a module such as ``goodtransfer.report.render``);
3. the package's import graph from the entry point (``ast``, the whole of every module reached, lazy
   imports inside functions included; of ``goodtransfer.cli`` only the subcommand's own handler), down to
   the third-party modules, mapped to distributions with ``importlib.metadata.packages_distributions()``;
   a third-party module that needs a distribution its own package does not require (``torch.utils.
   tensorboard`` imports ``tensorboard``) adds that distribution;
4. the executables that reached code starts (``subprocess`` argument lists, ``shutil.which``);

then checks that the rule's ``conda:`` env file pins every distribution and provides every executable
(a conda package, or one it names as the host's in a ``# host executables:`` line), and that its
``container:`` definition pip-installs every distribution and provides every executable (its base image, an
``apt-get install`` package or a pip package's console script).
"""

from __future__ import annotations

import ast
import functools
import inspect
import os
import re
import sys
import textwrap
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from snakemake.api import SnakemakeApi
from snakemake.settings.types import DeploymentMethod, DeploymentSettings, OutputSettings, ResourceSettings

from tests.test_containers import (
    definition_pins,
    env_pins,
    logical_lines,
    normalize,
    parse_definition,
)

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "goodtransfer"
PROJECT_VARIABLE = "GOODTRANSFER_ROOT"  # the Snakefile sets it; envs/*.yaml install the project from it

# Executables that are not a Python console script: the conda-forge and Debian packages that provide them
# (None: that channel has none). conda-forge's `texlive-core` is TeX Live's binaries without the LaTeX
# formats and packages, so no conda package provides a pdflatex that builds a LaTeX document.
SYSTEM_EXECUTABLES: dict[str, tuple[str | None, str]] = {
    "python": ("python", "python3"),
    "git": ("git", "git"),
    "latexmk": ("latexmk", "latexmk"),
    "pdflatex": (None, "texlive-latex-base"),
}
# What an executable starts in turn: `latexmk -pdf` runs pdflatex (goodtransfer.report.latex).
STARTS_TOO = {"latexmk": ("pdflatex",)}
# Executables of a base image (the Docker official `python` images: Python and pip in /usr/local/bin).
BASE_IMAGE_EXECUTABLES = {"python": {"python", "python3", "pip", "pip3"}}
HOST_LINE = re.compile(r"^#\s*host executables:\s*(?P<names>[\w .+-]+?)\s*(?:\(|$)", re.MULTILINE)
REDIRECTION = re.compile(r"\d*(?:>>?|<)&?")  # a whole word: its target follows; a prefix: attached
SEGMENT = re.compile(r"&&|\|\||[;|()]")
PLACEHOLDER = re.compile(r"^\{params\.(?P<name>\w+)(?::q)?\}$")


@dataclass
class Needs:
    """What one rule's command needs; each value says why (the chain that led to it)."""

    distributions: dict[str, str] = field(default_factory=dict)
    executables: dict[str, str] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)  # what the checker could not resolve


@dataclass(frozen=True)
class RuleUse:
    """A rule and the software environment files it declares (absolute paths)."""

    name: str
    env: Path | None
    definition: Path | None
    commands: tuple[tuple[str, str], ...]  # (interpreter or executable, "-m" module and its arguments)


# ---- the workflow's rules ------------------------------------------------------------------------------


@functools.cache
def workflow_rules(root: Path = ROOT) -> tuple[RuleUse, ...]:
    """Every rule that declares a conda env or a container, with the commands it runs."""
    uses = []
    cwd, variable = Path.cwd(), os.environ.get(PROJECT_VARIABLE)
    try:
        uses = _rule_uses(root)
    finally:  # the API changes into the workdir, and the Snakefile sets the project variable
        os.chdir(cwd)
        if variable is None:
            os.environ.pop(PROJECT_VARIABLE, None)
        else:
            os.environ[PROJECT_VARIABLE] = variable
    return tuple(uses)


def _rule_uses(root: Path) -> list[RuleUse]:
    uses = []
    with SnakemakeApi(OutputSettings(quiet={"all"}, enable_file_logging=False)) as api:
        workflow_api = api.workflow(
            resource_settings=ResourceSettings(),
            deployment_settings=DeploymentSettings(deployment_method={DeploymentMethod.CONDA}),
            snakefile=root / "Snakefile",
            workdir=root,
        )
        workflow = workflow_api._workflow  # the parsed workflow, as `snakemake --list-rules` gets it
        for rule in workflow.rules:
            if rule.conda_env is None and rule.container_img is None:
                continue
            if rule.is_run or not rule.shellcmd:
                raise AssertionError(
                    f"rule {rule.name}: only shell: rules are mapped; extend tests/completeness.py"
                )
            env = rule.expand_conda_env({}).file.get_path_or_uri(secret_free=True) if rule.conda_env else None
            env = Path(env).resolve() if env else None
            image = rule.container_img
            definition = None
            if image and "://" not in image:
                definition = root / re.sub(r"\.sif$", ".def", image)
            uses.append(
                RuleUse(
                    rule.name,
                    env,
                    definition,
                    tuple(shell_commands(rule.shellcmd, rule.params, workflow.globals)),
                )
            )
    return uses


def shell_commands(shellcmd: str, params, workflow_globals: Mapping) -> Iterable[tuple[str, str]]:
    """(executable, rest of the command) of every command of a shell line; a ``{params.X}`` in command
    position is resolved through the function X calls."""
    for segment in SEGMENT.split(shellcmd):
        words = without_redirections(segment.split())
        if not words:
            continue
        head, rest = words[0], " ".join(words[1:])
        placeholder = PLACEHOLDER.match(head)
        if placeholder is None:
            yield head, rest
            continue
        function = params.get(placeholder["name"]) if hasattr(params, "get") else None
        if not callable(function):
            yield f"{{params.{placeholder['name']}}}", rest
            continue
        if rest.startswith("-m "):
            # An interpreter chosen at run time (`python`, or `torchrun ...` for several GPUs): the words
            # the project functions the param calls can return.
            for word in sorted(returned_first_words(function, workflow_globals)):
                yield word, rest
        else:
            # Whole commands built by a function of the workflow (`track_datasets`): its `-m` strings.
            for text in code_strings(function, workflow_globals):
                if " -m " in text:
                    yield from shell_commands(text, params, workflow_globals)


def without_redirections(words: list[str]) -> list[str]:
    """A command's words less its redirections (``2> {log:q}``, ``>out``)."""
    kept, skip_next = [], False
    for word in words:
        if skip_next:
            skip_next = False
        elif REDIRECTION.fullmatch(word):
            skip_next = True
        elif not REDIRECTION.match(word):
            kept.append(word)
    return kept


def _called_functions(function, workflow_globals: Mapping) -> list[types.FunctionType]:
    """The functions (of the workflow or the package) that ``function`` refers to, transitively."""
    seen: list[types.FunctionType] = []
    todo = [function]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.append(current)
        namespace = {**workflow_globals, **getattr(current, "__globals__", {})}
        for name in _names(current.__code__):
            target = namespace.get(name)
            if isinstance(target, types.FunctionType) and _is_ours(target):
                todo.append(target)
    return seen


def _names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def _is_ours(function: types.FunctionType) -> bool:
    source = Path(function.__code__.co_filename).resolve()
    return source.is_relative_to(ROOT) or (function.__module__ or "").startswith(PACKAGE)


def code_strings(function, workflow_globals: Mapping) -> list[str]:
    """The string constants of ``function`` and the functions it calls, docstrings left out."""
    strings: list[str] = []

    def walk(code: types.CodeType, doc: str | None) -> None:
        for const in code.co_consts:
            if isinstance(const, str) and const != doc:
                strings.append(const)
            elif isinstance(const, types.CodeType):
                walk(const, None)

    for called in _called_functions(function, workflow_globals):
        walk(called.__code__, called.__doc__)
    return strings


def returned_first_words(function, workflow_globals: Mapping) -> set[str]:
    """First words of the literal strings the package functions called by ``function`` return."""
    words = set()
    for called in _called_functions(function, workflow_globals)[1:]:
        if not (called.__module__ or "").startswith(PACKAGE):
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(called)))
        for node in ast.walk(tree):
            if isinstance(node, ast.Return) and node.value is not None:
                text = _literal_head(node.value)
                if text and text.split():
                    words.add(text.split()[0])
    return words


def _literal_head(node: ast.expr) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
        return str(node.values[0].value)
    return None


# ---- the package's import graph ------------------------------------------------------------------------


def module_path(name: str, src: Path = ROOT / "src") -> Path | None:
    base = src.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imported_names(
    tree: ast.Module, module: str, is_package: bool, skip: frozenset[str] = frozenset()
) -> set[str]:
    """Every module a module imports (``from a import b`` gives ``a`` and ``a.b``), at any depth, lazy
    imports inside functions included, except inside the top-level functions named in ``skip``."""
    found = set()
    for statement in tree.body:
        if isinstance(statement, ast.FunctionDef) and statement.name in skip:
            continue
        for node in ast.walk(statement):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(node, module, is_package)
                found.add(base)
                found |= {f"{base}.{alias.name}" for alias in node.names if alias.name != "*"}
    return found


def dynamic_imports(tree: ast.Module) -> set[str]:
    """Package modules a module may import by name (``importlib.import_module(TASKS[...].module)``): in a
    module that calls ``import_module``, every string constant naming a module of the package."""
    calls = any(
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute | ast.Name)
        and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
        for node in ast.walk(tree)
    )
    if not calls:
        return set()
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value.startswith(f"{PACKAGE}.")
        and module_path(node.value) is not None
    }


def cli_handlers() -> dict[str, str]:
    """``goodtransfer`` subcommand -> the name of its handler function in goodtransfer.cli."""
    from goodtransfer.cli import _parser

    subparsers = next(a for a in _parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    return {name: sub.get_default("func").__name__ for name, sub in subparsers.choices.items()}


def entry_modules(module: str, arguments: str) -> tuple[list[tuple[str, set[str]]], list[str]]:
    """The modules ``python -m module arguments`` starts, each with the top-level functions not run;
    and what could not be resolved."""
    if module != PACKAGE:
        return [(module, set())], []
    handlers = cli_handlers()
    words = [w for w in arguments.split() if not w.startswith(("-", "{"))]
    command = next((w for w in words if w in handlers), None)
    if command is None:
        return [], [f"python -m {module} {arguments}: no goodtransfer subcommand found"]
    others = set(handlers.values()) - {handlers[command]}
    return [(f"{PACKAGE}.__main__", set()), (f"{PACKAGE}.cli", others)], []


def import_closure(entries: list[tuple[str, set[str]]]) -> tuple[dict[str, str], dict[str, str]]:
    """(package modules reached, third-party modules imported), each mapped to its import chain."""
    ours: dict[str, str] = {}
    theirs: dict[str, str] = {}
    todo = [(name, skip, "entry point") for name, skip in entries]
    while todo:
        name, skip, importer = todo.pop()
        if name in ours:
            continue
        path = module_path(name)
        if path is None:
            continue  # `from goodtransfer.x import function`: not a module
        ours[name] = importer
        parents = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
        tree = ast.parse(path.read_text(), filename=str(path))
        names = imported_names(tree, name, path.name == "__init__.py", skip) | dynamic_imports(tree)
        for imported in sorted(names | set(parents)):
            top = imported.split(".")[0]
            if top == PACKAGE:
                todo.append((imported, set(), name))
            elif top and top not in sys.stdlib_module_names:
                theirs.setdefault(imported, name)
    return {name: chain(ours, name) for name in ours}, {
        dotted: chain(ours, by) for dotted, by in theirs.items()
    }


def chain(importers: Mapping[str, str], module: str) -> str:
    """``a > b > module``: how the entry point reaches ``module``."""
    path = [module]
    while importers.get(path[-1], "entry point") != "entry point" and len(path) < 50:
        path.append(importers[path[-1]])
    return " > ".join(reversed(path))


# ---- third-party modules -> distributions ---------------------------------------------------------------


@functools.cache
def _top_level_distributions() -> dict[str, list[str]]:
    return metadata.packages_distributions()


@functools.cache
def _requirement_closure(dist: str) -> frozenset[str]:
    closure, todo = set(), [dist]
    while todo:
        name = normalize(todo.pop())
        if name in closure:
            continue
        closure.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for line in requires:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return frozenset(closure)


@functools.cache
def _python_files(dist: str) -> dict[str, metadata.PackagePath]:
    return {str(file): file for file in metadata.distribution(dist).files or [] if file.suffix == ".py"}


def _module_file(dist: str, dotted: str) -> Path | None:
    files = _python_files(dist)
    for relative in (f"{dotted.replace('.', '/')}.py", f"{dotted.replace('.', '/')}/__init__.py"):
        if relative in files:
            return Path(files[relative].locate())
    return None


def _unguarded_imports(path: Path) -> set[str]:
    """Top-level module names imported at module level outside try/if blocks (those are optional)."""
    tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


def distributions_of(third_party: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """Distributions the third-party modules need (each with why), and modules nothing provides."""
    providers = _top_level_distributions()
    needed: dict[str, str] = {}
    unknown = []
    for dotted, importer in sorted(third_party.items()):
        top = dotted.split(".")[0]
        if top not in providers:
            unknown.append(f"{importer} imports {dotted}, which no installed distribution provides")
            continue
        for dist in providers[top]:
            needed.setdefault(normalize(dist), f"{importer} imports {dotted}")
            path = _module_file(dist, dotted)
            if path is None or "." not in dotted:
                continue
            required = _requirement_closure(dist)
            for extra_top in _unguarded_imports(path) - {top} - set(sys.stdlib_module_names):
                for extra in providers.get(extra_top, []):
                    if normalize(extra) not in required:
                        why = f"{importer} imports {dotted}, which imports {extra_top} ({dist} lacks it)"
                        needed.setdefault(normalize(extra), why)
    return needed, unknown


# ---- executables started from Python -------------------------------------------------------------------


def started_executables(modules: Mapping[str, str]) -> dict[str, str]:
    """Executables the modules (mapped to their import chains) start: ``subprocess.*([...])`` heads and
    ``shutil.which("...")``."""
    found: dict[str, str] = {}
    for name in sorted(modules):
        path = module_path(name)
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
            first = node.args[0] if node.args else None
            if owner == "shutil" and node.func.attr == "which" and isinstance(first, ast.Constant):
                found.setdefault(str(first.value), f"{modules[name]} looks for it")
            elif owner == "subprocess" and isinstance(first, ast.List) and first.elts:
                head = _literal_head(first.elts[0])
                if head:
                    found.setdefault(head, f"{modules[name]} runs it")
    for exe, why in list(found.items()):
        for started in STARTS_TOO.get(exe, ()):
            found.setdefault(started, f"{exe} runs it ({why})")
    return found


@functools.cache
def entry_needs(module: str, arguments: str) -> tuple[dict[str, str], dict[str, str], tuple[str, ...]]:
    """(distributions, executables, unresolved) of ``python -m module arguments``."""
    entries, unknown = entry_modules(module, arguments)
    ours, theirs = import_closure(entries)
    dists, missing = distributions_of(theirs)
    return dists, started_executables(ours), (*unknown, *missing)


def needs_of(use: RuleUse) -> Needs:
    needs = Needs()
    for executable, rest in use.commands:
        needs.executables.setdefault(executable, f"rule {use.name} runs it")
        match = re.match(r"-m\s+(?P<module>[\w.]+)\s*(?P<args>.*)", rest)
        if match is None:
            continue
        if match["module"].split(".")[0] != PACKAGE:
            needs.unknown.append(f"python -m {match['module']} is not the package")
            continue
        dists, executables, unknown = entry_needs(match["module"], match["args"])
        needs.unknown += unknown
        for dist, why in dists.items():
            needs.distributions.setdefault(dist, f"{why}; python -m {match['module']}")
        for exe, why in executables.items():
            needs.executables.setdefault(exe, why)
    return needs


# ---- what an env file and a definition provide ---------------------------------------------------------


@dataclass
class Provides:
    distributions: set[str]
    executables: set[str]
    where: str


@functools.cache
def console_scripts() -> dict[str, str]:
    return {ep.name: normalize(ep.dist.name) for ep in metadata.entry_points(group="console_scripts")}


def _script_executables(distributions: set[str]) -> set[str]:
    return {name for name, dist in console_scripts().items() if dist in distributions}


def env_provides(path: Path, host: bool = True) -> Provides:
    """What an env file installs; with ``host``, also the executables it leaves to the host."""
    text = path.read_text()
    spec = yaml.safe_load(text)
    conda = {re.split(r"[=<>!~ ]", d, maxsplit=1)[0] for d in spec["dependencies"] if isinstance(d, str)}
    pins, _ = env_pins(path)
    dists = set(pins)
    executables = _script_executables(dists) | {
        exe for exe, (package, _) in SYSTEM_EXECUTABLES.items() if package in conda
    }
    for match in HOST_LINE.finditer(text) if host else ():
        executables |= set(match["names"].split())
    return Provides(dists, executables, str(path))


def apt_packages(path: Path) -> set[str]:
    packages = set()
    for line in logical_lines(parse_definition(path).install):
        for command in SEGMENT.split(line.split("#", 1)[0]):
            words = command.split()
            if len(words) > 2 and words[0] in {"apt-get", "apt"} and words[1] == "install":
                packages |= {w for w in words[2:] if not w.startswith("-")}
    return packages


def base_image(path: Path) -> str:
    """The repository of the definition's From: image (``python`` for ``python:3.11-slim@sha256:...``)."""
    image = parse_definition(path).fromHeader.split("@")[0]
    return image.rsplit(":", 1)[0] if ":" in image.split("/")[-1] else image


def definition_provides(path: Path) -> Provides:
    pins, _ = definition_pins(path)
    dists = set(pins)
    apt = apt_packages(path)
    executables = _script_executables(dists) | BASE_IMAGE_EXECUTABLES.get(base_image(path), set())
    executables |= {exe for exe, (_, package) in SYSTEM_EXECUTABLES.items() if package in apt}
    return Provides(
        dists, executables, f"{path} (%post pip and apt-get installs, base image {base_image(path)})"
    )


# ---- the check -----------------------------------------------------------------------------------------


def rule_problems(use: RuleUse, provides: Provides, needs: Needs) -> list[str]:
    problems = []
    for dist, why in sorted(needs.distributions.items()):
        if dist not in provides.distributions:
            problems.append(f"rule {use.name}: {provides.where} lacks {dist} ({why})")
    for exe, why in sorted(needs.executables.items()):
        if exe not in provides.executables:
            problems.append(f"rule {use.name}: {provides.where} provides no executable {exe} ({why})")
    return problems


def completeness_problems(
    uses: Iterable[RuleUse] | None = None, replace: Mapping[Path, Path] | None = None
) -> list[str]:
    """Every rule's missing distribution or executable, one message each; ``replace`` checks a modified
    copy of an env file or definition in place of the original."""
    replace = replace or {}
    problems = []
    for use in workflow_rules() if uses is None else uses:
        needs = needs_of(use)
        problems += [f"rule {use.name}: {text}" for text in needs.unknown]
        if use.env is not None:
            env = replace.get(use.env, use.env)
            problems += rule_problems(use, env_provides(env), needs)
        if use.definition is not None:
            definition = replace.get(use.definition, use.definition)
            problems += rule_problems(use, definition_provides(definition), needs)
    return problems
