"""Tests for the LaTeX report: escaping, templates, real compiles (latexmk) and shell-escape lockdown."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jinja2
import pytest

from goodtransfer.io import InputError, write_json, write_text
from goodtransfer.report.latex import (
    LatexError,
    LatexSafe,
    compile_pdf,
    escape_latex,
    format_number,
    make_environment,
)
from goodtransfer.report.render import main, render_report, render_table

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = REPO / "paper"
SPECIALS_TEXT = r"a_b 50% x&y #1 $5 {z} ~t ^u \v"
DASH = "\N{EN DASH}"  # what LaTeX typesets for "--", the missing-value mark
needs_latex = pytest.mark.skipif(shutil.which("latexmk") is None, reason="latexmk not installed")


def sample_table(extra_label: str = SPECIALS_TEXT) -> dict[str, Any]:
    """Two groups x two rows, four metrics in three column groups, with missing values."""
    return {
        "name": "table1",
        "caption": "Augmentations at 50% scale",
        "row_header": "Augmentation",
        "columns": [
            {"key": "ImageNet_Acc", "label": "Acc", "group": "ImageNet"},
            {"key": "VOC07_AP", "label": "AP", "group": "VOC07"},
            {"key": "VOC07_AP50", "label": "AP50", "group": "VOC07"},
            {"key": "COCO_APbox", "label": "APbox", "group": "COCO"},
        ],
        "groups": [
            {
                "label": "Supervised",
                "rows": [
                    {
                        "label": "+RandomHorizontalFlip(0.5)",
                        "run": "supervised_aug1",
                        "cells": {
                            "ImageNet_Acc": {"ours": 41.25, "paper": 70.9, "provenance": {"run": "x"}},
                            "VOC07_AP": {"ours": None, "paper": 43.4},
                        },
                    },
                    {
                        "label": "+RandomResizedCrop",
                        "run": "supervised_aug2",
                        "cells": {
                            "ImageNet_Acc": {"ours": 55.5, "paper": 76.2},
                            "VOC07_AP50": {"paper": 79.1},
                            "COCO_APbox": {"ours": 33.04, "paper": 38.9},
                        },
                    },
                ],
            },
            {
                "label": "Unsupervised",
                "rows": [
                    {
                        "label": "+ColorJitter",
                        "run": "moco_v2_aug3",
                        "cells": {"ImageNet_Acc": {"ours": 12.3, "paper": 63.6}},
                    },
                    {"label": extra_label, "run": "moco_v2_aug4", "cells": {}},
                ],
            },
        ],
        "notes": ["embedded scale: numbers are not comparable to the paper"],
    }


def sample_context() -> dict[str, Any]:
    return {
        "scale_note": "Embedded scale: 10% of the data, 2 epochs.",
        "provenance": [
            {"key": "git commit", "value": "0123456789abcdef"},
            {"key": "config_hash", "value": "a1b2_c3d4"},
            {"key": "packages", "value": "jinja2==3.1, torch~=2.3"},
            {"key": "wall time", "value": "12 s"},
        ],
    }


def pdf_text(pdf: Path) -> str:
    """Whitespace-normalised text layer of a PDF (pdftotext -layout keeps each table row on one line)."""
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) not installed; compile success already checked")
    out = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True)
    return re.sub(r"[ \t]+", " ", out.stdout)


def build_report(tmp: Path, tables: list[dict[str, Any]], stem: str = "report") -> Path:
    tex = tmp / f"{stem}.tex"
    write_text(tex, render_report(tables, sample_context(), TEMPLATES))
    pdf = tmp / f"{stem}.pdf"
    compile_pdf(tex, pdf)
    return pdf


# --- escaping -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("char", "expected"),
    [
        ("_", r"\_"),
        ("%", r"\%"),
        ("&", r"\&"),
        ("#", r"\#"),
        ("$", r"\$"),
        ("{", r"\{"),
        ("}", r"\}"),
        ("~", r"\textasciitilde{}"),
        ("^", r"\textasciicircum{}"),
        ("\\", r"\textbackslash{}"),
    ],
)
def test_escape_each_special(char: str, expected: str) -> None:
    assert escape_latex(f"a{char}b") == f"a{expected}b"


def test_escape_is_single_pass() -> None:
    # The braces produced for a backslash must not themselves be escaped again.
    assert escape_latex("\\{") == r"\textbackslash{}\{"
    assert escape_latex(r"\write18{x}") == r"\textbackslash{}write18\{x\}"
    assert escape_latex(LatexSafe(r"\emph{x}")) == r"\emph{x}"
    assert escape_latex("two\n\nlines\x00") == "two  lines "


def test_environment_escapes_strings_by_default(tmp_path: Path) -> None:
    source = "\\VAR{s} \\VAR{m|latex} \\VAR{n|num(2)} \\VAR{none|num} \\VAR{i}\\#{ note }"
    write_text(tmp_path / "t.j2", source)
    env = make_environment(tmp_path)
    out = env.get_template("t.j2").render(s="a_b&c", m=r"\emph{x}", n=3.14159, none=None, i=7)
    assert out == r"a\_b\&c \emph{x} 3.14 -- 7"
    # A float must go through |num so the template picks its decimals.
    write_text(tmp_path / "f.j2", "\\VAR{x}")
    with pytest.raises(InputError, match="num"):
        env.get_template("f.j2").render(x=1.5)


def test_block_and_line_statements(tmp_path: Path) -> None:
    source = "\\BLOCK{for x in xs}\n\\VAR{x};\n\\BLOCK{endfor}\n%% if flag\nyes\n%% endif\n"
    write_text(tmp_path / "t.j2", source)
    out = make_environment(tmp_path).get_template("t.j2").render(xs=["a%", "b"], flag=True)
    assert out == "a\\%;\nb;\nyes\n"


def test_number_format() -> None:
    assert format_number(41.25, 1) == "41.3"  # half up, as printed in papers
    assert format_number(None) == "--"
    assert format_number(float("nan")) == "--"
    assert format_number(7, 0) == "7"
    assert format_number(-0.01, 1) == "0.0"
    with pytest.raises(InputError):
        format_number("41.2")


# --- rendering ----------------------------------------------------------------------------------------------


def test_render_table_structure() -> None:
    tex = render_table(sample_table(), TEMPLATES)
    assert r"\begin{tabular}{@{}lrrrrrrrr@{}}" in tex
    assert r"\multicolumn{4}{c}{VOC07}" in tex
    assert r"\cmidrule(lr){4-7}" in tex
    assert r"\cmidrule(lr){8-9}" in tex
    assert "Supervised" in tex
    assert "Unsupervised" in tex
    assert r"\quad +RandomHorizontalFlip(0.5) & 70.9 & 41.3 & 43.4 & -- & -- & -- & -- & -- \\" in tex
    assert r"\caption{Augmentations at 50\% scale" in tex
    assert escape_latex(SPECIALS_TEXT) in tex
    assert "\\write18" not in tex


def test_missing_table_field_is_named() -> None:
    table = sample_table()
    del table["caption"]
    with pytest.raises(InputError, match="missing field 'caption'"):
        render_table(table, TEMPLATES)
    table = sample_table()
    del table["groups"][1]["rows"][0]["label"]
    with pytest.raises(InputError, match=r"groups\[1\]\.rows\[0\]: missing field 'label'"):
        render_table(table, TEMPLATES)


def test_missing_template_field_is_named(tmp_path: Path) -> None:
    # StrictUndefined: a template asking for a field the data lacks fails and names it.
    (tmp_path / "tables").mkdir()
    source = (TEMPLATES / "tables" / "table.tex.j2").read_text(encoding="utf-8")
    write_text(tmp_path / "tables" / "table.tex.j2", source + "\\VAR{table.subtitle}\n")
    with pytest.raises(InputError, match="subtitle"):
        render_table(sample_table(), tmp_path)
    write_text(tmp_path / "x.j2", "\\VAR{table.subtitle}")
    with pytest.raises(jinja2.UndefinedError, match="subtitle"):
        make_environment(tmp_path).get_template("x.j2").render(table={})


def test_bad_cells_are_refused() -> None:
    table = sample_table()
    table["groups"][0]["rows"][0]["cells"]["Nope"] = {"ours": 1.0}
    with pytest.raises(InputError, match="Nope"):
        render_table(table, TEMPLATES)
    table = sample_table()
    table["groups"][0]["rows"][0]["cells"]["ImageNet_Acc"]["ours"] = "41.2"
    with pytest.raises(InputError, match=r"cells\.ImageNet_Acc\.ours"):
        render_table(table, TEMPLATES)


def test_missing_context_field_is_named() -> None:
    with pytest.raises(InputError, match="missing field 'scale_note'"):
        render_report([sample_table()], {"provenance": []}, TEMPLATES)


# --- compiling ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report_pdf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("latexmk") is None:
        pytest.skip("latexmk not installed")
    return build_report(tmp_path_factory.mktemp("report"), [sample_table()])


@needs_latex
def test_report_pdf_shows_caption_rows_and_numbers(report_pdf: Path) -> None:
    assert report_pdf.read_bytes().startswith(b"%PDF")
    text = pdf_text(report_pdf)
    assert "Reproducing: What Makes Instance Discrimination Good for" in text
    assert "Augmentations at 50% scale (table1)" in text
    assert re.search(rf"\+RandomHorizontalFlip\(0\.5\) 70\.9 41\.3 43\.4 {DASH} ", text)
    assert re.search(rf"\+RandomResizedCrop 76\.2 55\.5 {DASH} {DASH} 79\.1 {DASH} 38\.9 33\.0", text)
    assert re.search(r"\+ColorJitter 63\.6 12\.3", text)
    assert "Embedded scale: 10% of the data, 2 epochs." in text
    assert "config_hash: a1b2_c3d4" in text
    assert "jinja2==3.1, torch~=2.3" in text
    assert "moco_v2_aug3" in text


@needs_latex
def test_report_pdf_shows_specials_literally(report_pdf: Path) -> None:
    text = pdf_text(report_pdf)
    assert SPECIALS_TEXT in text


@needs_latex
def test_changed_number_changes_pdf(tmp_path: Path, report_pdf: Path) -> None:
    table = sample_table()
    table["groups"][1]["rows"][0]["cells"]["ImageNet_Acc"]["ours"] = 98.76
    text = pdf_text(build_report(tmp_path, [table]))
    assert re.search(r"\+ColorJitter 63\.6 98\.8", text)
    assert "12.3" not in text
    assert "12.3" in pdf_text(report_pdf)


@needs_latex
def test_latex_error_names_tex_file(tmp_path: Path) -> None:
    tex = tmp_path / "broken doc.tex"
    write_text(tex, "\\documentclass{article}\n\\begin{document}\nfine\n\\undefinedmacro\n\\end{document}\n")
    out = tmp_path / "broken.pdf"
    with pytest.raises(LatexError) as info:
        compile_pdf(tex, out)
    message = str(info.value)
    assert str(tex) in message
    assert "! Undefined control sequence." in message
    assert "l.4 \\undefinedmacro" in message
    assert not out.exists()
    assert (tmp_path / "broken.log").exists()


@needs_latex
def test_latex_timeout_is_reported(tmp_path: Path) -> None:
    tex = tmp_path / "loop.tex"
    write_text(tex, "\\documentclass{article}\n\\begin{document}\n\\def\\x{\\x}\\x\n\\end{document}\n")
    with pytest.raises(LatexError, match=r"loop\.tex did not finish"):
        compile_pdf(tex, tmp_path / "loop.pdf", timeout_s=3)


def test_cli_reports_missing_field_with_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = sample_table()
    del table["row_header"]
    write_json(tmp_path / "t.json", table)
    status = main(["table", "--table-json", str(tmp_path / "t.json"), "--out-tex", str(tmp_path / "t.tex")])
    assert status == 2
    assert not (tmp_path / "t.tex").exists()
    err = capsys.readouterr().err
    assert "t.json" in err
    assert "row_header" in err


@needs_latex
def test_cli_table_and_report(tmp_path: Path) -> None:
    write_json(tmp_path / "t.json", sample_table())
    write_json(tmp_path / "ctx.json", sample_context())
    assert (
        main(
            [
                "table",
                "--table-json",
                str(tmp_path / "t.json"),
                "--out-tex",
                str(tmp_path / "t.tex"),
                "--templates",
                str(TEMPLATES),
            ]
        )
        == 0
    )
    assert r"\begin{table}" in (tmp_path / "t.tex").read_text(encoding="utf-8")
    status = main(
        [
            "report",
            "--tables",
            str(tmp_path / "t.json"),
            "--context",
            str(tmp_path / "ctx.json"),
            "--out-tex",
            str(tmp_path / "r.tex"),
            "--out-pdf",
            str(tmp_path / "r.pdf"),
        ]
    )
    assert status == 0
    assert (tmp_path / "r.pdf").read_bytes().startswith(b"%PDF")


# --- shell escape -------------------------------------------------------------------------------------------


@needs_latex
def test_write18_in_row_label_is_inert(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    label = f"\\immediate\\write18{{touch {marker}}}\\write18{{touch {marker}}}"
    text = pdf_text(build_report(tmp_path, [sample_table(extra_label=label)]))
    assert not marker.exists()
    assert f"\\write18{{touch {marker}}}" in text


@needs_latex
def test_compile_pdf_has_no_shell_escape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "pwned"
    tex = tmp_path / "raw.tex"
    write_text(
        tex,
        "\\documentclass{article}\n\\begin{document}\n"
        f"\\immediate\\write18{{touch {marker}}}\nhello\n\\end{{document}}\n",
    )
    # A user latexmkrc asking for shell escape must be ignored too.
    home = tmp_path / "home"
    write_text(home / ".latexmkrc", "$pdflatex = 'pdflatex -shell-escape %O %S';\n")
    monkeypatch.setenv("HOME", str(home))
    compile_pdf(tex, tmp_path / "raw.pdf")
    assert (tmp_path / "raw.pdf").exists()
    assert not marker.exists()
    # Control: the payload is real; with shell escape on it does create the file.
    control = tmp_path / "control"
    control.mkdir()
    command = [
        "pdflatex",
        "-shell-escape",
        "-interaction=nonstopmode",
        f"-output-directory={control}",
        str(tex),
    ]
    subprocess.run(command, capture_output=True, check=False, cwd=control, timeout=60)
    assert marker.exists()
