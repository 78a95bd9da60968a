"""Issue 17's drift benchmark: how soon does ``watch`` raise its drift and camera-fault alarms, and does it stay quiet
on a healthy line?

    python bench/drift.py --work /tmp/drift_bench            # both halves; writes bench/results/drift.json
    python bench/drift.py --work /tmp/drift_bench --quick    # shorter videos, result to WORK/drift.json

Two halves:

* ``conveyor``: generated conveyor videos (:func:`yolodefect.data.conveyor.write_conveyor_video`, steel parts, a
  dense line: parts PART_WH px, GAP_PX apart, SPEED px per frame, one part every FRAMES_PER_PART frames at 30 fps).
  Each video is written, then re-encoded frame by frame through a transform (the same re-encoding for all, so
  only the transform differs): (a) ``step``: brightness x0.7 from frame CHANGE_AT to RETURN_AT, then back;
  (b) ``decay``: contrast (around each frame's mean) falling linearly from 1.0 to 0.5 over 2,000 frames from
  CHANGE_AT; (c) ``frozen``: frame CHANGE_AT repeated for FROZEN_FRAMES frames; (d) ``stable``: 10,000 frames,
  no change. ``watch`` runs on each in track mode (parts found on the empty belt) with a fake detector that
  finds nothing: in track mode the drift monitor compares the parts' crops' image statistics only, so the
  detector does not enter the measure, and 20,000 frames of a real model would not fit the bench's budget on
  2 cores. Its reference profile: :func:`yolodefect.evaluation.profile.build_profile` on the crops of the parts
  of a reference video (another seed) as the same station cut them (``on_part``), i.e. still images of the same
  generator's parts as this camera sees them. For comparison, the stable run's crops are also fed (offline) to a
  monitor whose profile comes from the generator's parts rendered as still PNGs (no belt, no video codec).
* ``neu``: a real detector (``--neu-model``, default /tmp/neu19/runs/neu/weights/best.pt, trained on NEU-DET's
  train split) and its own profile from ``yolodefect eval`` on the val split; ``watch`` then replays the test
  split as an image folder (image mode: every feature, the detection ones included) in a random order, as parts
  come on a line: no alarm expected; the same images darkened (x0.7, written as PNG): an alarm expected. And the
  test split in file-name order, which groups it by class (30 crazing images, then 31 inclusion ...): a change of
  product mix the monitor may rightly see. Skipped, with the reason, when the model or its dataset is missing.

Reported: the delay of each alarm after its change, in frames (and parts; seconds for frozen), the features
that raised it with their numbers, and the false alarms of the stable run. Targets (issue 17): no false alarm,
the step alarmed within 300 frames, the frozen camera within 2 s.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, machine_line, write_result

from yolodefect.data.conveyor import write_conveyor_video
from yolodefect.data.synth import CLASS_NAMES, render_part
from yolodefect.detections import Detections
from yolodefect.evaluation.profile import build_profile, read_profile, write_profile
from yolodefect.inference.rules import build_reject_rules
from yolodefect.stream.drift import DriftMonitor, crop_observation
from yolodefect.inference.image_stats import IMAGE_FEATURES
from yolodefect.stream.options import WatchOptions
from yolodefect.stream.watch import watch

FPS = 30.0
PART_WH = (96, 72)
GAP_PX = 32
SPEED = 16
FRAMES_PER_PART = (PART_WH[0] + GAP_PX) // SPEED
LEAD_IN = 40  # empty belt: the station learns it from the first 30 frames
CHANGE_AT = 600
RETURN_AT = 1500  # step: the lighting comes back here
DECAY_FRAMES = 2000
FROZEN_FRAMES = 150  # 5 s at 30 fps
STABLE_FRAMES = 10_000
REFERENCE_PARTS = 400
NAMES = list(CLASS_NAMES["steel"])
NEU_MODEL = Path("/tmp/neu19/runs/neu/weights/best.pt")
NEU_DATA = Path("/tmp/neu19/data/data.yaml")
NEU_SEEDS = (17, 18, 19, 20, 21)


class NothingFound:
    """The fake detector of the conveyor half (see the module docstring)."""

    class_names = NAMES

    def __call__(self, image: np.ndarray) -> Detections:
        return Detections.empty()


# ------------------------------------------------------------------------------------------- videos
def conveyor(path: Path, frames: int, seed: int) -> Path:
    parts = max(1, (frames - LEAD_IN) // FRAMES_PER_PART)
    write_conveyor_video(path, parts=parts, defective=0.0, seed=seed, part_size=PART_WH, gap_px=GAP_PX,
                         speed_px_per_frame=SPEED, fps=FPS, lead_in_frames=LEAD_IN)
    return path


def transcoded(raw: Path, out: Path, transform) -> tuple[Path, int]:
    """``raw`` re-encoded with ``transform(index, image)`` applied to every frame; (path, frame count)."""
    capture = cv2.VideoCapture(str(raw))
    writer = None
    index = 0
    held = None
    while True:
        ok, image = capture.read()
        if not ok:
            break
        if writer is None:
            height, width = image.shape[:2]
            writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (width, height))
        image, held = transform(index, image, held)
        writer.write(image)
        index += 1
    capture.release()
    writer.release()
    raw.unlink()
    return out, index


def identity(index, image, held):
    return image, held


def step(index, image, held):
    if CHANGE_AT <= index < RETURN_AT:
        image = np.clip(image.astype(np.float32) * 0.7, 0, 255).astype(np.uint8)
    return image, held


def contrast_at(index: int) -> float:
    return 1.0 - 0.5 * min(max(index - CHANGE_AT, 0), DECAY_FRAMES) / DECAY_FRAMES


def decay(index, image, held):
    factor = contrast_at(index)
    if factor < 1.0:
        mean = float(image.mean())
        image = np.clip(mean + (image.astype(np.float32) - mean) * factor, 0, 255).astype(np.uint8)
    return image, held


def frozen(index, image, held):
    if index == CHANGE_AT:
        held = image.copy()
    if CHANGE_AT <= index < CHANGE_AT + FROZEN_FRAMES:
        return held, held
    return image, held


# ------------------------------------------------------------------------------------------- station runs
def run_station(video: Path, work: Path, name: str, profile: Path | None, *, fake: bool = True, **extra) -> dict:
    """``watch`` over ``video`` (with the fake detector, else options' model); its alarm events, summary counts and,
    on a line, the parts' crops' observations."""
    events_path = work / f"{name}.events.jsonl"
    events_path.unlink(missing_ok=True)
    outbox = work / f"{name}.outbox.sqlite"
    for stale in work.glob(f"{name}.outbox.sqlite*"):
        stale.unlink()
    observations: list[dict] = []
    crops: list[np.ndarray] = []

    def on_part(decision) -> None:
        if decision.part_box is None:
            return
        x1, y1, x2, y2 = (int(round(float(v))) for v in decision.part_box)
        crop = decision.frame.image[max(0, y1):y2, max(0, x1):x2]
        if extra.get("keep_crops"):
            crops.append(crop.copy())
        observation = crop_observation(decision.frame.image, decision.part_box)
        if observation is not None:
            observations.append(observation)

    options = WatchOptions(source=str(video), profile=profile, drift="alarm" if profile else "off",
                           sinks=(str(events_path),), outbox=outbox, flush_timeout_s=10.0,
                           **{k: v for k, v in extra.items() if k != "keep_crops"})
    started = time.perf_counter()
    summary = watch(options, detector=NothingFound() if fake else None, on_part=on_part if fake else None)
    seconds = time.perf_counter() - started
    events = [json.loads(line) for line in events_path.read_text().splitlines()] if events_path.exists() else []
    alarms = [e for e in events if e["decision"] in ("drift", "camera_fault")]
    return {"frames": summary.stats.frames, "parts": summary.stats.parts, "fps": round(summary.stats.fps, 1),
            "seconds": round(seconds, 1), "alarms": alarms, "observations": observations, "crops": crops,
            "drift_alarms": summary.stats.drift_alarms, "camera_faults": summary.stats.camera_faults}


def alarm_record(event: dict) -> dict:
    return {"frame": event["frame_index"], "state": event["alarm"]["state"], "reason": event["alarm"]["reason"],
            "features": event["alarm"]["features"]}


def first(alarms: list[dict], decision: str, state: str, after: int) -> dict | None:
    return next((e for e in alarms if e["decision"] == decision and e["alarm"]["state"] == state
                 and e["frame_index"] >= after), None)


def reference_profile(work: Path, frames: int) -> Path:
    """Build the profile from the crops of a reference video's parts, as the station cuts them."""
    video, _ = transcoded(conveyor(work / "reference.raw.mp4", frames, seed=10), work / "reference.mp4", identity)
    seen = run_station(video, work, "reference", None, keep_crops=True)
    folder = work / "reference_crops"
    folder.mkdir(exist_ok=True)
    paths = []
    for index, crop in enumerate(seen["crops"]):
        path = folder / f"part{index:04d}.png"
        cv2.imwrite(str(path), crop)
        paths.append(path)
    rules = build_reject_rules(thresholds=None, conf=0.25)
    profile = build_profile(paths, [Detections.empty()] * len(paths), NAMES, rules, split="reference crops",
                            model="fake (nothing found)", reject_rate=0.0)
    return write_profile(profile, work / "profile.json")


def still_profile(work: Path, count: int) -> Path:
    """The generator's parts as still PNGs (no belt, no codec): what an eval on a rendered dataset would hold."""
    folder = work / "stills"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(20)
    paths = []
    for index in range(count):
        grey, _ = render_part("steel", rng, PART_WH, [])
        path = folder / f"part{index:04d}.png"
        cv2.imwrite(str(path), grey)
        paths.append(path)
    rules = build_reject_rules(thresholds=None, conf=0.25)
    profile = build_profile(paths, [Detections.empty()] * len(paths), NAMES, rules, split="stills", model="fake",
                            reject_rate=0.0)
    return write_profile(profile, work / "profile_stills.json")


def offline_alarms(profile_path: Path, observations: list[dict]) -> list[dict]:
    monitor = DriftMonitor(read_profile(profile_path), features=IMAGE_FEATURES)
    changes = []
    for index, observation in enumerate(observations, start=1):
        change = monitor.update(observation)
        if change is not None:
            changes.append({"part": index, "state": change.state, "features": change.feature_dicts()})
    return changes


def conveyor_half(work: Path, quick: bool) -> dict:
    stable_frames = 2000 if quick else STABLE_FRAMES
    profile = reference_profile(work, LEAD_IN + REFERENCE_PARTS * FRAMES_PER_PART)
    result: dict = {"line": {"part_wh": PART_WH, "gap_px": GAP_PX, "speed_px_per_frame": SPEED, "fps": FPS,
                             "frames_per_part": FRAMES_PER_PART, "frame_wh": [640, 360]},
                    "profile": {"images": read_profile(profile).images, "from": "crops of a reference video's parts "
                                "(seed 10) as the station cut them"},
                    "drift_window_parts": 50}
    cases = {
        "step": (RETURN_AT + 900, 12, step),
        "decay": (CHANGE_AT + DECAY_FRAMES + 200, 13, decay),
        "frozen": (CHANGE_AT + FROZEN_FRAMES + 300, 14, frozen),
        "stable": (stable_frames, 11, identity),
    }
    for name, (frames, seed, transform) in cases.items():
        video, count = transcoded(conveyor(work / f"{name}.raw.mp4", frames, seed), work / f"{name}.mp4", transform)
        seen = run_station(video, work, name, profile)
        alarms = seen["alarms"]
        entry = {"frames": seen["frames"], "parts": seen["parts"], "station_fps": seen["fps"],
                 "alarms": [alarm_record(e) for e in alarms]}
        if name == "step":
            raised = first(alarms, "drift", "raised", CHANGE_AT)
            cleared = first(alarms, "drift", "cleared", RETURN_AT)
            entry.update(change_at_frame=CHANGE_AT, return_at_frame=RETURN_AT,
                         alarm_delay_frames=raised["frame_index"] - CHANGE_AT if raised else None,
                         clear_delay_frames=cleared["frame_index"] - RETURN_AT if cleared else None,
                         alarms_before_change=sum(1 for e in alarms if e["frame_index"] < CHANGE_AT))
        elif name == "decay":
            raised = first(alarms, "drift", "raised", CHANGE_AT)
            entry.update(change_at_frame=CHANGE_AT, decay_frames=DECAY_FRAMES,
                         alarm_delay_frames=raised["frame_index"] - CHANGE_AT if raised else None,
                         contrast_factor_at_alarm=round(contrast_at(raised["frame_index"]), 3) if raised else None,
                         alarms_before_change=sum(1 for e in alarms if e["frame_index"] < CHANGE_AT))
        elif name == "frozen":
            raised = first(alarms, "camera_fault", "raised", CHANGE_AT)
            cleared = first(alarms, "camera_fault", "cleared", CHANGE_AT)
            entry.update(frozen_from_frame=CHANGE_AT, frozen_frames=FROZEN_FRAMES,
                         alarm_delay_frames=raised["frame_index"] - CHANGE_AT if raised else None,
                         alarm_delay_s=round((raised["frame_index"] - CHANGE_AT) / FPS, 3) if raised else None,
                         cleared_at_frame=cleared["frame_index"] if cleared else None,
                         drift_alarms=seen["drift_alarms"])
        else:
            entry.update(false_drift_alarms=seen["drift_alarms"], false_camera_faults=seen["camera_faults"])
            stills = still_profile(work, REFERENCE_PARTS)
            changes = offline_alarms(stills, seen["observations"])
            entry["with_a_still_image_profile"] = {
                "note": "the same stable run's crops against a profile of the generator's parts rendered as still "
                        "PNGs (no belt around them, no video codec): what an eval on a rendered dataset would give",
                "raised": sum(1 for c in changes if c["state"] == "raised"),
                "first": changes[0] if changes else None}
        result[name] = entry
        print(f"  {name}: {json.dumps({k: v for k, v in entry.items() if k != 'alarms'})[:400]}", flush=True)
    return result


# ------------------------------------------------------------------------------------------- NEU-DET
def neu_half(work: Path, model: Path, data: Path) -> dict:
    if not model.is_file() or not data.is_file():
        return {"skipped": f"the NEU-DET model {model} or its dataset {data} is missing"}
    from yolodefect.evaluate import evaluate

    test_images = data.parent / "images" / "test"
    eval_dir = work / "neu_eval"
    started = time.perf_counter()
    evaluate(model, data, split="val", out_dir=eval_dir, plots=False, validator_map=False)
    profile = eval_dir / "profile.json"
    reference = read_profile(profile)
    # A line sees its parts in no particular order; the split's file names group them by class (30 crazing, then
    # 31 inclusion ...), so the replays are in seeded random orders (links named by position), as a line would
    # see them; the darkened replay is the first order. The name order is replayed too: a window of one class is
    # a real change of the product mix.
    result: dict = {"model": str(model), "profile": {"split": "val", "images": reference.images,
                                                     "reject_rate": reference.reject_rate},
                    "test_replay_orders": {}}
    for seed in NEU_SEEDS:
        order = sorted(test_images.iterdir())
        np.random.default_rng(seed).shuffle(order)
        shuffled = _fresh(work / f"neu_test_shuffled_{seed}")
        for position, path in enumerate(order):
            (shuffled / f"{position:04d}_{path.name}").symlink_to(path.resolve())
        seen = _neu_run(work, f"neu_test_replay_{seed}", shuffled, profile, model)
        result["test_replay_orders"][f"seed {seed}"] = seen
        if seed == NEU_SEEDS[0]:
            dark = _fresh(work / "neu_test_dark")
            for position, path in enumerate(order):
                image = cv2.imread(str(path))
                cv2.imwrite(str(dark / f"{position:04d}_{path.stem}.png"),
                            (image.astype(np.float32) * 0.7).astype(np.uint8))
            result["test_darkened_x0.7"] = _neu_run(work, "neu_test_darkened", dark, profile, model)
            result["test_darkened_x0.7"]["order"] = f"seed {seed}"
    result["test_replay_false_alarms"] = sum(r["drift_alarms"] for r in result["test_replay_orders"].values())
    result["test_replay_in_name_order"] = _neu_run(work, "neu_test_name_order", test_images, profile, model)
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def _fresh(folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    for stale in folder.iterdir():
        stale.unlink()
    return folder


def _neu_run(work: Path, name: str, folder: Path, profile: Path, model: Path) -> dict:
    seen = run_station(folder, work, name, profile, fake=False, model=model)
    drift = [alarm_record(e) for e in seen["alarms"] if e["decision"] == "drift"]
    print(f"  {name}: {seen['drift_alarms']} drift alarm(s)" + (f", first at image {drift[0]['frame']}: "
          f"{drift[0]['reason']}" if drift else ""), flush=True)
    return {"images": seen["frames"], "drift_alarms": seen["drift_alarms"], "camera_faults": seen["camera_faults"],
            "alarm_at_image": drift[0]["frame"] if drift else None, "alarms": drift}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/drift_bench"))
    parser.add_argument("--quick", action="store_true", help="a 2,000-frame stable run; result to WORK/drift.json")
    parser.add_argument("--neu-model", type=Path, default=NEU_MODEL)
    parser.add_argument("--neu-data", type=Path, default=NEU_DATA)
    parser.add_argument("--skip-neu", action="store_true")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("yolodefect.stream.station").setLevel(logging.ERROR)  # the alarms are in the result
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    print(machine_line(), flush=True)
    result = {"benchmark": "drift (issue 17)", "machine": machine_info(),
              "settings": {"drift_window": 50, "psi_alarm": 0.25, "p_alarm": 1e-6, "hold": 3, "psi_clear": 0.1,
                           "p_clear": 0.05, "frozen_s": 2.0, "camera_fault_clear_after_frames": 5},
              "targets": {"false_alarms_stable": 0, "step_alarm_within_frames": 300, "frozen_alarm_within_s": 2.0}}
    result["conveyor"] = conveyor_half(args.work, args.quick)
    result["neu"] = {"skipped": "--skip-neu"} if args.skip_neu else neu_half(args.work, args.neu_model, args.neu_data)
    result["seconds"] = round(time.perf_counter() - started, 1)
    output = args.output or (args.work / "drift.json" if args.quick else None)
    print(f"wrote {write_result('drift', result, output)}", flush=True)


if __name__ == "__main__":
    main()
