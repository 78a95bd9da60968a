"""watch --evidence-cam: EigenCAM heatmaps of the real demo detector, and the station saving one per reject."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from tests.builders import write_video
from tests.conftest import DEMO_MODEL
from tests.test_model_files import tiny_onnx
from yolodefect.cli import app
from yolodefect.data.synth import render_part
from yolodefect.errors import UsageError
from yolodefect.inference.eigencam import (
    EigenCam,
    cam_overlay,
    checkpoint_for_cam,
    feature_strides,
    find_cam_layer,
)
from yolodefect.inference.identity import file_sha256
from yolodefect.stream.options import WatchOptions
from yolodefect.stream.watch import watch

BELT_GREY = 58
PART_WH = (160, 120)
STEEL = ("scratch", "pit", "inclusion", "patch")


def part_on_belt(seed: int, defects: list[str], frame_wh: tuple[int, int] = (360, 280),
                 at: tuple[int, int] = (100, 80)) -> tuple[np.ndarray, list[np.ndarray]]:
    """A steel part (seeded) on a noisy belt, as the station's camera sees it, and its defect boxes in frame pixels.
    The same seed without defects gives the same part surface, clean."""
    part, boxes = render_part("steel", np.random.default_rng(seed), PART_WH, defects)
    width, height = frame_wh
    frame = np.full((height, width), BELT_GREY, np.uint8)
    frame += np.random.default_rng(100 + seed).integers(0, 6, frame.shape).astype(np.uint8)
    x0, y0 = at
    frame[y0:y0 + PART_WH[1], x0:x0 + PART_WH[0]] = part
    return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR), [np.array(b.xyxy) + [x0, y0, x0, y0] for b in boxes]


def inside_outside(heat: np.ndarray, box: np.ndarray) -> tuple[float, float]:
    x1, y1, x2, y2 = box.round().astype(int)
    outside = np.ones_like(heat, dtype=bool)
    outside[y1:y2, x1:x2] = False
    return float(heat[y1:y2, x1:x2].mean()), float(heat[outside].mean())


@pytest.fixture(scope="module")
def cam() -> EigenCam:
    return EigenCam(DEMO_MODEL)


def test_the_backbone_output_is_found_from_the_structure(cam):
    from ultralytics import YOLO

    # YOLO11 (the demo model): SPPF then C2PSA end the backbone; YOLOv8's ends with SPPF. Built from the
    # bundled yaml (nothing downloaded).
    assert (cam.layer.index, cam.layer.type_name, cam.layer.stride) == (10, "C2PSA", 32)
    v8 = YOLO("yolov8n.yaml").model.eval()
    assert find_cam_layer(v8.model, feature_strides(v8, 128)).describe() == "layer 9 (SPPF, stride 32)"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_heatmap_covers_the_image_and_is_hot_on_the_defective_part(cam, seed):
    # A frame that is not square and not a multiple of the stride: the letterbox padding is cut off again.
    image, (box,) = part_on_belt(seed, [STEEL[seed % 4]])
    heat = cam.heatmap(image)
    assert heat.shape == image.shape[:2] and heat.dtype == np.float32
    assert heat.min() >= 0.0 and heat.max() == pytest.approx(1.0)
    inside, outside = inside_outside(heat, box)
    assert inside > 2.0 * outside  # measured 4.3-5.1x on these seeds; a flat or random map gives ~1x
    # The same box moved onto the empty belt (same size, top right corner) is cold: the heat is not everywhere.
    x1, y1, x2, y2 = box.astype(int)
    on_belt = heat[5:5 + (y2 - y1), -5 - (x2 - x1):-5].mean()
    assert on_belt < 0.5 * outside


def test_on_tiles_an_empty_belt_tile_stays_cold(cam):
    # Two tiles, the part only in the right one. One principal component for both, each tile centred on its own
    # mean: normalising tiles apart would light the empty tile up to 1, a shared mean would light all of it.
    tiled = EigenCam(DEMO_MODEL, tile=320)
    image, (box,) = part_on_belt(1, ["pit"], frame_wh=(560, 320), at=(360, 100))
    heat = tiled.heatmap(image)
    assert heat.shape == (320, 560)
    inside, outside = inside_outside(heat, box)
    assert inside > 2.0 * outside
    empty_belt = heat[:, :200]  # only the left tile sees this
    assert empty_belt.mean() < 0.25 and empty_belt.max() < 0.7


def test_overlay_is_the_image_under_jet_colours():
    image = np.full((4, 6, 3), 100, np.uint8)
    heat = np.zeros((4, 6), np.float32)
    heat[:, 3:] = 1.0
    shown = cam_overlay(image, heat, alpha=0.5)
    assert shown.shape == image.shape and shown.dtype == np.uint8
    # JET: 0 is dark blue, 1 dark red (BGR).
    assert shown[0, 0, 0] > shown[0, 0, 2] and shown[0, 5, 2] > shown[0, 5, 0]


def test_the_checkpoint_for_an_export_comes_from_its_card_or_the_option(tmp_path):
    assert checkpoint_for_cam(DEMO_MODEL, None) == DEMO_MODEL
    onnx = tiny_onnx(tmp_path / "best.onnx")
    with pytest.raises(UsageError, match="--evidence-cam-model"):
        checkpoint_for_cam(onnx, None)  # no card: nothing names the .pt
    with pytest.raises(UsageError, match="must be a PyTorch"):
        checkpoint_for_cam(onnx, tmp_path / "best.onnx")
    assert checkpoint_for_cam(onnx, DEMO_MODEL) == DEMO_MODEL
    source = tmp_path / "best.pt"
    source.write_bytes(DEMO_MODEL.read_bytes())
    card = {"source_checkpoint": {"file": "elsewhere/best.pt", "sha256": file_sha256(DEMO_MODEL)}}
    (tmp_path / "best.card.json").write_text(json.dumps(card))
    assert checkpoint_for_cam(onnx, None) == source  # the export's folder, where the card's path did not lead
    source.write_bytes(DEMO_MODEL.read_bytes() + b"retrained")
    with pytest.raises(UsageError, match="has changed since the export"):
        checkpoint_for_cam(onnx, None)


def line_video(path: Path) -> Path:
    """Four parts, one per frame: clean, pit, clean, patch (the demo model finds both defects above 0.8)."""
    frames = [part_on_belt(1, [])[0], part_on_belt(5, ["pit"])[0], part_on_belt(3, [])[0],
              part_on_belt(7, ["patch"])[0]]
    return write_video(path, len(frames), size_wh=(360, 280), draw=lambda i: frames[i])


@pytest.mark.parametrize("evidence_cam", [True, False])
def test_watch_saves_a_heatmap_with_each_reject_and_only_there(tmp_path, evidence_cam):
    video = line_video(tmp_path / "line.mp4")
    events_file = tmp_path / "events.jsonl"
    options = WatchOptions(source=str(video), mode="part", model=DEMO_MODEL, conf=0.5, emit_pass=True,
                           sinks=(str(events_file),), outbox=tmp_path / "outbox.sqlite",
                           evidence_dir=tmp_path / "evidence", evidence_cam=evidence_cam)
    summary = watch(options)
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert [(e["frame_index"], e["decision"]) for e in events] == [(0, "pass"), (1, "reject"), (2, "pass"),
                                                                   (3, "reject")]
    for event in events:
        paths = event["snapshot_paths"]
        if event["decision"] == "pass":
            assert paths == {}
            continue
        assert set(paths) == ({"raw", "annotated", "cam"} if evidence_cam else {"raw", "annotated"})
        if evidence_cam:
            assert paths["cam"].endswith(f"{event['event_id']}_cam.jpg")
            raw, heated = cv2.imread(paths["raw"]), cv2.imread(paths["cam"])
            assert heated.shape == raw.shape
            assert np.abs(heated.astype(int) - raw.astype(int)).mean() > 10  # colours over the frame, not a copy
    written = sorted(p.name for p in (tmp_path / "evidence").rglob("*_cam.jpg"))
    assert len(written) == (2 if evidence_cam else 0)
    stats = summary.stats
    assert stats.evidence_cams == (2 if evidence_cam else 0) and stats.evidence_cam_failures == 0
    assert (stats.evidence_cam_p50_ms is not None and stats.evidence_cam_p50_ms > 0) == evidence_cam


def test_a_failing_heatmap_costs_the_cam_only(tmp_path, monkeypatch):
    def broken(self, image):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(EigenCam, "heatmap", broken)
    events_file = tmp_path / "events.jsonl"
    options = WatchOptions(source=str(line_video(tmp_path / "line.mp4")), mode="part", model=DEMO_MODEL, conf=0.5,
                           sinks=(str(events_file),), outbox=tmp_path / "outbox.sqlite",
                           evidence_dir=tmp_path / "evidence", evidence_cam=True)
    summary = watch(options)
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert [e["decision"] for e in events] == ["reject", "reject"]
    assert all(set(e["snapshot_paths"]) == {"raw", "annotated"} for e in events)
    assert summary.stats.evidence_cam_failures == 2 and summary.stats.evidence_cams == 0


def test_a_checkpoint_with_other_classes_is_refused(cam):
    cam.check_classes(dict(cam.class_names))
    cam.check_classes({**cam.class_names, 99: "anomaly"})  # a class added beside the detector's (watch --anomaly)
    with pytest.raises(UsageError, match="other classes"):
        cam.check_classes({**cam.class_names, 0: "dent"})


def test_evidence_cam_without_an_evidence_folder_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="evidence_dir"):
        WatchOptions(source="x.mp4", evidence_cam=True)
    result = CliRunner().invoke(app, ["watch", "--source", str(tmp_path), "--evidence-cam"])
    assert result.exit_code == 2, result.output
    assert "--evidence DIR" in result.output


def test_an_onnx_station_without_its_checkpoint_stops_before_anything_opens(tmp_path):
    (tmp_path / "models").mkdir()
    onnx = tiny_onnx(tmp_path / "models" / "best.onnx")
    parts = tmp_path / "parts"
    parts.mkdir()
    outbox = tmp_path / "outbox.sqlite"
    result = CliRunner().invoke(app, ["watch", "--source", str(parts), "--model", str(onnx), "--evidence",
                                      str(tmp_path / "evidence"), "--evidence-cam", "--outbox", str(outbox)])
    assert result.exit_code == 2, result.output
    assert "--evidence-cam-model" in result.output and "Traceback" not in result.output
    assert not outbox.exists() and not (tmp_path / "evidence").exists()
