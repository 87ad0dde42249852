"""PASCAL VOC layout reader/writer: round trip, error messages, coordinate conventions."""

from __future__ import annotations

from pathlib import Path

import pytest

from goodtransfer.data.voc import (
    VOC_CLASSES,
    VocObject,
    VocRecord,
    load_split,
    to_model_box,
    to_voc_box,
    write_annotation,
    write_split,
)
from goodtransfer.io import InputError

# Shaped like a real VOC2007 annotation, including fields the reader ignores.
VOC2007_STYLE_XML = """<annotation>
\t<folder>VOC2007</folder>
\t<filename>000005.jpg</filename>
\t<source><database>The VOC2007 Database</database><annotation>PASCAL VOC2007</annotation></source>
\t<owner><flickrid>someone</flickrid></owner>
\t<size><width>500</width><height>375</height><depth>3</depth></size>
\t<segmented>0</segmented>
\t<object>
\t\t<name>chair</name><pose>Rear</pose><truncated>0</truncated><difficult>0</difficult>
\t\t<bndbox><xmin>263</xmin><ymin>211</ymin><xmax>324</xmax><ymax>339</ymax></bndbox>
\t</object>
\t<object>
\t\t<name>chair</name><pose>Unspecified</pose><truncated>1</truncated><difficult>1</difficult>
\t\t<bndbox><xmin>5</xmin><ymin>244</ymin><xmax>67</xmax><ymax>374</ymax></bndbox>
\t</object>
</annotation>
"""


def _make_layout(root: Path, records: list[VocRecord], split: str = "test") -> None:
    for record in records:
        write_annotation(root / "Annotations" / f"{record.image_id}.xml", record)
        record.image_path.parent.mkdir(parents=True, exist_ok=True)
        record.image_path.write_bytes(b"\xff\xd8\xff\xd9")  # content is never read
    write_split(root, split, [record.image_id for record in records])


def _sample_records(root: Path) -> list[VocRecord]:
    return [
        VocRecord(
            "000001",
            root / "JPEGImages" / "000001.jpg",
            353,
            500,
            (
                VocObject("dog", (48, 240, 195, 371)),
                VocObject("person", (8, 12, 352, 498), difficult=False, truncated=True),
                VocObject("person", (1, 1, 353, 500), difficult=True, truncated=False),
            ),
        ),
        VocRecord("000002", root / "JPEGImages" / "000002.jpg", 335, 500, ()),
        VocRecord(
            "000004",
            root / "JPEGImages" / "000004.jpg",
            500,
            406,
            (VocObject("car", (13, 311, 84, 362), difficult=True, truncated=True),),
        ),
    ]


def _write_xml(root: Path, image_id: str, text: str, split: str = "test") -> None:
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "Annotations" / f"{image_id}.xml").write_text(text, encoding="utf-8")
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (root / "JPEGImages" / f"{image_id}.jpg").write_bytes(b"")
    write_split(root, split, [image_id])


def test_voc_classes_are_the_twenty_in_detectron2_order() -> None:
    assert len(VOC_CLASSES) == 20 == len(set(VOC_CLASSES))
    assert VOC_CLASSES[:3] == ("aeroplane", "bicycle", "bird")
    assert VOC_CLASSES[10] == "diningtable"
    assert VOC_CLASSES[14] == "person"
    assert VOC_CLASSES[-1] == "tvmonitor"


def test_write_then_load_split_round_trips_exactly(tmp_path: Path) -> None:
    records = _sample_records(tmp_path)
    _make_layout(tmp_path, records)
    assert load_split(tmp_path, "test", classes=VOC_CLASSES) == records


def test_written_annotation_has_voc_fields(tmp_path: Path) -> None:
    record = _sample_records(tmp_path / "VOC2007")[0]
    write_annotation(tmp_path / "a.xml", record)
    text = (tmp_path / "a.xml").read_text(encoding="utf-8")
    for fragment in (
        "<folder>VOC2007</folder>",
        "<filename>000001.jpg</filename>",
        "<depth>3</depth>",
        "<pose>Unspecified</pose>",
        "<truncated>1</truncated>",
        "<difficult>1</difficult>",
    ):
        assert fragment in text


def test_write_split_writes_one_id_per_line(tmp_path: Path) -> None:
    write_split(tmp_path, "val", ["000001", "000007"])
    assert (tmp_path / "ImageSets" / "Main" / "val.txt").read_text() == "000001\n000007\n"


