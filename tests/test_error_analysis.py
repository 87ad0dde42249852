"""Hoiem et al. false-positive types on hand-made VOC scenes, the top-N cuts, and the FP figures.

Boxes are VOC 1-based inclusive pixels (area (x2 - x1 + 1) * (y2 - y1 + 1)); detections are written in
model coordinates with ``to_model_box``, as ``voc_detection.evaluate`` stores them.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from goodtransfer.data.voc import (
    VOC_CLASSES,
    VocObject,
    VocRecord,
    to_model_box,
    write_annotation,
    write_split,
)
from goodtransfer.evaluate.error_analysis import (
    analyse,
    analyse_run,
    fp_trend,
    rank_labels,
    similar_classes,
    top_false_positives,
    write_analysis,
)
from goodtransfer.io import InputError, read_json, write_json
from goodtransfer.report.figures import plot_fp_breakdown, plot_fp_trend

CAT = (1, 1, 100, 100)  # area 10,000
DOG = (201, 1, 300, 100)
CHAIR = (401, 1, 500, 100)
HARD_CAT = (1, 201, 100, 300)  # difficult
NOWHERE = (201, 301, 300, 400)
CAT_TOP_30 = (1, 1, 100, 30)  # inside CAT: IoU 3,000 / 10,000 = 0.3
CAT_TOP_90 = (1, 1, 100, 90)  # inside CAT: IoU 0.9, a duplicate once CAT is matched
# Image "b": a dog and a chair side by side; a box over both overlaps the dog 0.18, the chair 0.54.
B_DOG, B_CHAIR, B_BOTH = (1, 1, 100, 100), (101, 1, 200, 100), (71, 1, 170, 100)
# Image "c": a cat and a dog with one box; IoU 0.3 with both is Loc (same class first), not Sim.
C_CAT, C_DOG = (1, 1, 100, 100), (1, 1, 100, 100)


def _record(image_id: str, *objects: VocObject, root: Path = Path(".")) -> VocRecord:
    return VocRecord(image_id, root / "JPEGImages" / f"{image_id}.jpg", 500, 500, objects)


def _records(root: Path = Path(".")) -> list[VocRecord]:
    return [
        _record(
            "a",
            VocObject("cat", CAT),
            VocObject("dog", DOG),
            VocObject("chair", CHAIR),
            VocObject("cat", HARD_CAT, difficult=True),
            root=root,
        ),
        _record("b", VocObject("dog", B_DOG), VocObject("chair", B_CHAIR), root=root),
        _record("c", VocObject("cat", C_CAT), VocObject("dog", C_DOG), root=root),
        _record("d", root=root),  # no objects at all
    ]


def _det(image_id: str, score: float, box: tuple[int, ...], cls: str = "cat") -> dict:
    return {"image_id": image_id, "class": cls, "score": score, "box": list(to_model_box(box))}


# (score, image, box, expected label), listed in rank order
CASES = [
    (0.99, "a", CAT, "TP"),
    (0.95, "a", CAT_TOP_90, "Loc"),  # duplicate of the matched CAT
    (0.90, "a", HARD_CAT, "ignored"),  # on a difficult cat: neither TP nor FP
    (0.85, "a", CAT_TOP_30, "Loc"),  # IoU 0.3 with CAT
    (0.80, "a", DOG, "Sim"),
    (0.75, "a", CHAIR, "Oth"),
    (0.70, "a", NOWHERE, "BG"),
    (0.65, "b", B_BOTH, "Sim"),  # similar (dog, 0.18) beats other (chair, 0.54) under "priority"
    (0.60, "c", CAT_TOP_30, "Loc"),  # IoU 0.3 with the cat and the dog: Loc comes first
    (0.55, "d", NOWHERE, "BG"),  # an image without objects
]


def _detections() -> list[dict]:
    dets = [_det(image, score, box) for score, image, box, _ in CASES]
    return dets[::-1] + [_det("a", 0.9, DOG, "dog")]  # input order must not matter; other classes skipped


def test_each_false_positive_gets_hoiems_type() -> None:
    labels = rank_labels(_detections(), _records(), "cat", VOC_CLASSES)
    assert labels == [label for *_, label in CASES]


def test_iou_of_exactly_half_is_correct_and_of_a_tenth_is_loc() -> None:
    record = _record("e", VocObject("cat", (1, 1, 100, 100)))
    boxes = [(1, 1, 100, 50), (1, 1, 100, 10), (1, 1, 100, 9)]  # IoU 0.5, 0.1, 0.09
    dets = [_det("e", 0.9 - k / 10, box) for k, box in enumerate(boxes)]
    assert rank_labels(dets, [record], "cat", VOC_CLASSES) == ["TP", "Loc", "BG"]


def test_detection_on_an_image_outside_the_split_is_an_error() -> None:
    with pytest.raises(InputError, match="image 'zz' is not in the evaluated split"):
        rank_labels([_det("zz", 0.5, CAT)], _records(), "cat", VOC_CLASSES)


def test_max_overlap_rule_takes_the_class_of_the_best_overlapping_object() -> None:
    labels = rank_labels(_detections(), _records(), "cat", VOC_CLASSES, sim_rule="max_overlap")
    assert labels[7] == "Oth"  # the chair overlaps B_BOTH most
    assert labels[:7] + labels[8:] == [label for *_, label in CASES[:7] + CASES[8:]]


def test_counts_over_all_false_positives_are_exact() -> None:
    result = analyse(_detections(), _records(), ["cat"], top_n=100, count="false_positives")
    cat = result["classes"]["cat"]
    assert cat["counts"] == {"Loc": 3, "Sim": 2, "Oth": 1, "BG": 2}
    assert cat["false_positives"] == 8 and cat["true_positives"] == 1 and cat["detections"] == 10
    assert cat["fractions"]["Loc"] == pytest.approx(3 / 8)
    assert cat["npos"] == 2  # the difficult cat is not a positive


def test_default_cut_is_the_top_npos_detections() -> None:
    cat = analyse(_detections(), _records(), ["cat"])["classes"]["cat"]
    # top 2 detections: the TP and its duplicate
    assert cat["top_n"] == 2 and cat["counts"] == {"Loc": 1, "Sim": 0, "Oth": 0, "BG": 0}


def test_top_n_cut_counts_the_best_false_positives_or_detections() -> None:
    labels = [label for *_, label in CASES]
    assert top_false_positives(labels, 3, "false_positives") == ["Loc", "Loc", "Sim"]
    assert top_false_positives(labels, 3, "detections") == ["Loc"]
    assert top_false_positives(labels, 0, "false_positives") == []
    with pytest.raises(InputError, match="count"):
        top_false_positives(labels, 3, "boxes")  # type: ignore[arg-type]


def test_trend_cuts_at_n_false_positives_and_toolbox_cut_counts_bg_twice() -> None:
    labels = ["TP", "BG", "Loc", "Sim", "BG"]
    clean = fp_trend(labels, points=(2, 3, 10))
    assert clean["false_positives"] == [2, 3, 4]
    assert clean["counts"]["BG"] == [1, 1, 2]
    toolbox = fp_trend(labels, points=(2, 3, 10), toolbox_cut=True)
    assert toolbox["false_positives"] == [1, 2, 0]  # BG alone reaches 2; 10 is never reached
    assert toolbox["fractions"]["BG"] == [1.0, 0.5, None]


def test_summary_pools_counts_and_averages_class_fractions() -> None:
    dets = _detections() + [_det("b", 0.5, B_DOG, "chair"), _det("b", 0.4, B_CHAIR, "chair")]
    result = analyse(dets, _records(), ["cat", "chair", "sofa"], top_n=100, count="false_positives")
    summary = result["summary"]
    assert summary["counts"] == {"Loc": 3, "Sim": 2, "Oth": 2, "BG": 2}
    assert summary["classes_with_false_positives"] == 2  # sofa has no detections: left out of the mean
    assert summary["mean_fractions"]["Oth"] == pytest.approx((1 / 8 + 1) / 2)
    assert result["classes"]["sofa"]["fractions"]["Loc"] is None


def test_similar_groups_follow_the_toolbox() -> None:
    assert similar_classes("cat") == {"bird", "cow", "dog", "horse", "person", "sheep"}
    assert similar_classes("bird") == {"cat", "cow", "dog", "horse", "person", "sheep", "aeroplane"}
    assert similar_classes("sofa") == {"chair", "diningtable"}
    assert similar_classes("tvmonitor") == frozenset()


def _voc_tree(root: Path) -> None:
    for record in _records(root):
        write_annotation(root / "Annotations" / f"{record.image_id}.xml", record)
        record.image_path.parent.mkdir(parents=True, exist_ok=True)
        record.image_path.write_bytes(b"")  # the analysis never opens images
    write_split(root, "test", [record.image_id for record in _records(root)])


def test_analyse_run_reads_detections_json_and_the_devkit(tmp_path: Path) -> None:
    _voc_tree(tmp_path / "VOC2007")
    det_json = tmp_path / "detections.json"
    write_json(det_json, {"classes": list(VOC_CLASSES), "detections": _detections()})
    out = tmp_path / "fp" / "analysis.json"
    result = write_analysis(
        out, det_json, tmp_path / "VOC2007", "test", ["cat"], 100, count="false_positives"
    )
    assert read_json(out) == result
    assert result["classes"]["cat"]["counts"] == {"Loc": 3, "Sim": 2, "Oth": 1, "BG": 2}
    assert result["source"]["split"] == "test"
    with pytest.raises(InputError, match="'zebra'"):
        analyse_run(det_json, tmp_path / "VOC2007", "test", ["zebra"])
    write_json(det_json, {"classes": ["cat"], "detections": [{"image_id": "a", "class": "cat", "score": 1}]})
    with pytest.raises(InputError, match=r"detections\[0\] lacks \['box'\]"):
        analyse_run(det_json, tmp_path / "VOC2007", "test")


def _analyses(demote: int | None = None) -> dict:
    """MoCo: the cat CASES (CASES[demote] moved to the bottom of the ranking); Supervised: only the TP."""
    scores = [0.01 if k == demote else score for k, (score, *_) in enumerate(CASES)]
    dets = [_det(image, score, box) for score, (_, image, box, _) in zip(scores, CASES, strict=True)]
    options = {"top_n": 3, "count": "false_positives", "trend_points": (2, 4)}
    return {
        "Supervised": analyse(dets[:1], _records(), ["cat", "dog"], **options),
        "MoCo": analyse(dets, _records(), ["cat", "dog"], **options),
    }


def _pdf_text(path: Path) -> str | None:
    if shutil.which("pdftotext") is None:
        return None
    return subprocess.run(["pdftotext", str(path), "-"], check=True, capture_output=True, text=True).stdout


def test_fp_breakdown_pdf_is_valid_deterministic_and_follows_the_data(tmp_path: Path) -> None:
    first, again, changed = tmp_path / "a.pdf", tmp_path / "b.pdf", tmp_path / "c.pdf"
    heights = plot_fp_breakdown(_analyses(), ["cat", "dog"], first)
    plot_fp_breakdown(_analyses(), ["cat", "dog"], again)
    assert first.read_bytes().startswith(b"%PDF") and first.read_bytes() == again.read_bytes()
    # top 3 FPs of the cat: duplicate (Loc), IoU 0.3 (Loc), the dog (Sim)
    assert heights["MoCo"]["cat"] == pytest.approx({"Loc": 200 / 3, "Sim": 100 / 3, "Oth": 0.0, "BG": 0.0})
    assert heights["Supervised"]["cat"] == {"Loc": 0.0, "Sim": 0.0, "Oth": 0.0, "BG": 0.0}  # no FP at all
    # the duplicate ranked last: top 3 FPs become Loc, Sim, Oth
    moved = plot_fp_breakdown(_analyses(demote=1), ["cat", "dog"], changed)
    assert moved["MoCo"]["cat"] == pytest.approx({"Loc": 100 / 3, "Sim": 100 / 3, "Oth": 100 / 3, "BG": 0.0})
    assert first.read_bytes() != changed.read_bytes()
    text, changed_text = _pdf_text(first), _pdf_text(changed)
    if text is not None and changed_text is not None:  # the Loc share is printed above each bar
        words, changed_words = text.split(), changed_text.split()
        assert "67" in words and "33" not in words and "MoCo" in text and "cat" in text
        assert "33" in changed_words and "67" not in changed_words
        # and each run's mean over the classes in the panel's title (dog has no false positive)
        assert "ours: mean Loc share Supervised 0.0%, MoCo 33.3%" in " ".join(words)


def test_fp_trend_pdf_embeds_fonts_and_returns_the_shares(tmp_path: Path) -> None:
    out = tmp_path / "fig1.pdf"
    heights = plot_fp_trend({"MoCo": _analyses()["MoCo"]}, ["cat"], out)
    assert heights["MoCo"]["cat"]["Loc"] == pytest.approx(
        [100.0, 50.0]
    )  # top 2 FPs: Loc, Loc; top 4: +Sim, +Oth
    assert out.read_bytes().startswith(b"%PDF")
    if shutil.which("pdffonts"):
        fonts = subprocess.run(["pdffonts", str(out)], check=True, capture_output=True, text=True).stdout
        rows = fonts.splitlines()[2:]
        assert rows and all(" yes " in row for row in rows)  # every font embedded
    with pytest.raises(InputError, match="no class 'sheep'"):
        plot_fp_trend({"MoCo": _analyses()["MoCo"]}, ["sheep"], out)
