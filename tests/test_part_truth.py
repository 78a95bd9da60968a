"""The master-parts truth file: what is written reads back, and every malformed line is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from yolodefect.data.part_truth import KnownPart, read_part_truth, write_part_truth
from yolodefect.errors import FormatError


def test_round_trip(tmp_path: Path) -> None:
    parts = [KnownPart("1", False), KnownPart("2", True, ("open", "short")), KnownPart("a,3", True),
             KnownPart("4", True, ("spurious_copper",))]
    path = write_part_truth(tmp_path / "sub" / "truth.csv", parts)
    assert path == tmp_path / "sub" / "truth.csv"
    assert read_part_truth(path) == parts
    assert [p.name for p in path.parent.iterdir()] == ["truth.csv"]  # no temporary file left behind
    assert path.stat().st_mode & 0o777 == 0o644  # readable by the line's other tools, not private like a temp file


def test_the_documented_example_with_comments_blank_lines_and_synonyms(tmp_path: Path) -> None:
    path = tmp_path / "truth.csv"
    path.write_text("# master parts of line 3\npart,truth,classes\n1,good,\n\n2,defective,open;short\n"
                    "  # a comment inside\n3,OK\n4,NG,\n5,Bad, pin_hole ; spur \n6,Good,\n", encoding="utf-8")
    assert read_part_truth(path) == [
        KnownPart("1", False), KnownPart("2", True, ("open", "short")), KnownPart("3", False),
        KnownPart("4", True), KnownPart("5", True, ("pin_hole", "spur")), KnownPart("6", False)]


def test_header_without_classes_column(tmp_path: Path) -> None:
    path = tmp_path / "truth.csv"
    path.write_text("part,truth\n7,good\n8,defective\n", encoding="utf-8")
    assert read_part_truth(path) == [KnownPart("7", False), KnownPart("8", True)]


def test_write_replaces_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "truth.csv"
    write_part_truth(path, [KnownPart("1", True)])
    path.chmod(0o640)
    write_part_truth(path, [KnownPart("9", False)])
    assert read_part_truth(path) == [KnownPart("9", False)]
    assert path.stat().st_mode & 0o777 == 0o640


def test_write_refuses_a_class_name_with_the_separator(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="class names"):
        write_part_truth(tmp_path / "truth.csv", [KnownPart("1", True, ("open;short",))])
    assert not (tmp_path / "truth.csv").exists()


@pytest.mark.parametrize(("text", "line", "words"), [
    ("part,truth,classes\n1,good,\n2,maybe,\n", 3, "good or defective"),
    ("# c\n\npart,truth,classes\n1,good,\n1,defective,\n", 5, "listed twice (first on line 4)"),
    ("part,truth,classes\n1,good,,extra\n", 2, "expected 3 columns"),
    ("part,truth,classes\n1\n", 2, "expected 3 columns"),
    ("part,truth,classes\n,good,\n", 2, "empty part id"),
    ("part,truth,classes\n1,good,open\n", 2, "is good but lists defect classes open"),
    ("id,state\n1,good\n", 1, "expected the header"),
    ("\n# only a comment\npart;truth;classes\n", 3, "expected the header"),
])
def test_malformed_line_is_named(tmp_path: Path, text: str, line: int, words: str) -> None:
    path = tmp_path / "truth.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(FormatError) as caught:
        read_part_truth(path)
    message = str(caught.value)
    assert message.startswith(f"{path} (line {line}): "), message
    assert words in message


@pytest.mark.parametrize("text", ["", "# nothing\n\n", "part,truth,classes\n# no rows\n"])
def test_file_without_parts_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "truth.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(FormatError, match=str(path)):
        read_part_truth(path)


def test_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="truth file not found"):
        read_part_truth(tmp_path / "absent.csv")
