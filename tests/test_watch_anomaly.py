"""`watch --anomaly`: the anomaly model beside the detector on a generated conveyor line.

A real anomaly model (PatchCore on the shipped demo detector's features, small image size) is trained
on good parts only; the line carries parts with defects it never saw. The detector is a fake that finds
nothing but one scratch on one good part (or there is none: --anomaly-only), and the station's own part
logic decides for both: exactly the defective parts (and the detector's), once each, with class, score and
heatmap evidence.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from yolodefect.anomaly import (
    ANOMALY_CLASS,
    AnomalyTrainOptions,
    load_anomaly_model,
    train_anomaly,
)
from yolodefect.cli import app
from yolodefect.data.conveyor import ConveyorTruth, write_conveyor_video
from yolodefect.data.synth import CLASS_NAMES, render_part
from yolodefect.detections import Detections, box_iou
from yolodefect.errors import UsageError
from yolodefect.inference.identity import file_sha256
from yolodefect.inference.thresholds_file import Thresholds, write_thresholds_yaml
from yolodefect.stream.anomaly_stage import AnomalyStage
from yolodefect.stream.events import Event, load_schema
from yolodefect.stream.options import WatchOptions, load_station_config
from yolodefect.stream.watch import watch

try:
    import jsonschema
except ImportError:  # a dev dependency; Event.from_dict still checks every field without it
    jsonschema = None

PART_WH = (112, 84)
FRAME_WH = (320, 160)
BELT_FRAMES = 10
DEFECTS = {1: ["scratch"], 4: ["pit"]}  # part index -> the defects planted on it
PARTS = 6
BACKBONE = Path(__file__).resolve().parents[1] / "weights" / "yolodefect-demo.pt"
runner = CliRunner()


class OneDefectDetector:
    """Finds a scratch (confidence 0.9) in the middle of one good part on every frame that shows it.

    The station passes none of the frames it learns the empty belt from to the detector, so the n-th call is
    frame ``BELT_FRAMES + n``."""

    def __init__(self, truth: ConveyorTruth, part: int):
        self.truth, self.part, self.frame_index = truth, part, BELT_FRAMES
        self.class_names = list(CLASS_NAMES["steel"])

    def __call__(self, image: np.ndarray) -> Detections:
        box = self.truth.part_box(self.part, self.frame_index)
        self.frame_index += 1
        if box is None:
            return Detections.empty()
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        return Detections(xyxy=[[cx - 8, cy - 8, cx + 8, cy + 8]], confidence=[0.9], class_id=[0])


def part_image(index: int, defects: list[str]) -> tuple[np.ndarray, list]:
    gray, boxes = render_part("steel", np.random.default_rng([13, index]), PART_WH, defects)
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), boxes


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """On 2 shared cores torch's 2 OpenMP threads spin-wait for each other whenever another process holds a core
    (measured here: training 30 s of CPU with 2 threads, 5 s with 1); the results do not depend on it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("anomaly")
    good = root / "good"
    good.mkdir()
    for index in range(60):  # good parts only; other seeds than the line's parts
        gray, _ = render_part("steel", np.random.default_rng([7, index]), PART_WH, [])
        cv2.imwrite(str(good / f"good_{index:03d}.png"), gray)
    result = train_anomaly(AnomalyTrainOptions(data=good, backbone=str(BACKBONE), imgsz=128, out=root / "parts.npz"))
    return result.model_path


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory) -> ConveyorTruth:
    folder = tmp_path_factory.mktemp("line")
    parts = [part_image(index, DEFECTS.get(index, [])) for index in range(PARTS)]
    return write_conveyor_video(folder / "line.mp4", part_images=parts, class_names=CLASS_NAMES["steel"],
                                frame_size=FRAME_WH, gap_px=60, lead_in_frames=BELT_FRAMES + 5)