def test_parses_voc2007_style_annotation(tmp_path: Path) -> None:
    _write_xml(tmp_path, "000005", VOC2007_STYLE_XML)
    (record,) = load_split(tmp_path, "test")
    assert (record.image_id, record.width, record.height) == ("000005", 500, 375)
    assert record.image_path == tmp_path / "JPEGImages" / "000005.jpg"
    assert record.objects == (
        VocObject("chair", (263, 211, 324, 339), difficult=False, truncated=False),
        VocObject("chair", (5, 244, 67, 374), difficult=True, truncated=True),
    )


def test_missing_difficult_and_truncated_mean_zero(tmp_path: Path) -> None:
    text = VOC2007_STYLE_XML.replace("<truncated>0</truncated><difficult>0</difficult>", "")
    _write_xml(tmp_path, "000005", text)
    assert load_split(tmp_path, "test")[0].objects[0] == VocObject("chair", (263, 211, 324, 339))


def test_missing_annotation_file_error_names_that_file(tmp_path: Path) -> None:
    records = _sample_records(tmp_path)
    _make_layout(tmp_path, records)
    missing = tmp_path / "Annotations" / "000002.xml"
    missing.unlink()
    with pytest.raises(InputError) as err:
        load_split(tmp_path, "test")
    assert str(missing) in str(err.value)
    assert "expected a PASCAL VOC layout with JPEGImages/, Annotations/, ImageSets/Main/" in str(err.value)


def test_missing_image_file_error_names_that_file(tmp_path: Path) -> None:
    records = _sample_records(tmp_path)
    _make_layout(tmp_path, records)
    records[2].image_path.unlink()
    with pytest.raises(InputError, match=r"000004\.jpg: missing; expected a PASCAL VOC layout"):
        load_split(tmp_path, "test")


def test_missing_split_file_error_names_split_path(tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        load_split(tmp_path, "trainval")
    assert str(tmp_path / "ImageSets" / "Main" / "trainval.txt") in str(err.value)


def test_non_integer_box_field_error_names_file_and_field(tmp_path: Path) -> None:
    _write_xml(tmp_path, "000005", VOC2007_STYLE_XML.replace("<xmin>5</xmin>", "<xmin>five</xmin>"))
    with pytest.raises(InputError) as err:
        load_split(tmp_path, "test")
    message = str(err.value)
    assert "000005.xml" in message
    assert "<object>[1]/<bndbox>/<xmin>" in message
    assert "integer" in message


def test_missing_box_field_error_names_field(tmp_path: Path) -> None:
    _write_xml(tmp_path, "000005", VOC2007_STYLE_XML.replace("<ymax>339</ymax>", ""))
    with pytest.raises(InputError, match=r"<object>\[0\]/<bndbox>/<ymax> is missing"):
        load_split(tmp_path, "test")


def test_missing_size_error_names_field(tmp_path: Path) -> None:
    _write_xml(tmp_path, "000005", VOC2007_STYLE_XML.replace("<width>500</width>", ""))
    with pytest.raises(InputError, match=r"000005.xml: <size>/<width> is missing"):
        load_split(tmp_path, "test")


def test_not_well_formed_xml_error_names_file(tmp_path: Path) -> None:
    _write_xml(tmp_path, "000005", VOC2007_STYLE_XML[:-20])
    with pytest.raises(InputError, match=r"000005\.xml: not well-formed XML"):
        load_split(tmp_path, "test")


def test_unknown_class_error_names_file_and_class(tmp_path: Path) -> None:
    _write_xml(tmp_path, "000005", VOC2007_STYLE_XML.replace("<name>chair</name>", "<name>chiar</name>", 1))
    with pytest.raises(InputError) as err:
        load_split(tmp_path, "test", classes=VOC_CLASSES)
    assert "000005.xml" in str(err.value)
    assert "'chiar'" in str(err.value)
    assert load_split(tmp_path, "test")[0].objects[0].name == "chiar"  # no class list: accepted


def test_duplicate_image_id_in_split_is_rejected(tmp_path: Path) -> None:
    records = _sample_records(tmp_path)
    _make_layout(tmp_path, records)
    write_split(tmp_path, "test", ["000001", "000002", "000001"])
    with pytest.raises(InputError, match="'000001' is listed more than once"):
        load_split(tmp_path, "test")


def test_model_box_subtracts_one_from_min_corner_only() -> None:
    # A box covering a whole 500x375 image is (1, 1, 500, 375) in the XML and (0, 0, 500, 375) in the model.
    assert to_model_box((1, 1, 500, 375)) == (0.0, 0.0, 500.0, 375.0)
    assert to_voc_box((0.0, 0.0, 500.0, 375.0)) == (1.0, 1.0, 500.0, 375.0)
    assert to_voc_box(to_model_box((48, 240, 195, 371))) == (48.0, 240.0, 195.0, 371.0)
