"""``yolodefect review merge``: a review queue's reviewed LabelMe files become a new dataset version, train only.

The queue fixtures write the folder format of the review-queue contract themselves (frame + LabelMe JSON with the
``yolodefect`` provenance and the sha256 of the shapes as written), as ``watch --review`` and LabelMe leave it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from yolodefect.cli import app
from yolodefect.data.check import check_dataset
from yolodefect.data.convert import ConvertOptions, build_dataset
from yolodefect.data.records import Box, ImageRecord, SourceDataset
from yolodefect.data.review_merge import MergeOptions, merge_review, next_version_folder
from yolodefect.data.yolo_dataset import load_data_config
from yolodefect.errors import DatasetError, FormatError, UsageError

CLASSES = ["scratch", "pit"]
FRAME_WH = (160, 120)
MODEL_SHA = "ab" * 32
runner = CliRunner()


# --------------------------------------------------------------------------- fixtures


def noise_image(path: Path, seed: int, size_wh=FRAME_WH) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size_wh[1], size_wh[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def make_dataset(tmp_path: Path, transfer: str = "link") -> Path:
    """A converted dataset with train, val and test: 8 images per class and 4 defect-free ones."""
    records, seed = [], 0
    for name in CLASSES:
        for index in range(8):
            seed += 1
            records.append(ImageRecord(noise_image(tmp_path / "src" / f"{name}_{index}.png", seed),
                                       [Box(name, (10, 20, 40, 60))]))
    for index in range(4):
        seed += 1
        records.append(ImageRecord(noise_image(tmp_path / "src" / f"good_{index}.png", seed)))
    out = tmp_path / "data"
    build_dataset(SourceDataset("test", records, list(CLASSES)), out,
                  ConvertOptions(split="0.6,0.2,0.2", transfer=transfer), source_label="mem")
    return out


def rectangle(label: str, points, confidence: float = 0.5) -> dict:
    return {"label": label, "points": points, "group_id": None, "description": f"model confidence {confidence:.2f}",
            "shape_type": "rectangle", "flags": {}}


def shapes_hash(shapes) -> str:
    return hashlib.sha256(json.dumps(shapes, sort_keys=True).encode("utf-8")).hexdigest()


def queue_item(queue: Path, index: int, predictions: list[dict], *, reviewed_shapes: list[dict] | None = None,
               reviewed_flag: bool = False, classes=CLASSES, seed: int | None = None,
               frame_bytes: bytes | None = None) -> Path:
    """One item as watch --review writes it, then as a reviewer left it: ``reviewed_shapes`` replaces the model's
    shapes (an edit), ``reviewed_flag`` ticks the flag. Returns the JSON's path."""
    stem = f"20250102T0304{index:02d}_123_{index:08x}"
    image = queue / f"{stem}.jpg"
    if frame_bytes is not None:
        queue.mkdir(parents=True, exist_ok=True)
        image.write_bytes(frame_bytes)
    else:
        noise_image(image, 1000 + (index if seed is None else seed))
    provenance = {
        "version": 1, "event_id": f"event-{index}", "part_id": index, "saved_at": "2025-01-02T03:04:05.200Z",
        "captured_at": f"2025-01-02T03:04:{index:02d}.123Z", "source": "cam0", "frame_index": 40 + index,
        "model": {"name": "best.pt", "sha256": MODEL_SHA, "precision": "fp32"}, "class_names": list(classes),
        "thresholds": {name: 0.5 for name in classes}, "reasons": ["near_threshold"],
        "detail": "scratch 0.47 within 0.1 of 0.50", "decision": "pass", "part_bbox_xyxy": None,
        "predictions_sha256": shapes_hash(predictions),
    }
    document = {"version": "5.5.0", "flags": {"reviewed": reviewed_flag},
                "shapes": predictions if reviewed_shapes is None else reviewed_shapes, "imagePath": image.name,
                "imageData": None, "imageHeight": FRAME_WH[1], "imageWidth": FRAME_WH[0], "yolodefect": provenance}
    json_path = image.with_suffix(".json")
    json_path.write_text(json.dumps(document, indent=2), encoding="utf-8")
    return json_path


