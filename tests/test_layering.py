"""Package layering: data/ is the bottom, transfer/ never imports pretrain/, evaluate/ none of the three.

Imports are read from the source (ast), every one of them: top level, inside functions, under
TYPE_CHECKING, and module names given to importlib as a string constant.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "goodtransfer"

# (package that imports, packages it must not import)
FORBIDDEN = {
    "transfer": ("pretrain",),
    "data": ("pretrain", "transfer", "report"),
    "evaluate": ("pretrain", "transfer", "report"),
}
_MODULE_NAME = re.compile(r"goodtransfer(\.\w+)+")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, name: str, is_package: bool = False) -> set[str]:
    """Every module ``source`` (the module ``name``) imports; ``from a import b`` yields ``a.b``, since b
    may be a submodule."""
    here = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Constant) and _MODULE_NAME.fullmatch(str(node.value)):
            found.add(str(node.value))  # importlib.import_module("goodtransfer.x.y")
    return found


def layer(module: str) -> str | None:
    """``goodtransfer.<layer>...``: the subpackage (or top-level module) a module belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "goodtransfer" else None


def violations(modules: dict[str, set[str]]) -> list[str]:
    out = []
    for name, imports in sorted(modules.items()):
        banned = FORBIDDEN.get(layer(name) or "", ())
        hits = {target for target in imports if layer(target) in banned}
        # ``from a.b import c`` names both a.b and a.b.c: report the module once
        out += [f"{name} imports {t}" for t in sorted(hits) if not any(t.startswith(f"{h}.") for h in hits)]
    return out


def _package_modules() -> dict[str, set[str]]:
    return {
        module_name(path): imported_modules(
            path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py"
        )
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def test_no_package_imports_across_a_forbidden_layer() -> None:
    assert violations(_package_modules()) == []


def test_pretrain_uses_transfer_one_way_through_task_supervised() -> None:
    modules = _package_modules()
    assert "goodtransfer.transfer.tasks" in modules["goodtransfer.pretrain.task_supervised"]
    users = {name for name, imports in modules.items() if any(layer(t) == "transfer" for t in imports)}
    pretrain_users = {name for name in users if layer(name) == "pretrain"}
    assert pretrain_users == {"goodtransfer.pretrain.task_supervised"}


@pytest.mark.parametrize(
    "source",
    [
        "from goodtransfer.pretrain.augment import normalize",
        "import goodtransfer.pretrain.moco",
        "from goodtransfer import pretrain",
        "from ...pretrain import moco",
        "def f():\n    from goodtransfer.pretrain import train\n",
        "import importlib\nimportlib.import_module('goodtransfer.pretrain.train')",
    ],
)
def test_every_import_form_is_seen(source: str) -> None:
    imports = imported_modules(source, "goodtransfer.transfer.x.y")
    assert violations({"goodtransfer.transfer.x.y": imports}) != []


def test_a_docstring_naming_a_module_is_not_an_import() -> None:
    source = '"""Reads what goodtransfer.pretrain.train writes."""\n'
    assert violations({"goodtransfer.transfer.x": imported_modules(source, "goodtransfer.transfer.x")}) == []


def test_report_reads_inversion_outputs_and_never_runs_the_optimisation() -> None:
    modules = _package_modules()
    runners = sorted(
        name
        for name, imports in modules.items()
        if layer(name) == "report" and any(t.startswith("goodtransfer.evaluate.inversion") for t in imports)
    )
    assert runners == []
