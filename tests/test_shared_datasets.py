"""The real datasets in ../shared, converted and checked as a user would (skipped when absent)."""

from __future__ import annotations

import pytest

from yolodefect.data.check import check_dataset
from yolodefect.data.convert import ConvertOptions, convert

pytestmark = pytest.mark.shared


def test_neu_det_converts_every_image_and_box_and_checks_clean(shared_dir, tmp_path):
    result = convert(shared_dir / "datasets" / "neu-det", tmp_path / "neu", ConvertOptions(format="auto"))
    assert result.format == "voc"
    assert result.images_read == 1800 and result.images_written == 1800
    assert result.boxes_read == 4189
    # Three annotation files list the same box twice; Ultralytics would drop the copy, we say so.
    repeated = [note for note in result.warnings if "listed twice" in note.message]
    assert len(repeated) == 3 and result.boxes_written == 4189 - 3
    assert set(result.splits) == {"train", "val", "test"}
    assert len(result.class_names) == 6
    report = check_dataset(tmp_path / "neu")
    assert not report.has_errors, [str(p) for p in report.errors]


def test_deeppcb_keeps_the_official_split_and_checks_clean(shared_dir, tmp_path):
    result = convert(shared_dir / "datasets" / "deeppcb", tmp_path / "pcb", ConvertOptions(transfer="copy"))
    assert result.format == "deeppcb"
    assert result.images_written == 1500
    # 10013, one more than a line count gives: 20085003.txt has no final newline.
    assert result.boxes_read == result.boxes_written == 10013
    assert result.splits["train"].images + result.splits["val"].images == 1000  # official trainval
    assert result.splits["test"].images == 500  # official test, untouched
    report = check_dataset(tmp_path / "pcb")
    assert not report.has_errors, [str(p) for p in report.errors]


def test_deeppcb_templates_become_defect_free_images(shared_dir, tmp_path):
    result = convert(shared_dir / "datasets" / "deeppcb", tmp_path / "pcb",
                     ConvertOptions(include_templates=True))
    assert result.images_written == 3001
    assert result.splits["test"].backgrounds == 500