def write_queue_summary(queue: Path) -> None:
    (queue / "review_queue.json").write_text(json.dumps({"version": 1, "saved": 3, "removed_oldest": 0,
                                                         "rate_limited": 0, "by_reason": {}, "max_items": 100}))


def tree_state(root: Path) -> dict[str, tuple]:
    """Every entry under ``root``: a link's target, or a file's sha256 and modification time."""
    state = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            relative = path.relative_to(root).as_posix()
            if path.is_symlink():
                state[relative] = ("link", os.readlink(path))
            elif path.is_file():
                state[relative] = ("file", hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
            else:
                state[relative] = ("dir",)
    return state


def split_files(root: Path, kind: str, split: str) -> dict[str, bytes]:
    folder = root / kind / split
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


PREDICTED = [rectangle("scratch", [[30.5, 40.0], [60.0, 80.25]], 0.47)]


# --------------------------------------------------------------------------- the merge


def test_reviewed_boxes_go_to_train_exactly_and_the_old_dataset_is_untouched(tmp_path):
    data = make_dataset(tmp_path)
    queue = tmp_path / "queue"
    # edited, flag left unticked: a moved scratch and an added pit (corners given bottom-right first)
    edited = queue_item(queue, 1, PREDICTED, reviewed_shapes=[rectangle("scratch", [[16, 12], [48, 60]]),
                                                               rectangle("pit", [[150, 110], [120, 90]])])
    good = queue_item(queue, 2, PREDICTED, reviewed_shapes=[], reviewed_flag=True)  # a false alarm: a good part
    untouched = queue_item(queue, 3, PREDICTED)
    write_queue_summary(queue)
    being_written = noise_image(queue / "20250102T030409_123_00000009.jpg", 9)  # its JSON comes last
    before, queue_before = tree_state(data), tree_state(queue)
    old_train = split_files(data, "images", "train")

    result = merge_review(queue, data)

    out = tmp_path / "data-v2"
    assert result.out == str(out) and out.is_dir()
    assert tree_state(data) == before, "the old dataset must not change"
    assert tree_state(queue) == queue_before, "the queue must not change"
    assert not list(tmp_path.glob(".data-v2.*")), "the staging folder must be gone"
    # val and test: the same images and the same label bytes as before
    for split in ("val", "test"):
        assert split_files(out, "images", split) == split_files(data, "images", split)
        assert split_files(out, "labels", split) == split_files(data, "labels", split)
    assert split_files(out, "labels", "train").items() >= split_files(data, "labels", "train").items()
    # train: the old images plus exactly the two reviewed frames, their boxes normalised to the frame
    new_train = split_files(out, "images", "train")
    assert set(new_train) == set(old_train) | {f"{edited.stem}.jpg", f"{good.stem}.jpg"}
    assert (out / "labels/train" / f"{edited.stem}.txt").read_text().splitlines() == [
        "0 0.200000 0.300000 0.200000 0.400000", "1 0.843750 0.833333 0.187500 0.166667"]
    assert (out / "labels/train" / f"{good.stem}.txt").read_text() == ""  # kept as a defect-free image
    assert new_train[f"{edited.stem}.jpg"] == edited.with_suffix(".jpg").read_bytes()
    assert not (out / "images/train" / f"{edited.stem}.jpg").is_symlink(), "queue frames are copied: the queue rotates"
    assert all((out / "images/train" / name).is_symlink() for name in old_train), "DATA's images linked, as convert does"
    # the result says what was skipped and why
    assert [item.event_id for item in result.added] == ["event-1", "event-2"]
    assert [item.reviewed for item in result.added] == [True, True]
    assert result.unreviewed_skipped == 1 and result.unreviewed_examples == [untouched.name]
    assert result.boxes_added_per_class == {"scratch": 1, "pit": 1} and result.backgrounds_added == 1
    assert result.base_images["train"] + 2 == result.images["train"]
    assert result.images["val"] == result.base_images["val"] and result.duplicates == []
    assert [(note.path, note.kind) for note in result.warnings] == [(str(being_written), "frames_without_json")]


def test_the_new_version_has_a_valid_data_yaml_and_passes_check(tmp_path):
    data = make_dataset(tmp_path)
    queue = tmp_path / "queue"
    queue_item(queue, 1, PREDICTED, reviewed_flag=True)
    result = merge_review(queue, data)

    config = load_data_config(Path(result.out))
    assert config.class_names == CLASSES
    assert sorted(config.split_dirs) == ["test", "train", "val"]
    assert yaml.safe_load((Path(result.out) / "data.yaml").read_text())["nc"] == 2
    report = check_dataset(result.out)
    assert not report.has_errors, [problem.message for problem in report.errors]
    assert report.splits["train"].images == result.images["train"]
    cli = runner.invoke(app, ["check", result.out])
    assert cli.exit_code == 0, cli.output
    # Ultralytics itself reads the yaml and finds the merged frame with its box
    from ultralytics.data import YOLODataset
    from ultralytics.data.utils import check_det_dataset

    resolved = check_det_dataset(str(Path(result.out) / "data.yaml"))
    assert resolved["nc"] == 2 and resolved["names"] == {0: "scratch", 1: "pit"}
    train = YOLODataset(img_path=resolved["train"], data=resolved, task="detect", imgsz=160, augment=False)
    labels = {Path(label["im_file"]).stem: label for label in train.labels}
    assert len(labels) == result.images["train"]
    merged = labels["20250102T030401_123_00000001"]
    assert merged["cls"].ravel().tolist() == [0]
    assert np.allclose(merged["bboxes"], [[0.282813, 0.501042, 0.184375, 0.335417]], atol=1e-6)


def test_changelog_records_what_came_from_the_line(tmp_path):
    data = make_dataset(tmp_path)
    queue = tmp_path / "queue"
    queue_item(queue, 1, PREDICTED, reviewed_shapes=[rectangle("pit", [[1, 2], [11, 22]]),
                                                     rectangle("pit", [[30, 30], [40, 40]])])
    result = merge_review(queue, data)

    out = Path(result.out)
    changes = json.loads((out / "changes.json").read_text())
    [merge] = changes["merges"]
    [item] = merge["items"]
    assert item["event_id"] == "event-1" and item["source"] == "cam0" and item["model_sha256"] == MODEL_SHA
    assert item["captured_at"] == "2025-01-02T03:04:01.123Z" and item["reasons"] == ["near_threshold"]
    assert item["boxes_per_class"] == {"pit": 2} and item["reviewed"] is True
    assert merge["boxes_added_per_class"] == {"scratch": 0, "pit": 2}
    changelog = (out / "CHANGELOG.md").read_text()
    assert "| event-1 | cam0 | 2025-01-02T03:04:01.123Z | abababababab | pass | near_threshold" in changelog
    assert "+2 pit" in changelog
    record = json.loads((out / "merge.json").read_text())
    assert record["images_added"] == 1 and record["base"] == str(data)
    assert (out / "conversion.json").read_bytes() == (data / "conversion.json").read_bytes()


def test_unreviewed_items_are_refused_unless_accepted(tmp_path):
    data = make_dataset(tmp_path)
    queue = tmp_path / "queue"
    first = queue_item(queue, 1, PREDICTED)
    queue_item(queue, 2, [rectangle("pit", [[0, 0], [80, 60]])])

    with pytest.raises(DatasetError, match=r"nothing to merge .* 2 unreviewed .*--accept-unreviewed"):
        merge_review(queue, data)
    assert not (tmp_path / "data-v2").exists()

    result = merge_review(queue, data, MergeOptions(accept_unreviewed=True))
    assert result.accepted_unreviewed == 2 and result.unreviewed_skipped == 0
    assert [item.reviewed for item in result.added] == [False, False]
    # the model's boxes as they are: scratch (30.5, 40, 60, 80.25) and pit (0, 0, 80, 60) on 160x120
    labels = Path(result.out) / "labels/train"
    assert (labels / f"{first.stem}.txt").read_text().splitlines() == ["0 0.282813 0.501042 0.184375 0.335417"]
    assert (labels / "20250102T030402_123_00000002.txt").read_text().splitlines() == [
        "1 0.250000 0.250000 0.500000 0.500000"]
    assert "(unreviewed)" in (Path(result.out) / "CHANGELOG.md").read_text()


@pytest.mark.parametrize("model_classes", [["scratch", "dent"], ["pit", "scratch"], ["scratch", "pit", "dent"]])
def test_a_queue_of_a_model_with_other_classes_is_refused(tmp_path, model_classes):
    data = make_dataset(tmp_path)
    queue = tmp_path / "queue"
    queue_item(queue, 1, PREDICTED, reviewed_flag=True)
    other = queue_item(queue, 2, PREDICTED, reviewed_flag=True, classes=model_classes)
    before = tree_state(data)

    with pytest.raises(UsageError, match=rf"{other.name}: queued by a model with classes .*{model_classes[1]}"):
        merge_review(queue, data)
    assert not (tmp_path / "data-v2").exists() and not list(tmp_path.glob(".data-v2*"))
    assert tree_state(data) == before


def test_a_label_that_is_not_a_class_names_the_file_and_the_label(tmp_path):
    data = make_dataset(tmp_path)
    queue = tmp_path / "queue"
    typo = queue_item(queue, 1, PREDICTED, reviewed_shapes=[rectangle("scrach", [[1, 2], [11, 22]])])
    with pytest.raises(FormatError, match=rf"{typo.name}.*label 'scrach' is not a class .*did you mean 'scratch'"):
        merge_review(queue, data)
    assert not (tmp_path / "data-v2").exists()


def test_images_already_in_the_dataset_or_twice_in_the_queue_are_skipped_and_counted(tmp_path):
    data = make_dataset(tmp_path)
    queue = tmp_path / "queue"
    val_image = min((data / "images/val").iterdir())
    in_val = queue_item(queue, 1, PREDICTED, reviewed_flag=True, frame_bytes=val_image.read_bytes())
    kept = queue_item(queue, 2, PREDICTED, reviewed_flag=True, seed=7)
    again = queue_item(queue, 3, PREDICTED, reviewed_flag=True, seed=7)  # the same frame queued twice

    result = merge_review(queue, data)

    assert [item.event_id for item in result.added] == ["event-2"]
    assert [Path(note.path).name for note in result.duplicates] == [in_val.with_suffix(".jpg").name,
                                                                    again.with_suffix(".jpg").name]
    assert f"same image as val/{val_image.name}" in result.duplicates[0].message
    assert f"{kept.stem}.jpg" in result.duplicates[1].message
    assert result.images["train"] == result.base_images["train"] + 1
    assert split_files(Path(result.out), "images", "val") == split_files(data, "images", "val")


def test_versions_are_numbered_and_the_history_carries_over(tmp_path):
    data = make_dataset(tmp_path)
    queue = tmp_path / "queue"
    queue_item(queue, 1, PREDICTED, reviewed_flag=True)
    v2 = Path(merge_review(queue, data).out)
    assert v2 == tmp_path / "data-v2"

    later = tmp_path / "queue2"
    queue_item(later, 5, PREDICTED, reviewed_flag=True, seed=55)
    v3 = Path(merge_review(later, v2 / "data.yaml").out)  # a data.yaml is named by its folder
    assert v3 == tmp_path / "data-v3"
    merges = json.loads((v3 / "changes.json").read_text())["merges"]
    assert [m["items"][0]["event_id"] for m in merges] == ["event-1", "event-5"]
    changelog = (v3 / "CHANGELOG.md").read_text()
    assert changelog.index("## data-v3") < changelog.index("## data-v2")
    assert split_files(v3, "labels", "val") == split_files(data, "labels", "val")
    assert next_version_folder(data) == tmp_path / "data-v4"  # v2 and v3 are taken

    with pytest.raises(UsageError, match="not empty"):
        merge_review(later, data, MergeOptions(out=v2))


def test_copy_mode_copies_the_old_images_and_leaves_them_untouched(tmp_path):
    data = make_dataset(tmp_path, transfer="copy")
    queue = tmp_path / "queue"
    queue_item(queue, 1, PREDICTED, reviewed_flag=True)
    before = tree_state(data)
    result = merge_review(queue, data, MergeOptions(transfer="copy", out=tmp_path / "copied"))

    out = Path(result.out)
    assert out == tmp_path / "copied" and tree_state(data) == before
    images = [path for path in (out / "images").rglob("*") if path.is_file() or path.is_symlink()]
    assert images and not any(path.is_symlink() for path in images)
    assert split_files(out, "images", "test") == split_files(data, "images", "test")
    shutil.rmtree(data)  # a copied version stands on its own
    assert not check_dataset(out).has_errors


# --------------------------------------------------------------------------- the command


def test_cli_json_and_exit_codes(tmp_path):
    data = make_dataset(tmp_path)
    queue = tmp_path / "queue"
    queue_item(queue, 1, PREDICTED, reviewed_flag=True)
    queue_item(queue, 2, PREDICTED)

    unreviewed_only = tmp_path / "unreviewed"
    queue_item(unreviewed_only, 3, PREDICTED)
    refused = runner.invoke(app, ["review", "merge", str(unreviewed_only), str(data)])
    assert refused.exit_code == 1
    lines = [line for line in refused.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: nothing to merge"), refused.output

    other = tmp_path / "other"
    bad = queue_item(other, 4, PREDICTED, reviewed_flag=True, classes=["a", "b"])
    wrong_model = runner.invoke(app, ["review", "merge", str(other), str(data)])
    assert wrong_model.exit_code == 2 and bad.name in wrong_model.output and "Traceback" not in wrong_model.output

    result = runner.invoke(app, ["review", "merge", str(queue), str(data), "--json", "--out", str(tmp_path / "v")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["out"] == str(tmp_path / "v") and report["images_added"] == 1
    assert report["unreviewed_skipped"] == 1 and report["added"][0]["event_id"] == "event-1"

    human = runner.invoke(app, ["review", "merge", str(queue), str(data), "--accept-unreviewed"])
    assert human.exit_code == 0, human.output
    words = " ".join(human.output.split())  # the console wraps lines at its width
    assert "2 added to train (0 defect-free, 1 unreviewed, accepted)" in words and "data-v2" in words
    assert json.loads((tmp_path / "data-v2" / "merge.json").read_text())["accepted_unreviewed"] == 1


def test_documents_built_by_the_queue_writer_merge_as_the_contract_says(tmp_path):
    """The writer watch --review uses: its untouched document is unreviewed; a ticked one merges with its boxes."""
    from yolodefect.data.formats.labelme_writer import (
        labelme_document,
        rectangle_shape,
        shapes_sha256,
    )

    data = make_dataset(tmp_path)
    queue = tmp_path / "queue"
    queue.mkdir()
    for index, reviewed in ((1, True), (2, False)):
        stem = f"20250102T03040{index}_000_0000000{index}"
        noise_image(queue / f"{stem}.jpg", 500 + index)
        shapes = [rectangle_shape("pit", (12.3, 24.0, 44.0, 60.0), 0.61)]
        provenance = {"version": 1, "event_id": f"e{index}", "class_names": CLASSES, "reasons": ["flicker"],
                      "model": {"name": "m.pt", "sha256": MODEL_SHA, "precision": "fp32"},
                      "predictions_sha256": shapes_sha256(shapes)}
        document = labelme_document(shapes, f"{stem}.jpg", FRAME_WH, reviewed=reviewed,
                                    extra={"yolodefect": provenance})
        (queue / f"{stem}.json").write_text(json.dumps(document), encoding="utf-8")

    result = merge_review(queue, data)

    assert [item.event_id for item in result.added] == ["e1"] and result.unreviewed_skipped == 1
    label = Path(result.out) / "labels/train/20250102T030401_000_00000001.txt"
    # 12.3 is stored as float32's shortest decimal, which reads back as 12.3
    assert label.read_text().splitlines() == ["1 0.175937 0.350000 0.198125 0.300000"]
