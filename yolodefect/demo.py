"""``yolodefect demo``: the whole line on generated data, offline, in a few minutes on a CPU.

Each step calls the same library function as the command it stands for, so the demo shows what
the commands do rather than a special path: synthesize (station frames) -> check -> train (a short
fine-tune of the shipped model) -> eval (thresholds for a target recall) -> export (INT8, gated
against FP32) -> calibrate with master parts -> an anomaly model taught good parts only -> a
conveyor video with known defective parts, some with a defect no detector was taught -> watch with
the detector and the anomaly model (events to a JSONL file, evidence JPEGs) -> a summary comparing
the rejects with the parts that really were defective.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from yolodefect.data.station_dataset import StationOptions
from yolodefect.errors import UsageError, YoloDefectError
from yolodefect.progress import ProgressCallback
from yolodefect.shipped import SHIPPED_MODEL_NAME, SHIPPED_TILE, require_shipped_model

DEMO_KIND = "steel"
TILE = SHIPPED_TILE  # the shipped model learned at this scale; the station runs it on tiles of this size
BELT_FRAMES = 30  # the station learns the empty belt from the first frames of each video
# The anomaly model's image size: a 256x192 part shrinks to 128x128 (stride-8 patches of 16x12 part pixels),
# enough for a label or a smear a fifth of the part across, and scoring stays a few tens of ms per part.
ANOMALY_IMGSZ = 128
# Half the good parts are held out and the highest score among them is the threshold. With the default tenth
# (6 of 60) the threshold was the maximum of too few good parts: 42 of 150 new good parts scored above it; with
# 150 of 300 held out, 2 of 300 did, and every one of 40 contaminated parts scored several times the threshold.
ANOMALY_HOLDOUT = 0.5
# torch's OpenMP threads spin-wait for each other when another process holds a core: on 2 busy cores training
# the anomaly model took 28 s with 2 threads and under 2 s with 1, and the watch step ran no faster with 2.
ANOMALY_TORCH_THREADS = 1

StepCallback = Callable[[str, str], None]  # (title, explanation)


@dataclass(frozen=True)
class DemoOptions:
    out: Path = Path("yolodefect-demo")
    quick: bool = False
    seed: int = 0
    force: bool = False

    @property
    def station(self) -> StationOptions:
        # Fine-tuning data: new parts, the same station; kept small so the step takes seconds.
        parts = (6, 3, 0) if self.quick else (12, 4, 0)
        # Both kinds, so the classes are the shipped model's own and fine-tuning keeps its head.
        return StationOptions(parts=parts, defective=0.8, frame_step=8, seed=1000 + self.seed)

    @property
    def epochs(self) -> int:
        return 1 if self.quick else 3

    @property
    def video_parts(self) -> int:
        return 8 if self.quick else 12

    @property
    def master_parts(self) -> int:
        return 8 if self.quick else 16

    @property
    def good_parts(self) -> int:
        """Good part images for the anomaly model: half build its memory bank, half set its threshold (see
        ANOMALY_HOLDOUT); both quick and full, as training takes seconds."""
        return 300

    @property
    def video_defective(self) -> float:
        return 0.375  # 3 of 8 parts, 4 of 12 with a defect the detector knows

    @property
    def video_contaminated(self) -> float:
        return 0.25  # 2 of 8 parts, 3 of 12 with contamination (a defect no detector learns)


@dataclass
class DemoResult:
    out: Path
    steps: list[dict[str, Any]]  # title, seconds, outcome
    video: Path
    defective_parts: list[int]  # ground truth of the video
    rejected_parts: list[int]  # parts the station rejected, from the events
    events: Path
    evidence: Path
    model: Path  # the model the station ran
    deployable: bool  # did the INT8 model pass its gate
    seconds: float
    calibration: dict[str, Any] = field(default_factory=dict)  # the master-parts run: rates, k, thresholds
    files: dict[str, str] = field(default_factory=dict)
    unseen_parts: list[int] = field(default_factory=list)  # parts with contamination, a defect no detector learned
    anomaly_parts: list[int] = field(default_factory=list)  # parts rejected with class 'anomaly' (anomaly stage)
    reject_classes: dict[int, list[str]] = field(default_factory=dict)  # rejected part -> classes its event names
    anomaly_model: Path | None = None

    @property
    def unseen_caught(self) -> list[int]:
        """Parts with the unseen defect that the anomaly stage rejected."""
        return sorted(set(self.unseen_parts) & set(self.anomaly_parts))

    @property
    def unseen_missed(self) -> list[int]:
        return sorted(set(self.unseen_parts) - set(self.anomaly_parts))

    @property
    def anomaly_false_rejects(self) -> list[int]:
        """Good parts the anomaly stage rejected."""
        return sorted(set(self.anomaly_parts) - set(self.defective_parts))

    @property
    def missed_parts(self) -> list[int]:
        return sorted(set(self.defective_parts) - set(self.rejected_parts))

    @property
    def false_rejects(self) -> list[int]:
        return sorted(set(self.rejected_parts) - set(self.defective_parts))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(missed_parts=self.missed_parts, false_rejects=self.false_rejects, unseen_caught=self.unseen_caught,
                    unseen_missed=self.unseen_missed, anomaly_false_rejects=self.anomaly_false_rejects)
        return json.loads(json.dumps(data, default=str))


def part_of_event(truth, event: dict[str, Any]) -> int | None:
    """The conveyor part under the event's part box (or first defect); None: on the belt between parts."""
    box = event.get("part_bbox_xyxy") or (event["defects"][0]["bbox_xyxy"] if event.get("defects") else None)
    if box is None:
        return None
    x1, _, x2, _ = box
    centre = (x1 + x2) / 2
    for part in truth.parts:
        left = truth.part_left(part.index, event["frame_index"])
        if left <= centre <= left + part.size[0]:
            return part.index
    return None


