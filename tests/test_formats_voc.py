"""Pascal VOC reader: layouts, pairing by stem, splits, and every malformed-file error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from yolodefect.data.formats import voc
from yolodefect.data.formats.base import ReadOptions
from yolodefect.data.records import Box
from yolodefect.errors import DatasetError, FormatError


def write_image(path: Path, size_wh: tuple[int, int] = (32, 24)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size_wh, (90, 90, 90)).save(path)
    return path


def voc_object(name: str, xyxy: tuple[object, object, object, object], *, difficult: int = 0) -> str:
    xmin, ymin, xmax, ymax = xyxy
    return (
        f"<object><name>{name}</name><difficult>{difficult}</difficult><truncated>0</truncated>"
        f"<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>"
    )


def write_xml(path: Path, objects: list[str], *, filename: str = "x.jpg", size: str | None = "32 24") -> Path:
    size_xml = ""
    if size is not None:
        width, height = size.split()
        size_xml = f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"<annotation>\n<folder>f</folder>\n<filename>{filename}</filename>\n{size_xml}\n"
        + "\n".join(objects)
        + "\n</annotation>\n",
        encoding="utf-8",
    )
    return path


def read(src: Path, **options: bool):
    return voc.read(src, ReadOptions(**options))


def by_name(dataset) -> dict[str, object]:
    return {record.image_path.name: record for record in dataset.records}


# --------------------------------------------------------------------------- layouts


def make_neu_layout(src: Path) -> None:
    write_image(src / "IMAGES" / "crazing_1.jpg")
    write_xml(src / "ANNOTATIONS" / "crazing_1.xml", [voc_object("crazing", (2, 3, 20, 21))], filename="crazing_1.jpg")
    write_image(src / "IMAGES" / "patches_104.jpg")
    # NEU-DET quirk: <filename> without the extension; pairing is by stem.
    write_xml(
        src / "ANNOTATIONS" / "patches_104.xml",
        [voc_object("patches", (1.5, 2.25, 10.75, 12)), voc_object("patches", (4, 4, 9, 9), difficult=1)],
        filename="patches_104",
    )
    write_image(src / "Validation_Images" / "scratches_7.jpg")
    write_xml(src / "Validation_Annotations" / "scratches_7.xml", [voc_object(" scratches ", (0, 0, 5, 6))])
    write_image(src / "IMAGES" / "clean_1.jpg")  # no XML: background


def test_neu_layout_pairs_by_stem_and_reads_exact_boxes(tmp_path: Path) -> None:
    make_neu_layout(tmp_path)
    dataset = read(tmp_path)
    records = by_name(dataset)
    assert [record.image_path.name for record in dataset.records] == [
        "clean_1.jpg",
        "crazing_1.jpg",
        "patches_104.jpg",
        "scratches_7.jpg",
    ]
    assert dataset.class_names == ["crazing", "patches", "scratches"]
    assert records["crazing_1.jpg"].boxes == [Box("crazing", (2.0, 3.0, 20.0, 21.0))]
    # Float coordinates and the difficult object are both kept.
    assert records["patches_104.jpg"].boxes == [
        Box("patches", (1.5, 2.25, 10.75, 12.0)),
        Box("patches", (4.0, 4.0, 9.0, 9.0)),
    ]
    assert records["patches_104.jpg"].annotation_path == tmp_path / "ANNOTATIONS" / "patches_104.xml"
    assert records["patches_104.jpg"].declared_size_wh == (32, 24)
    assert records["scratches_7.jpg"].boxes == [Box("scratches", (0.0, 0.0, 5.0, 6.0))]
    assert records["clean_1.jpg"].is_background and records["clean_1.jpg"].annotation_path is None
    assert len(dataset.warnings) == 1 and "1 image(s) have no XML" in dataset.warnings[0].message
    assert dataset.skipped == []


def test_neu_layout_splits_from_folder_names(tmp_path: Path) -> None:
    make_neu_layout(tmp_path)
    splits = {name: record.split for name, record in by_name(read(tmp_path)).items()}
    assert splits == {"clean_1.jpg": None, "crazing_1.jpg": None, "patches_104.jpg": None, "scratches_7.jpg": "val"}


def test_standard_voc_layout_with_imagesets(tmp_path: Path) -> None:
    root = tmp_path / "VOCdevkit" / "VOC2007"
    for stem, split in (("000001", "train"), ("000002", "val"), ("000003", "test"), ("000004", None)):
        write_image(root / "JPEGImages" / f"{stem}.jpg")
        write_xml(root / "Annotations" / f"{stem}.xml", [voc_object("dent", (1, 1, 5, 5))])
        # A segmentation mask with the same stem must be neither paired nor a background image.
        write_image(root / "SegmentationClass" / f"{stem}.png")
    main = root / "ImageSets" / "Main"
    main.mkdir(parents=True)
    (main / "train.txt").write_text("000001\n")
    (main / "val.txt").write_text("000002\n")
    (main / "test.txt").write_text("000003\n")
    (main / "dent_train.txt").write_text("000001  1\n000002 -1\n")  # per-class list: ignored
    dataset = read(tmp_path)
    splits = {record.image_path.name: record.split for record in dataset.records}
    assert splits == {"000001.jpg": "train", "000002.jpg": "val", "000003.jpg": "test", "000004.jpg": None}
    assert dataset.warnings == []


def test_xml_beside_images_in_split_folders(tmp_path: Path) -> None:
    for split_folder, expected in (("train", "train"), ("valid", "val"), ("test", "test")):
        write_image(tmp_path / split_folder / "a.png")
        write_xml(tmp_path / split_folder / "a.xml", [voc_object("hole", (1, 2, 3, 4))])
    dataset = read(tmp_path)
    assert [(record.image_path.parent.name, record.split) for record in dataset.records] == [
        ("test", "test"),
        ("train", "train"),
        ("valid", "val"),
    ]
    assert dataset.box_count == 3


def test_same_stem_in_parallel_folders_pairs_with_matching_folder(tmp_path: Path) -> None:
    write_image(tmp_path / "train" / "images" / "a.jpg")
    write_image(tmp_path / "val" / "images" / "a.jpg")
    write_xml(tmp_path / "train" / "annotations" / "a.xml", [voc_object("train_defect", (1, 1, 2, 2))])
    write_xml(tmp_path / "val" / "annotations" / "a.xml", [voc_object("val_defect", (1, 1, 2, 2))])
    dataset = read(tmp_path)
    assert [(record.split, record.boxes[0].class_name) for record in dataset.records] == [
        ("train", "train_defect"),
        ("val", "val_defect"),
    ]


@pytest.mark.parametrize(
    ("size", "expected"), [("32 24", (32, 24)), ("0 0", None), (None, None), ("32 abc", None)]
)
def test_declared_size(tmp_path: Path, size: str | None, expected: tuple[int, int] | None) -> None:
    write_image(tmp_path / "a.jpg")
    write_xml(tmp_path / "a.xml", [voc_object("d", (1, 1, 2, 2))], size=size)
    assert read(tmp_path).records[0].declared_size_wh == expected


def test_xml_without_objects_is_a_labelled_background(tmp_path: Path) -> None:
    write_image(tmp_path / "a.jpg")
    write_xml(tmp_path / "a.xml", [])
    dataset = read(tmp_path)
    assert dataset.records[0].is_background and dataset.records[0].annotation_path == tmp_path / "a.xml"
    assert dataset.warnings == []


# --------------------------------------------------------------------------- malformed files

MALFORMED = [
    pytest.param("<annotation><object><name>d</name>\n<bndbox></annotation>", "line 2", "not well-formed", id="xml"),
    pytest.param("<doc><object/></doc>", "<doc>", "expected <annotation>", id="root"),
    pytest.param(
        "<annotation>" + voc_object("d", (1, 1, 2, 2)) + "<object><bndbox/></object></annotation>",
        "object 2",
        "no <name>",
        id="no-name",
    ),
    pytest.param("<annotation><object><name>d</name></object></annotation>", "object 1", "no <bndbox>", id="no-bndbox"),
    pytest.param(
        "<annotation>" + voc_object("d", (1, 1, 2, 2)) + voc_object("d", (1, 1, "abc", 2)) + "</annotation>",
        "object 2",
        "<bndbox>/<xmax> is 'abc', not a number",
        id="not-a-number",
    ),
    pytest.param(
        "<annotation><object><name>d</name><bndbox><xmin>1</xmin></bndbox></object></annotation>",
        "object 1",
        "<bndbox>/<ymin> is missing",
        id="missing-coordinate",
    ),
    pytest.param(
        '<?xml version="1.0"?>\n<!DOCTYPE a [<!ENTITY e "boom">]>\n<annotation>&e;</annotation>',
        "line 2",
        "DOCTYPE declarations are not allowed",
        id="doctype",
    ),
]


@pytest.mark.parametrize(("xml", "where", "detail"), MALFORMED)
def test_malformed_xml_raises_naming_file_and_element(tmp_path: Path, xml: str, where: str, detail: str) -> None:
    write_image(tmp_path / "bad.jpg")
    (tmp_path / "bad.xml").write_text(xml, encoding="utf-8")
    with pytest.raises(FormatError) as caught:
        read(tmp_path)
    message = str(caught.value)
    assert "bad.xml" in message and where in message and detail in message


@pytest.mark.parametrize(("xml", "where", "detail"), MALFORMED)
def test_malformed_xml_is_skipped_with_skip_bad(tmp_path: Path, xml: str, where: str, detail: str) -> None:
    write_image(tmp_path / "bad.jpg")
    (tmp_path / "bad.xml").write_text(xml, encoding="utf-8")
    write_image(tmp_path / "good.jpg")
    write_xml(tmp_path / "good.xml", [voc_object("d", (1, 1, 2, 2))])
    dataset = read(tmp_path, skip_bad=True)
    assert [note.path for note in dataset.skipped] == [str(tmp_path / "bad.xml")]
    assert where in dataset.skipped[0].message
    # The image of the broken XML is not passed off as a defect-free background.
    assert [record.image_path.name for record in dataset.records] == ["good.jpg"]


def test_xml_without_image(tmp_path: Path) -> None:
    write_xml(tmp_path / "orphan.xml", [voc_object("d", (1, 1, 2, 2))])
    write_image(tmp_path / "good.jpg")
    write_xml(tmp_path / "good.xml", [voc_object("d", (1, 1, 2, 2))])
    with pytest.raises(FormatError, match=r"orphan\.xml.*no image named orphan"):
        read(tmp_path)
    dataset = read(tmp_path, skip_bad=True)
    assert [note.path for note in dataset.skipped] == [str(tmp_path / "orphan.xml")]
    assert len(dataset.records) == 1


# --------------------------------------------------------------------------- looks_like


def test_looks_like_voc(tmp_path: Path) -> None:
    make_neu_layout(tmp_path)
    assert voc.looks_like(tmp_path)


def test_looks_like_is_false_for_coco_and_other_xml(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "a.jpg")
    (tmp_path / "annotations.json").write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    (tmp_path / "config.xml").write_text("<settings><a>1</a></settings>")
    assert not voc.looks_like(tmp_path)
    assert not voc.looks_like(tmp_path / "annotations.json")


# --------------------------------------------------------------------------- real data


@pytest.mark.shared
def test_real_neu_det(shared_dir: Path) -> None:
    dataset = voc.read(shared_dir / "datasets" / "neu-det", ReadOptions())
    assert len(dataset.records) == 1800
    assert dataset.box_count == 4189
    assert dataset.class_names == [
        "crazing",
        "inclusion",
        "patches",
        "pitted_surface",
        "rolled-in_scale",
        "scratches",
    ]
    assert sum(record.split == "val" for record in dataset.records) == 30
    assert dataset.skipped == [] and dataset.warnings == []


def test_two_xml_files_for_one_image(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "a.jpg")
    write_xml(tmp_path / "one" / "a.xml", [voc_object("d", (1, 1, 2, 2))])
    write_xml(tmp_path / "two" / "a.xml", [voc_object("d", (1, 1, 2, 2))])
    with pytest.raises(FormatError, match=r"two/a\.xml: image .*a\.jpg is also labelled by .*one/a\.xml"):
        read(tmp_path)


def test_folder_without_xml_is_refused(tmp_path: Path) -> None:
    write_image(tmp_path / "a.jpg")
    with pytest.raises(DatasetError, match="no VOC XML files"):
        read(tmp_path)
