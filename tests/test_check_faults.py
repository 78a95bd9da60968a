"""`check` on data.yaml files Ultralytics refuses, and the one JPEG verdict `check` and `convert` share."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from yolodefect.cli import app
from yolodefect.data.check import check_dataset
from yolodefect.data.convert import inspect_image
from yolodefect.data.yolo_dataset import load_data_config
from yolodefect.errors import FormatError
from tests.test_check import CLEAN, make_dataset


def with_nc(root: Path, nc: str) -> Path:
    yaml_path = root / "data.yaml"
    yaml_path.write_text(yaml_path.read_text(encoding="utf-8") + f"nc: {nc}\n", encoding="utf-8")
    return yaml_path


@pytest.mark.parametrize(("nc", "message"), [
    ("3", "'nc' is 3 but 'names' lists 2 classes: set 'nc: 2' (the number of names) or delete the 'nc' line"),
    ("1", "'nc' is 1 but 'names' lists 2 classes"),
    ("two", "'nc' is 'two', not a whole number: set 'nc: 2'"),
    ("2.5", "'nc' is 2.5, not a whole number"),
    ("true", "'nc' is True, not a whole number"),
])
def test_nc_disagreeing_with_names_is_an_error_with_the_fix(tmp_path, nc, message):
    yaml_path = with_nc(make_dataset(tmp_path / "d", CLEAN), nc)
    with pytest.raises(FormatError) as raised:
        check_dataset(yaml_path)
    assert str(raised.value).startswith(f"{yaml_path}: ") and message in str(raised.value)


@pytest.mark.parametrize("nc", ["2", "2.0", "'2'"])
def test_nc_equal_to_the_name_count_is_accepted_as_ultralytics_accepts_it(tmp_path, nc):
    yaml_path = with_nc(make_dataset(tmp_path / "d", CLEAN), nc)
    assert load_data_config(yaml_path).class_names == ["scratch", "dent"]
    assert not check_dataset(yaml_path).has_errors


def test_cli_check_with_a_wrong_nc_is_one_red_line_and_exit_1(tmp_path):
    yaml_path = with_nc(make_dataset(tmp_path / "d", CLEAN), "5")
    result = CliRunner().invoke(app, ["check", str(yaml_path)])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "set 'nc: 2'" in lines[0]
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------- one JPEG verdict


def jpeg_ending(kind: str):
    def mutate(path: Path) -> None:
        data = path.read_bytes()
        path.write_bytes({"whole": data, "nul-padded": data + b"\x00" * 512, "truncated": data[:-40],
                          "camera trailer": data + b"CAMDATA\x01\x02" * 10,
                          "truncated, then NULs": data[:-40] + b"\x00" * 64}[kind])
    return mutate


@pytest.mark.parametrize(("kind", "whole"), [
    ("whole", True), ("nul-padded", True), ("camera trailer", True), ("truncated", False),
    ("truncated, then NULs", False),
])
def test_check_and_convert_give_one_verdict_on_how_a_jpeg_ends(tmp_path, kind, whole):
    root = make_dataset(tmp_path / "d", CLEAN)
    png = root / "images" / "train" / "t0.png"
    jpeg = png.with_suffix(".jpg")
    Image.open(png).convert("RGB").save(jpeg, quality=90)
    png.unlink()
    jpeg_ending(kind)(jpeg)

    problems = [problem for problem in check_dataset(root).problems if problem.path == str(jpeg)]
    check_accepts = not [problem for problem in problems if problem.level == "error"]
    try:
        inspect_image(jpeg)
        convert_accepts = True
    except FormatError as error:
        assert "truncated JPEG" in str(error)
        convert_accepts = False
    assert check_accepts == convert_accepts == whole
    if kind == "nul-padded":
        assert [(p.level, p.message.split(":")[0]) for p in problems] == [
            ("warning", "JPEG ends with 512 NUL bytes after its end-of-image marker")]
    elif kind == "camera trailer":
        assert [(p.level, p.message.split(":")[0]) for p in problems] == [
            ("warning", "JPEG ends with 90 bytes of trailing data after its end-of-image marker")]
    elif not whole:
        assert [p.message for p in problems] == [
            "truncated JPEG (no end-of-image marker): Ultralytics would re-save it in place, grey where data is missing"]
    else:
        assert problems == []