class _Steps:
    def __init__(self, on_step: StepCallback | None):
        self.on_step = on_step or (lambda title, explanation: None)
        self.done: list[dict[str, Any]] = []

    def run(self, title: str, explanation: str, work: Callable[[], Any], outcome: Callable[[Any], str]) -> Any:
        self.on_step(title, explanation)
        started = time.perf_counter()
        value = work()
        self.done.append({"title": title, "seconds": round(time.perf_counter() - started, 1), "outcome": outcome(value)})
        return value


MARKER = ".yolodefect-demo"  # marks a folder the demo may replace with --force


def _prepare_output(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file; give a folder for the demo's output")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise UsageError(f"{out} exists and is not empty; choose another folder or pass --force to replace it")
        if not (out / MARKER).exists():
            raise UsageError(f"{out} was not written by 'yolodefect demo'; not replacing it (choose another folder)")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by yolodefect demo; --force may replace this folder\n", encoding="utf-8")


def run_demo(options: DemoOptions = DemoOptions(), *, on_step: StepCallback | None = None,
             progress: ProgressCallback | None = None) -> DemoResult:
    """Run every step into ``options.out`` and return what happened (also written to demo.json)."""
    from yolodefect.anomaly import ANOMALY_CLASS, AnomalyTrainOptions, train_anomaly
    from yolodefect.data.check import check_dataset
    from yolodefect.data.conveyor import write_conveyor_video
    from yolodefect.data.station_dataset import synthesize_station
    from yolodefect.evaluate import evaluate
    from yolodefect.export import ExportOptions, export
    from yolodefect.inference.timing import torch_threads
    from yolodefect.stream.options import WatchOptions
    from yolodefect.stream.watch import watch
    from yolodefect.train import TrainOptions, train

    shipped = require_shipped_model()
    out = Path(options.out)
    _prepare_output(out, options.force)
    started = time.perf_counter()
    steps = _Steps(on_step)
    dataset = out / "dataset"

    steps.run("1. Generate a sample dataset",
              "Conveyor videos of synthetic steel and PCB parts, frames cropped and labelled: stands in for your own "
              "labelled images (yolodefect convert reads VOC, COCO, LabelMe, DeepPCB, masks).",
              lambda: synthesize_station(dataset, options.station, progress),
              lambda r: f"{sum(s.images for s in r.splits.values())} images, "
                        f"{sum(s.boxes for s in r.splits.values())} defect boxes in {dataset}")
    data = dataset / "data.yaml"

    def check_step():
        report = check_dataset(data)
        if report.has_errors:
            raise YoloDefectError(f"check found errors in {data}: {report.errors[0].message}")
        return report

    steps.run("2. Check it", "Corrupt images, bad labels, duplicates across splits, class balance, box sizes.",
              check_step, lambda r: f"{len(r.errors)} errors, {len(r.warnings)} warnings")

    def train_step():
        train_options = TrainOptions(model=str(shipped), epochs=options.epochs, imgsz=TILE, project=out / "runs",
                                     name="finetune", exist_ok=True, seed=options.seed, plots=False, run_check=False,
                                     patience=options.epochs, nbs=64, flipud=0.5,  # the recipe was tuned so
                                     overrides={"optimizer": "AdamW", "lr0": 0.0005, "warmup_epochs": 0,
                                                "close_mosaic": 0, "verbose": False,
                                                # tuned in fp32; the demo's numbers must not depend on the CPU
                                                "amp": "fp32"})
        return train(data, train_options)

    trained = steps.run(
        "3. Fine-tune the shipped model",
        f"Transfer learning from weights/{SHIPPED_MODEL_NAME} for {options.epochs} epoch(s) on the sample; "
        "on your data, train for longer (yolodefect train).",
        train_step, lambda r: f"val mAP50 {r.evaluation.metrics.map50:.3f}, best model {r.best_model}")

    eval_dir = out / "eval"
    steps.run(
        "4. Evaluate and choose thresholds",
        "Per-class AP, and per-class confidence thresholds that catch 99% of defective parts on val "
        "(thresholds.yaml, read by watch).",
        lambda: evaluate(trained.best_model, data, split="val", target_recall=0.99, per_class_thresholds=True,
                         out_dir=eval_dir, progress=progress, plots=not options.quick),
        lambda r: f"mAP50 {r.metrics.map50:.3f}, escape rate {_percent(r.metrics.decisions.escape_rate)}, "
                  f"false-reject rate {_percent(r.metrics.decisions.false_reject_rate)}")
    thresholds = eval_dir / "thresholds.yaml"

    # Every train image calibrates, in the quick demo too: with 32 of its 94 the INT8 model lost 1.1 mAP50 points
    # on val and failed the gate, with all of them it gained 0.3 (a few seconds more).
    # The demo's output is the same on every machine: the ONNX Runtime path, which needs no extra install.
    export_options = ExportOptions(int8=True, format="onnx", calib=100, latency_runs=5 if options.quick else 20,
                                   warmup=2, out_dir=out / "export", max_drop=1.0, progress=progress)
    exported = steps.run(
        "5. Export INT8 and validate it",
        "ONNX FP32 and INT8 (calibrated on train images), both scored on val: the INT8 model ships only "
        "if it loses at most 1 mAP50 point.",
        lambda: export(trained.best_model, data, export_options),
        lambda r: f"{'deployable' if r.deployable else 'REJECTED by the gate'}: {r.model_path.name}, "
                  f"mAP50 {r.reference.metrics.map50:.3f} -> {r.candidate.metrics.map50:.3f}, "
                  f"{r.reference.latency.median_ms:.1f} -> {r.candidate.latency.median_ms:.1f} ms")
    # A rejected INT8 model must not run the line: fall back to the validated FP32 export.
    station_model = exported.model_path if exported.deployable else (exported.fp32_path or trained.best_model)

    masters = out / "master_parts.mp4"

    def calibration_step():
        from yolodefect.calibrate import CalibrateOptions, calibrate
        from yolodefect.data.part_truth import write_part_truth

        truth = write_conveyor_video(masters, kind=DEMO_KIND, parts=options.master_parts, defective=0.5,
                                     seed=3000 + options.seed, part_size=options.station.part_size,
                                     speed_px_per_frame=16, lead_in_frames=BELT_FRAMES + 5, gap_px=(40, 120))
        truth_csv = write_part_truth(out / "master_parts.csv", truth.known_parts())
        station = WatchOptions(model=station_model, thresholds=thresholds, tile=TILE, belt_frames=BELT_FRAMES)
        return calibrate(masters, truth_csv, station,
                         CalibrateOptions(target_recall=0.99, out_dir=out / "calibration"))

    calibration = steps.run(
        "6. Calibrate the line with master parts",
        f"{options.master_parts} known parts (half defective, listed in master_parts.csv) pass the camera; the station "
        "decides each once, and the thresholds and k (frames a defect must be seen on) are chosen for this line.",
        calibration_step,
        lambda c: f"k={c.min_frames}, escape rate {_percent(c.escape_rate)}, false-reject rate "
                  f"{_percent(c.false_reject_rate)} on {c.parts_found} parts -> {c.thresholds_path}")
    line_thresholds = calibration.thresholds_path or thresholds

    good_folder = out / "good_parts"

    def anomaly_step():
        write_good_parts(good_folder, options.good_parts, options.station.part_size, seed=5000 + options.seed)
        with torch_threads(ANOMALY_TORCH_THREADS):
            return train_anomaly(AnomalyTrainOptions(data=good_folder, backbone=str(shipped), imgsz=ANOMALY_IMGSZ,
                                                     holdout=ANOMALY_HOLDOUT, out=out / "anomaly" / "good_parts.npz",
                                                     seed=options.seed))

    anomaly = steps.run(
        "7. Teach an anomaly model good parts",
        f"{options.good_parts} photos of defect-free parts, no labels (good_parts/): the patch features of half of "
        "them (from the shipped model's backbone) become a memory bank of what good looks like, the highest score of "
        "the other half is the threshold; a part unlike every good part is an anomaly, whatever its defect "
        f"(yolodefect anomaly train good_parts/ --imgsz {ANOMALY_IMGSZ}).",
        anomaly_step,
        lambda r: f"{r.good_images} good images + {r.holdout_images} held out, bank {r.bank_size} patches, "
                  f"{r.bank_bytes / 1e6:.1f} MB, threshold = highest held-out score {r.reference_score:.3g} "
                  f"-> {r.model_path}")

    video = out / "conveyor.mp4"
    truth = steps.run(
        "8. Record a conveyor video",
        f"{options.video_parts} new parts pass the camera, some with contamination (a label or a smear): a defect "
        "no class of the detector stands for. The video's ground truth (which parts are defective) is written "
        "next to it.",
        lambda: write_conveyor_video(video, kind=DEMO_KIND, parts=options.video_parts,
                                     defective=options.video_defective, contaminated=options.video_contaminated,
                                     seed=2000 + options.seed, part_size=options.station.part_size,
                                     speed_px_per_frame=16, lead_in_frames=BELT_FRAMES + 5, gap_px=(40, 120)),
        lambda t: f"{t.frames} frames, defective parts {sorted(t.defective_parts - t.unseen_parts)}, "
                  f"contaminated parts {sorted(t.unseen_parts)}")
    (out / "conveyor.truth.json").write_text(json.dumps(truth.to_dict(), indent=2) + "\n", encoding="utf-8")

    events_path, evidence = out / "events.jsonl", out / "evidence"
    watch_options = WatchOptions(source=str(video), model=station_model, thresholds=line_thresholds, tile=TILE,
                                 belt_frames=BELT_FRAMES, sinks=(str(events_path),), outbox=out / "outbox.sqlite",
                                 evidence_dir=evidence, save=None if options.quick else out / "annotated.mp4",
                                 anomaly=anomaly.model_path)

    def watch_step():
        with torch_threads(ANOMALY_TORCH_THREADS):
            return watch(watch_options)

    steps.run(
        "9. Watch the line",
        "Learn the empty belt, find each part, judge its defects over the frames it is seen on (the detector, and "
        "the anomaly model on each part wholly in view), and emit exactly one event per defective part when it "
        "crosses the middle of the view (JSON Lines here; MQTT, webhooks, OPC UA on the line), with raw and "
        "annotated evidence JPEGs (an anomaly's over its heatmap).",
        watch_step,
        lambda s: f"{s.stats.frames} frames at {s.stats.fps:.0f} fps, {s.stats.parts + s.stats.errors} parts, "
                  f"{s.stats.rejects} reject events, anomaly model {s.stats.anomaly_p50_ms or 0:.0f} ms per part "
                  "(median)")

    events = [json.loads(line) for line in events_path.read_text(encoding="utf-8").splitlines() if line.strip()] \
        if events_path.exists() else []
    rejects = [e for e in events if e["decision"] == "reject"]
    rejected = sorted({p for e in rejects if (p := part_of_event(truth, e)) is not None})
    reject_classes: dict[int, list[str]] = {}
    for event in rejects:
        if (part := part_of_event(truth, event)) is not None:
            named = reject_classes.setdefault(part, [])
            named += [name for name in dict.fromkeys(d["class"] for d in event["defects"]) if name not in named]
    by_anomaly = sorted(part for part, named in reject_classes.items() if ANOMALY_CLASS in named)
    files = {"dataset": str(data), "model": str(trained.best_model), "thresholds": str(thresholds),
             "line_thresholds": str(line_thresholds), "calibration": str(calibration.out_dir / "calibration.json"),
             "int8_model": str(exported.model_path), "model_card": str(exported.card_md), "video": str(video),
             "events": str(events_path), "evidence": str(evidence), "good_parts": str(good_folder),
             "anomaly_model": str(anomaly.model_path)}
    if watch_options.save is not None:
        files["annotated_video"] = str(watch_options.save)
    result = DemoResult(out=out, steps=steps.done, video=video, defective_parts=sorted(truth.defective_parts),
                        rejected_parts=rejected, events=events_path, evidence=evidence, model=Path(station_model),
                        deployable=exported.deployable, seconds=round(time.perf_counter() - started, 1), files=files,
                        calibration={k: v for k, v in calibration.to_dict().items() if k != "parts"},
                        unseen_parts=sorted(truth.unseen_parts), anomaly_parts=by_anomaly,
                        reject_classes=dict(sorted(reject_classes.items())), anomaly_model=anomaly.model_path)
    _write_json_atomically(out / "demo.json", result.to_dict())
    return result


def write_good_parts(folder: Path, count: int, part_size: tuple[int, int], *, seed: int) -> list[Path]:
    """``count`` defect-free parts of the demo's kind as PNGs in ``folder``: the photos of good parts a user
    would take, cropped the way the station's anomaly stage crops a part on the belt (its inset trimmed off
    every side), so the model learns from the very view it will score."""
    import cv2
    import numpy as np

    from yolodefect.data.synth import render_part
    from yolodefect.stream.anomaly_stage import INSET_FRACTION

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for index in range(count):
        gray, _ = render_part(DEMO_KIND, np.random.default_rng([seed, index]), part_size, [])
        height, width = gray.shape
        dx, dy = round(width * INSET_FRACTION), round(height * INSET_FRACTION)
        path = folder / f"good_{index:03d}.png"
        if not cv2.imwrite(str(path), gray[dy:height - dy, dx:width - dx]):
            raise YoloDefectError(f"could not write {path}")
        written.append(path)
    return written


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _write_json_atomically(path: Path, data: dict) -> None:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")
    Path(handle.name).replace(path)
