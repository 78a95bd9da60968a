"""eval and watch decide with one rule: on the same frames they reject exactly the same parts.

The frames are real PNG files with YOLO labels. The "model" is one deterministic fake that both
commands run (eval through a Predictor over paths, watch through a Detector over decoded frames):
it reads a part number written into the image's first pixel and returns that part's detections,
so the two commands see identical detections and only the reject rule decides. Once more through
the CLI with the shipped demo model, where eval chooses nothing and both commands run the model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from yolodefect.cli import app
from yolodefect.detections import Detections
from yolodefect.errors import UsageError
from yolodefect.evaluate import evaluate
from yolodefect.evaluation import GroundTruth, choose_thresholds
from yolodefect.stream.options import WatchOptions
from yolodefect.stream.watch import watch
from tests import builders

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_MODEL = REPO_ROOT / "weights" / "yolodefect-demo.pt"
NAMES = ["scratch", "pit", "stain"]
SIZE_WH = (160, 120)
ROI = "0,0 100,0 100,120 0,120"  # the left 100 px of the frame
MIN_AREA = 64
THRESHOLDS = {"conf": {"scratch": 0.5, "pit": 0.3, "stain": 0.2}, "reject_classes": ["scratch", "pit"]}

# part name -> (detections as (class, confidence, xyxy), ground-truth boxes as (class, xyxy))
PARTS: dict[str, tuple[list[tuple[str, float, tuple]], list[tuple[str, tuple]]]] = {
    "p00_scratch_in_roi": ([("scratch", 0.9, (10, 10, 40, 40))], [("scratch", (10, 10, 40, 40))]),
    "p01_scratch_outside_roi": ([("scratch", 0.9, (120, 10, 150, 40))], [("scratch", (120, 10, 150, 40))]),
    "p02_pit_too_small": ([("pit", 0.8, (10, 10, 15, 15))], [("pit", (10, 10, 15, 15))]),
    "p03_pit_at_threshold": ([("pit", 0.3, (20, 20, 50, 50))], [("pit", (20, 20, 50, 50))]),
    "p04_scratch_below_threshold": ([("scratch", 0.49, (10, 60, 40, 90))], []),
    "p05_stain_does_not_reject": ([("stain", 0.99, (10, 60, 40, 90))], [("stain", (10, 60, 40, 90))]),
    "p06_good_part_false_alarm": ([("pit", 0.6, (30, 30, 60, 60))], []),
    "p07_nothing": ([], []),
    "p08_centre_on_roi_edge": ([("scratch", 0.9, (90, 10, 110, 40))], [("scratch", (90, 10, 110, 40))]),
    "p09_mixed": ([("scratch", 0.95, (120, 60, 150, 90)), ("pit", 0.9, (40, 40, 44, 44)),
                   ("pit", 0.4, (50, 50, 70, 70))], [("pit", (50, 50, 70, 70))]),
    "p10_defect_outside_roi_good_inside": ([("scratch", 0.99, (125, 80, 155, 110))], []),
}
# What the rules above decide, worked out by hand from PARTS.
REJECTED_WITH_ROI_AND_MIN_AREA = {"p00_scratch_in_roi", "p03_pit_at_threshold", "p06_good_part_false_alarm",
                                  "p08_centre_on_roi_edge", "p09_mixed"}
REJECTED_WITHOUT = REJECTED_WITH_ROI_AND_MIN_AREA | {"p01_scratch_outside_roi", "p02_pit_too_small",
                                                    "p10_defect_outside_roi_good_inside"}


class PartNumberModel:
    """The same detections for a part whether eval hands it a path or watch a decoded frame."""

    class_names = NAMES

    def __init__(self) -> None:
        self.table = [detections_of(rows) for rows, _ in PARTS.values()]

    def detect(self, image: np.ndarray) -> Detections:
        return self.table[int(image[0, 0, 0])]

    def __call__(self, images: Any) -> Any:
        if isinstance(images, np.ndarray):  # watch: one BGR frame
            return self.detect(images)
        return [self.detect(cv2.imread(str(path))) for path in images]  # eval: a list of paths


def detections_of(rows: list[tuple[str, float, tuple]]) -> Detections:
    """Detections from (class name, confidence, xyxy) rows."""
    return builders.detections([r[2] for r in rows], [r[1] for r in rows], [r[0] for r in rows], names=NAMES)


def write_frames(root: Path) -> Path:
    """A YOLO dataset whose val images are the station's frames; returns its data.yaml."""
    images, labels = root / "images" / "val", root / "labels" / "val"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    w, h = SIZE_WH
    for number, (name, (_, truth)) in enumerate(PARTS.items()):
        frame = np.full((h, w, 3), 90, np.uint8)
        cv2.circle(frame, (w // 2, h // 2), 30, (140, 140, 140), -1)
        frame[0, 0] = number  # the part number the fake model reads back
        assert cv2.imwrite(str(images / f"{name}.png"), frame)
        lines = [f"{NAMES.index(c)} {(x1 + x2) / 2 / w} {(y1 + y2) / 2 / h} {(x2 - x1) / w} {(y2 - y1) / h}"
                 for c, (x1, y1, x2, y2) in truth]
        (labels / f"{name}.txt").write_text("".join(line + "\n" for line in lines))
    data = root / "data.yaml"
    data.write_text(yaml.safe_dump({"path": str(root), "train": "images/val", "val": "images/val",
                                    "names": dict(enumerate(NAMES))}))
    return data


@pytest.fixture()
def frames(tmp_path: Path) -> tuple[Path, Path, Path]:
    data = write_frames(tmp_path / "frames")
    thresholds = tmp_path / "thresholds.yaml"
    thresholds.write_text(yaml.safe_dump(THRESHOLDS))
    return data, data.parent / "images" / "val", thresholds


def read_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def station_rejects(folder: Path, out: Path, model: Any = None, **rules: Any) -> set[str]:
    """Part names the station rejects, running watch in part mode over the frame folder."""
    events = out / "events.jsonl"
    options = WatchOptions(source=str(folder), mode="part", emit_pass=True, sinks=(str(events),),
                           outbox=out / "outbox.sqlite", **rules)
    summary = watch(options, detector=model or PartNumberModel(), class_names=NAMES)
    decided = read_events(events)
    assert summary.stats.parts == len(PARTS) == len(decided)  # every part decided once
    assert {e["decision"] for e in decided} <= {"reject", "pass"}
    return {Path(str(e["part_id"])).stem for e in decided if e["decision"] == "reject"}


def eval_rejects(decisions: dict, data: Path) -> set[str]:
    """Part names eval says the station rejects: the defective ones it does not let escape, plus false rejects."""
    labels = data.parent / "labels" / "val"
    reject_ids = {str(NAMES.index(name)) for name in decisions["reject_classes"]}
    defective = {p.stem for p in labels.glob("*.txt") if {ln.split()[0] for ln in p.read_text().splitlines()} & reject_ids}
    escaped = {Path(p).stem for p in decisions["escaped_parts"]}
    return (defective - escaped) | {Path(p).stem for p in decisions["false_rejected_parts"]}


def test_eval_and_watch_reject_the_same_parts_with_roi_min_area_and_thresholds(frames, tmp_path: Path) -> None:
    data, folder, thresholds = frames
    rules = dict(thresholds=thresholds, roi=ROI, min_area=MIN_AREA)
    (tmp_path / "w1").mkdir()
    at_station = station_rejects(folder, tmp_path / "w1", **rules)
    result = evaluate("part-number-model", data, predictor=PartNumberModel(), progress=None, plots=False, **rules)
    decisions = result.metrics.decisions.to_dict()
    assert at_station == REJECTED_WITH_ROI_AND_MIN_AREA
    assert eval_rejects(decisions, data) == at_station
    assert (decisions["defective"], decisions["escapes"], decisions["false_rejects"]) == (6, 2, 1)
    assert decisions["roi_polygon"] == [[0, 0], [100, 0], [100, 120], [0, 120]] and decisions["min_box_area_px"] == 64

    # Without the ROI and the min area three more parts are rejected, by both, so those two rules changed the outcome.
    (tmp_path / "w2").mkdir()
    plain = station_rejects(folder, tmp_path / "w2", thresholds=thresholds)
    plain_eval = evaluate("part-number-model", data, thresholds=thresholds, predictor=PartNumberModel(),
                          progress=None, plots=False)
    assert plain == REJECTED_WITHOUT == eval_rejects(plain_eval.metrics.decisions.to_dict(), data)


def test_thresholds_chosen_by_eval_with_an_roi_decide_the_same_at_the_station(frames, tmp_path: Path) -> None:
    data, folder, _ = frames
    out = tmp_path / "eval"
    chosen = evaluate("part-number-model", data, target_recall=1.0, reject_classes=["scratch", "pit"], roi=ROI,
                      min_area=MIN_AREA, predictor=PartNumberModel(), out_dir=out, progress=None, plots=False)
    assert chosen.thresholds is not None
    # p01 and p02 can only be seen outside the ROI or below the min area: no threshold catches them, and the
    # search knows it (it would otherwise count p01's 0.9 scratch and call the target reached).
    assert not chosen.thresholds.target_reached
    assert {Path(p).stem for p in chosen.metrics.decisions.escaped_parts} == {"p01_scratch_outside_roi",
                                                                               "p02_pit_too_small"}
    # p10's 0.99 scratch lies outside the ROI, so it does not push the false rejects up either.
    assert "p10_defect_outside_roi_good_inside" not in {Path(p).stem for p in chosen.metrics.decisions.false_rejected_parts}
    (tmp_path / "w").mkdir()
    at_station = station_rejects(folder, tmp_path / "w", thresholds=out / "thresholds.yaml", roi=ROI, min_area=MIN_AREA)
    assert at_station == eval_rejects(chosen.metrics.decisions.to_dict(), data)
    achieved = yaml.safe_load((out / "thresholds.yaml").read_text())["achieved"]
    assert achieved["recall"] == chosen.metrics.decisions.recall


def test_search_leaves_out_boxes_the_station_cannot_count() -> None:
    box_in, box_out = [10.0, 10.0, 40.0, 40.0], [120.0, 10.0, 150.0, 40.0]
    truth = [GroundTruth(Path("bad.png"), SIZE_WH, [box_in], [0]), GroundTruth(Path("good.png"), SIZE_WH, [], [])]
    # The good part has a 0.95 scratch outside the ROI and a weak 0.3 one inside it.
    predictions = [detections_of([("scratch", 0.6, tuple(box_in))]),
                   detections_of([("scratch", 0.95, tuple(box_out)), ("scratch", 0.3, tuple(box_in))])]
    anywhere = choose_thresholds(truth, predictions, NAMES, target_recall=1.0, reject_classes=["scratch"])
    in_roi = choose_thresholds(truth, predictions, NAMES, target_recall=1.0, reject_classes=["scratch"], roi_polygon=ROI)
    assert anywhere.false_reject_rate == 1.0  # the 0.95 outside the ROI would reject the good part at any threshold
    # Searching only what the station can count finds the threshold between 0.3 and 0.6 that sorts both right.
    assert in_roi.false_reject_rate == 0.0 and in_roi.recall == 1.0
    assert 0.3 < in_roi.conf["scratch"] <= 0.6


@pytest.mark.parametrize(
    ("eval_kwargs", "watch_kwargs", "message"),
    [
        ({"reject_classes": ["scrach"]}, {"reject_classes": ("scrach",)},
         r"class 'scrach' in the reject rules is not a class of the (dataset|model) \(did you mean 'scratch'\?\)"),
        ({"conf": 1.5}, {"conf": 1.5}, r"confidence threshold \(conf\) must lie in \[0, 1\], got 1.5"),
        ({"reject_classes": []}, {"reject_classes": ()}, r"the reject classes are empty: name at least one class"),
        ({"min_area": -1}, {"min_area": -1}, r"min box area must be >= 0 pixels, got -1"),
        ({"roi": "0,0 5,5"}, {"roi": "0,0 5,5"}, r"the ROI polygon needs at least 3 points"),
    ],
)
def test_the_same_mistake_is_worded_the_same_by_eval_and_watch(frames, tmp_path: Path, eval_kwargs: dict,
                                                               watch_kwargs: dict, message: str) -> None:
    data, folder, _ = frames
    with pytest.raises(UsageError, match=message):
        evaluate("part-number-model", data, predictor=PartNumberModel(), progress=None, plots=False, **eval_kwargs)
    with pytest.raises(UsageError, match=message):
        options = WatchOptions(source=str(folder), mode="part", sinks=(str(tmp_path / "e.jsonl"),),
                               outbox=tmp_path / "o.sqlite", **watch_kwargs)
        watch(options, detector=PartNumberModel(), class_names=NAMES)


@pytest.mark.skipif(not DEMO_MODEL.is_file(), reason="the shipped demo model is not in this checkout")
def test_cli_eval_and_watch_agree_on_real_frames_with_the_demo_model(tmp_path: Path) -> None:
    """Through the CLI with a real model: eval's escapes and false rejects are exactly watch's decisions."""
    from yolodefect.data.station_dataset import StationOptions, synthesize_station
    from yolodefect.inference.model_file import read_model_file
    from yolodefect.inference.names import names_list

    data_dir = tmp_path / "data"
    synthesize_station(data_dir, StationOptions(kinds=("steel",), parts=(1, 3, 0), frame_step=12))
    config = yaml.safe_load((data_dir / "data.yaml").read_text())
    model_names = names_list(read_model_file(DEMO_MODEL).class_names)
    config["names"], config["nc"] = model_names, len(model_names)
    (data_dir / "data.yaml").write_text(yaml.safe_dump(config))
    thresholds = tmp_path / "thresholds.yaml"
    steel = ["scratch", "pit", "inclusion", "patch"]
    thresholds.write_text(yaml.safe_dump({"conf": {name: 0.3 for name in steel}, "reject_classes": steel}))
    rules = ["--thresholds", str(thresholds), "--roi", "0,0 200,0 200,320 0,320", "--min-area", "100"]
    runner = CliRunner()

    evaluated = runner.invoke(app, ["eval", str(DEMO_MODEL), str(data_dir), *rules, "--out", str(tmp_path / "eval"),
                                    "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    decisions = json.loads(evaluated.stdout)["metrics"]["decisions"]
    events = tmp_path / "events.jsonl"
    watched = runner.invoke(app, ["watch", "--source", str(data_dir / "images" / "val"), "--model", str(DEMO_MODEL),
                                  "--mode", "part", "--emit-pass", "--sink", str(events),
                                  "--outbox", str(tmp_path / "outbox.sqlite"), *rules, "--json"])
    assert watched.exit_code == 0, watched.output
    decided = read_events(events)
    frames = sorted(p.stem for p in (data_dir / "images" / "val").iterdir())
    assert sorted(Path(str(e["part_id"])).stem for e in decided) == frames
    at_station = {Path(str(e["part_id"])).stem for e in decided if e["decision"] == "reject"}

    labels = data_dir / "labels" / "val"
    reject_ids = {str(model_names.index(name)) for name in steel}
    defective = {p.stem for p in labels.glob("*.txt") if {ln.split()[0] for ln in p.read_text().splitlines()} & reject_ids}
    by_eval = (defective - {Path(p).stem for p in decisions["escaped_parts"]}) | {
        Path(p).stem for p in decisions["false_rejected_parts"]}
    assert at_station == by_eval
    assert at_station and set(frames) - at_station  # some parts rejected, some passed: the comparison means something