@pytest.fixture(scope="module")
def part_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The line's parts as one image each (a triggered camera's pictures)."""
    folder = tmp_path_factory.mktemp("parts")
    for index in range(PARTS):
        image, _ = part_image(index, DEFECTS.get(index, []))
        cv2.imwrite(str(folder / f"part_{index}.png"), image)
    return folder


def image_options(tmp_path: Path, folder: Path, model: Path, **overrides: Any) -> WatchOptions:
    values: dict[str, Any] = dict(source=str(folder), anomaly=model, anomaly_only=True, emit_pass=True,
                                  sinks=(str(tmp_path / "events.jsonl"),), outbox=tmp_path / "outbox.sqlite",
                                  evidence_dir=tmp_path / "evidence")
    values.update(overrides)
    return WatchOptions(**values)


def read_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def part_of(truth: ConveyorTruth, event: dict[str, Any]) -> int:
    """Which part the event's part box is, from the known part positions on the event's frame."""
    frame = event["frame_index"]
    in_view = truth.parts_in_view(frame)
    boxes = np.array([truth.part_box(index, frame) for index in in_view], dtype=np.float32).reshape(-1, 4)
    iou = box_iou(np.array([event["part_bbox_xyxy"]], dtype=np.float32), boxes)[0]
    assert len(iou) and iou.max() >= 0.8, f"part box {event['part_bbox_xyxy']} on frame {frame} is no part: {boxes}"
    return in_view[int(iou.argmax())]


def line_options(tmp_path: Path, truth: ConveyorTruth, model: Path, **overrides: Any) -> WatchOptions:
    values: dict[str, Any] = dict(source=str(truth.path), sinks=(str(tmp_path / "events.jsonl"),),
                                  outbox=tmp_path / "outbox.sqlite", evidence_dir=tmp_path / "evidence",
                                  belt_frames=BELT_FRAMES, anomaly=model)
    values.update(overrides)
    return WatchOptions(**values)


def test_a_part_is_rejected_by_the_detector_or_the_anomaly_model_once_each(line: ConveyorTruth, model_path: Path,
                                                                               tmp_path: Path) -> None:
    detected = 2  # a good part on which the detector finds a scratch
    summary = watch(line_options(tmp_path, line, model_path), detector=OneDefectDetector(line, detected))

    events = read_events(tmp_path / "events.jsonl")
    assert [e["decision"] for e in events] == ["reject"] * (len(DEFECTS) + 1)
    by_part = {part_of(line, e): e for e in events}
    assert sorted(by_part) == sorted({*DEFECTS, detected})  # one event per part, none on the other good parts
    scratch = by_part.pop(detected)
    assert [d["class"] for d in scratch["defects"]] == ["scratch"] and "anomaly_score" not in scratch["defects"][0]
    model = load_anomaly_model(model_path)
    validator = jsonschema.Draft202012Validator(load_schema()) if jsonschema is not None else None
    for event in [scratch, *by_part.values()]:
        Event.from_dict(event)
        if validator is not None:
            validator.validate(event)
        assert event["anomaly_model"] == {"name": model_path.name, "sha256": file_sha256(model_path),
                                          "precision": "fp32"}
        assert event["model"]["name"] == "OneDefectDetector"  # the detector stays the event's model
    for event in by_part.values():
        (defect,) = event["defects"]
        assert defect["class"] == ANOMALY_CLASS
        assert defect["confidence"] >= model.threshold_confidence
        # The raw score behind the confidence, as the model defines it (4 decimals in the event).
        assert defect["anomaly_score"] == pytest.approx(model.score_for_confidence(defect["confidence"]), rel=1e-3)
        assert defect["anomaly_score"] >= model.threshold
        part_box = event["part_bbox_xyxy"]
        x1, y1, x2, y2 = defect["bbox_xyxy"]
        assert part_box[0] <= x1 < x2 <= part_box[2] and part_box[1] <= y1 < y2 <= part_box[3]
        # The peak box covers the planted defect: its centre lies within the defect's box (frame pixels).
        part = line.parts[part_of(line, event)]
        left = line.part_left(part.index, event["frame_index"])
        centre = ((x1 + x2) / 2 - left, (y1 + y2) / 2 - part.top)
        assert any(b.xyxy[0] - 4 <= centre[0] <= b.xyxy[2] + 4 and b.xyxy[1] - 4 <= centre[1] <= b.xyxy[3] + 4
                   for b in part.defects), (centre, part.defects)
        assert_heatmap_evidence(event)

    stats = summary.stats
    assert (stats.rejects, stats.passes, stats.errors, stats.parts) == (len(DEFECTS) + 1, PARTS - len(DEFECTS) - 1, 0,
                                                                        PARTS)
    assert stats.off_part_detections == 0  # the belt is never scored
    assert stats.anomaly_p50_ms is not None and stats.anomaly_p50_ms > 0
    assert 0 < stats.anomaly_frames < stats.frames - BELT_FRAMES  # only frames with a part all in view are scored


def assert_heatmap_evidence(event: dict[str, Any]) -> None:
    """The raw snapshot is the frame as captured (grey parts); the annotated one has the colour heatmap over the
    part (the grey frame gains strong colour inside the part box, and only there besides the drawn boxes)."""
    raw = cv2.imread(event["snapshot_paths"]["raw"])
    annotated = cv2.imread(event["snapshot_paths"]["annotated"])
    assert raw is not None and annotated is not None and raw.shape == annotated.shape
    x1, y1, x2, y2 = (int(round(v)) for v in event["part_bbox_xyxy"])

    def colourfulness(image: np.ndarray) -> float:
        inner = image[y1 + 6:y2 - 6, x1 + 6:x2 - 6].astype(np.int16)
        return float(np.abs(inner - inner.mean(axis=2, keepdims=True)).mean())

    assert colourfulness(raw) < 3.0  # grey part, JPEG noise only
    assert colourfulness(annotated) > 20.0


def test_anomaly_only_rejects_exactly_the_parts_with_an_unseen_defect(line: ConveyorTruth, model_path: Path,
                                                                      tmp_path: Path) -> None:
    """From the command line, with no detector: the anomaly model alone finds the defects nobody labelled."""
    events = tmp_path / "events.jsonl"
    result = runner.invoke(app, ["watch", "--source", str(line.path), "--anomaly", str(model_path), "--anomaly-only",
                                 "--belt-frames", str(BELT_FRAMES), "--sink", str(events),
                                 "--outbox", str(tmp_path / "outbox.sqlite"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    found = read_events(events)
    assert [e["decision"] for e in found] == ["reject"] * len(DEFECTS)
    assert [part_of(line, e) for e in found] == sorted(DEFECTS)  # once each, in the order they passed
    assert {d["class"] for e in found for d in e["defects"]} == {ANOMALY_CLASS}
    # Without a detector the anomaly model is the event's model.
    assert all(e["model"]["sha256"] == file_sha256(model_path) for e in found)
    assert summary["rejects"] == len(DEFECTS) and summary["passes"] == PARTS - len(DEFECTS)
    assert summary["anomaly_p50_ms"] > 0


def test_image_mode_scores_each_whole_image(part_folder: Path, model_path: Path, tmp_path: Path) -> None:
    watch(image_options(tmp_path, part_folder, model_path))
    events = {e["part_id"]: e for e in read_events(tmp_path / "events.jsonl")}
    assert sorted(events) == [f"part_{index}.png" for index in range(PARTS)]
    rejected = {name for name, e in events.items() if e["decision"] == "reject"}
    assert rejected == {f"part_{index}.png" for index in DEFECTS}
    for name in rejected:
        assert events[name]["defects"][0]["class"] == ANOMALY_CLASS
        assert "part_bbox_xyxy" not in events[name]
        assert Path(events[name]["snapshot_paths"]["annotated"]).is_file()


def test_the_anomaly_thresholds_file_sets_the_threshold(part_folder: Path, model_path: Path, tmp_path: Path) -> None:
    strict = write_thresholds_yaml(tmp_path / "strict.yaml", Thresholds(
        conf={ANOMALY_CLASS: 0.999}, target_recall=None, target_reached=True, recall=None, escape_rate=None,
        false_reject_rate=None, reject_classes=[ANOMALY_CLASS]))
    summary = watch(image_options(tmp_path, part_folder, model_path, anomaly_thresholds=strict))
    assert (summary.stats.rejects, summary.stats.passes) == (0, PARTS)  # no part scores 999x the reference

    other = write_thresholds_yaml(tmp_path / "detector.yaml", Thresholds(
        conf={"scratch": 0.4}, target_recall=None, target_reached=True, recall=None, escape_rate=None,
        false_reject_rate=None, reject_classes=["scratch"]))
    with pytest.raises(UsageError, match=f"{other}.*no 'anomaly' threshold"):
        watch(image_options(tmp_path, part_folder, model_path, anomaly_thresholds=other))


def watch_cli_with_anomaly(tmp_path: Path, model: Path):
    source = tmp_path / "parts"
    source.mkdir(exist_ok=True)
    return runner.invoke(app, ["watch", "--source", str(source), "--anomaly", str(model), "--anomaly-only",
                               "--outbox", str(tmp_path / "o.sqlite")])


@pytest.mark.parametrize(("content", "exit_code"), [(b"not a model at all", 1), (None, 2)])
def test_a_bad_anomaly_file_is_one_error_line_naming_it(tmp_path: Path, content: bytes | None, exit_code: int) -> None:
    bad = tmp_path / "model.npz"
    if content is not None:
        bad.write_bytes(content)
    result = watch_cli_with_anomaly(tmp_path, bad)
    assert result.exit_code == exit_code
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and str(bad) in lines[0], result.output


def test_the_detector_weights_are_not_an_anomaly_model(tmp_path: Path) -> None:
    result = watch_cli_with_anomaly(tmp_path, BACKBONE)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1
    assert len(lines) == 1 and str(BACKBONE) in lines[0] and "not an anomaly model" in lines[0], result.output


def test_anomaly_options_are_checked_and_read_from_the_station_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="needs an anomaly model"):
        WatchOptions(anomaly_only=True)
    with pytest.raises(UsageError, match="needs an anomaly model"):
        WatchOptions(anomaly_thresholds=tmp_path / "t.yaml")
    with pytest.raises(UsageError, match="runs no detector"):
        WatchOptions(anomaly=tmp_path / "a.npz", anomaly_only=True, model=tmp_path / "best.pt")
    with pytest.raises(UsageError, match="parts=belt"):
        WatchOptions(anomaly=tmp_path / "a.npz", anomaly_only=True, parts="class")
    with pytest.raises(UsageError, match="anomaly_only"):
        WatchOptions(anomaly=tmp_path / "a.npz", anomaly_only="yes")
    station = tmp_path / "station" / "station.yaml"
    station.parent.mkdir()
    station.write_text("source: line.mp4\nanomaly: models/parts.npz\nanomaly_only: true\n"
                       "anomaly_thresholds: models/thresholds.yaml\n")
    options = load_station_config(station)
    assert options.anomaly == station.parent.resolve() / "models" / "parts.npz"
    assert options.anomaly_thresholds == station.parent.resolve() / "models" / "thresholds.yaml"
    assert options.anomaly_only is True


def test_only_parts_all_in_view_are_scored_with_the_belt_trimmed() -> None:
    stage = AnomalyStage(model=None, identity=None, class_name=ANOMALY_CLASS, threshold_confidence=0.5,
                         threshold_score=1.0, class_id=4, inset=0.05)
    frame = (320, 160)
    assert stage.crop_box(None, frame) == (0, 0, 320, 160)  # image mode: the whole frame is the part
    assert stage.crop_box(np.array([100, 40, 200, 120]), frame) == (105, 44, 195, 116)
    for entering_or_leaving in ([0, 40, 100, 120], [250, 40, 320, 120]):
        assert stage.crop_box(np.array(entering_or_leaving), frame) is None
        assert stage.crop_box(np.array(entering_or_leaving), frame, motion_axis=0) is None
    # A part taller than the view fills it on every frame: scored, once all of its length along the line is in view.
    assert stage.crop_box(np.array([100, 0, 200, 160]), frame) == (105, 8, 195, 152)
    # A part hanging over one side across the line: cut on every frame, so it is scored as it is once the way the
    # line moves is known (before that it may be entering from below).
    assert stage.crop_box(np.array([100, 60, 200, 160]), frame, motion_axis=0) == (105, 65, 195, 155)
    assert stage.crop_box(np.array([100, 60, 200, 160]), frame) is None
