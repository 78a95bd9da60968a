"""Issue 19's line benchmark: does the station on a moving belt keep the rates that eval or a calibration run promised?

    python bench/line.py --work /tmp/line_bench                  # data, model (cached), videos, measurement
    python bench/line.py --work /tmp/line_bench --stage model    # only convert DeepPCB and train (the slow part)
    python bench/line.py --work /tmp/line_bench --model best.pt  # measure with a model trained elsewhere

Real parts: DeepPCB (../shared/datasets/deeppcb). Its defects are small at 640 px, so a part is a
native-resolution crop (CROP px square) of a tested image (defective, or good when the crop holds no
defect box) or of the same place on its defect-free template (good), shown at native scale on
640x360 frames. The detector is fine-tuned from the demo model with `yolodefect.train` (CPU protocol,
imgsz 320) on 320 px tiles of the official trainval split; the parts come from the official test
split only. Three disjoint sets of test-split parts make three videos per belt speed: calibration,
verification ("third video"), and the same parts as a still-image dataset for `evaluate`.

Per belt speed the station is run on the verification video twice: with thresholds chosen on still
images (`evaluate --target-recall 0.99`) and with thresholds from `calibrate` on the calibration video.
Events are mapped to parts by the event's frame and part box against the video's exact truth.
Writes bench/results/line.json (or --output).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import SHARED_DIR, machine_info, machine_line, write_result

ROOT = Path(__file__).resolve().parents[1]
DEMO_MODEL = ROOT / "weights" / "yolodefect-demo.pt"
DEEPPCB = SHARED_DIR / "datasets" / "deeppcb"
TILE_PX = 320
IMGSZ = 320


# --------------------------------------------------------------------------------------------- model
def training_subset(tiles: Path, out: Path, train_tiles: int, val_tiles: int, seed: int) -> Path:
    """A YOLO dataset of links to a seeded sample of the converted tiles (defect tiles only: the budget is short)."""
    if (out / "data.yaml").exists():
        return out
    rng = random.Random(seed)
    for split, count in (("train", train_tiles), ("val", val_tiles)):
        labels = sorted((tiles / "labels" / split).glob("*.txt"))
        with_defects = [path for path in labels if path.read_text(encoding="utf-8").strip()]
        chosen = sorted(rng.sample(with_defects, min(count, len(with_defects))))
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        for label in chosen:
            image = next((tiles / "images" / split).glob(f"{label.stem}.*"))
            os.symlink(image.resolve(), out / "images" / split / image.name)
            os.symlink(label.resolve(), out / "labels" / split / label.name)
    text = (tiles / "data.yaml").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.startswith("test:")]
    (out / "data.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def ensure_model(work: Path, args) -> tuple[Path, dict]:
    """The detector: --model, else the cached one in WORK/model, else convert + train (about half an hour on 2 cores)."""
    if args.model:
        return Path(args.model).resolve(), {"source": "given", "path": str(Path(args.model).resolve())}
    cached, record = work / "model" / "best.pt", work / "model" / "training.json"
    if cached.exists() and record.exists():
        return cached, json.loads(record.read_text(encoding="utf-8"))
    from yolodefect.data.convert import ConvertOptions, convert
    from yolodefect.train import TrainOptions, train

    tiles = work / "pcb-tiles"
    if not (tiles / "data.yaml").exists():
        convert(DEEPPCB, tiles, ConvertOptions(format="deeppcb", tile=TILE_PX, background_tiles=0.1, seed=args.seed))
    subset = training_subset(tiles, work / "pcb-train", args.train_tiles, args.val_tiles, args.seed)
    started = time.perf_counter()
    result = train(subset, TrainOptions(model=str(DEMO_MODEL), imgsz=IMGSZ, epochs=args.epochs, seed=args.seed,
                                        project=work / "runs", name="pcb", exist_ok=True, plots=False,
                                        overrides={"time": args.train_minutes / 60.0}))
    seconds = time.perf_counter() - started
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(Path(result.best_model).read_bytes())
    metrics = result.evaluation.metrics
    info = {
        "source": "trained", "from": "weights/yolodefect-demo.pt", "imgsz": IMGSZ, "tile_px": TILE_PX,
        "train_tiles": args.train_tiles, "val_tiles": args.val_tiles, "time_budget_min": args.train_minutes,
        "epochs_run": _epochs_run(Path(result.run_dir)), "seconds": round(seconds, 1),
        "val_map50": metrics.map50, "val_map50_95": metrics.map50_95,
        "per_class_ap50": {c.name: c.ap50 for c in metrics.per_class},
        "presets": [{"key": p.key, "value": p.value} for p in result.presets],
        "run_dir": str(result.run_dir), "path": str(cached),
    }
    record.write_text(json.dumps(info, indent=2, default=str), encoding="utf-8")
    return cached, info


def _epochs_run(run_dir: Path) -> int | None:
    results = run_dir / "results.csv"
    if not results.exists():
        return None
    return max(0, len(results.read_text(encoding="utf-8").strip().splitlines()) - 1)


# ---------------------------------------------------------------------------------------------- data
def test_split_records(seed: int) -> list:
    """DeepPCB's official test split, read by our own reader, in a seeded order."""
    from yolodefect.data.formats import read_source
    from yolodefect.data.formats.base import ReadOptions

    source = read_source(DEEPPCB, "deeppcb", ReadOptions())
    records = sorted((r for r in source.records if r.split == "test" and r.boxes), key=lambda r: str(r.image_path))
    random.Random(seed).shuffle(records)
    return records


def choose_crop(boxes, image_wh: tuple[int, int], crop: int, rng: random.Random) -> tuple[int, int, list] | None:
    """A CROP px square holding at least one whole defect box and cutting none (so the part's truth is exact)."""
    from yolodefect.data.records import Box

    candidates = []
    for y0 in range(0, image_wh[1] - crop + 1, 16):
        for x0 in range(0, image_wh[0] - crop + 1, 16):
            inside, cut = [], False
            for box in boxes:
                x1, y1, x2, y2 = box.xyxy
                overlaps = x1 < x0 + crop and x2 > x0 and y1 < y0 + crop and y2 > y0
                whole = x1 >= x0 and y1 >= y0 and x2 <= x0 + crop and y2 <= y0 + crop
                if whole:
                    inside.append(Box(box.class_name, (x1 - x0, y1 - y0, x2 - x0, y2 - y0)))
                elif overlaps:
                    cut = True
                    break
            if inside and not cut:
                candidates.append((x0, y0, inside))
    return rng.choice(candidates) if candidates else None


def part_list(records, crop: int, seed: int) -> list[dict]:
    """Per tested image: its defective crop and the same crop of its template (a good part), shuffled."""
    import cv2

    from yolodefect.data.formats.deeppcb import template_for

    rng = random.Random(seed)
    parts = []
    for record in records:
        size = cv2.imread(str(record.image_path), cv2.IMREAD_UNCHANGED).shape[:2][::-1]
        chosen = choose_crop(record.boxes, size, crop, rng)
        if chosen is None:
            continue
        x0, y0, boxes = chosen
        parts.append({"image": str(record.image_path), "x0": x0, "y0": y0,
                      "boxes": [[b.class_name, *b.xyxy] for b in boxes]})
        parts.append({"image": str(template_for(record.image_path)), "x0": x0, "y0": y0, "boxes": []})
    rng.shuffle(parts)
    return parts


def part_image(part: dict, crop: int):
    import cv2
    import numpy as np

    from yolodefect.data.records import Box

    image = cv2.imread(part["image"], cv2.IMREAD_COLOR)
    pixels = np.ascontiguousarray(image[part["y0"]:part["y0"] + crop, part["x0"]:part["x0"] + crop])
    return pixels, [Box(name, (x1, y1, x2, y2)) for name, x1, y1, x2, y2 in part["boxes"]]


def write_stills(parts_by_set: dict[str, list[dict]], filler: dict, crop: int, out: Path) -> Path:
    """A YOLO dataset of the parts as still images (val: calibration parts, test: verification parts)."""
    import cv2

    from yolodefect.data.convert import ConvertOptions, build_dataset
    from yolodefect.data.formats.deeppcb import CLASS_NAMES
    from yolodefect.data.records import ImageRecord, SourceDataset

    if (out / "data.yaml").exists():
        return out / "data.yaml"
    crops = out.parent / f"{out.name}-crops"
    records = []
    for name, split in (("calibration", "val"), ("verification", "test")):
        (crops / name).mkdir(parents=True, exist_ok=True)
        for index, part in enumerate(parts_by_set[name]):
            pixels, boxes = part_image(part, crop)
            path = crops / name / f"{index:04d}.png"
            cv2.imwrite(str(path), pixels)
            records.append(ImageRecord(path, list(boxes), split=split))
    # The writer needs a train split; nothing trains on it: one defective crop of a board in neither set.
    (crops / "filler").mkdir(parents=True, exist_ok=True)
    pixels, boxes = part_image(filler, crop)
    cv2.imwrite(str(crops / "filler" / "0000.png"), pixels)
    records.append(ImageRecord(crops / "filler" / "0000.png", list(boxes), split="train"))
    build_dataset(SourceDataset("deeppcb-crops", records, list(CLASS_NAMES)), out,
                  ConvertOptions(keep_split=True, transfer="copy"), source_label="DeepPCB test-split part crops")
    return out / "data.yaml"


def build_line_data(work: Path, args) -> dict:
    """Parts, videos (per speed: calibration and verification), truth files and the stills dataset; cached."""
    from yolodefect.data.conveyor import write_conveyor_video
    from yolodefect.data.formats.deeppcb import CLASS_NAMES
    from yolodefect.data.part_truth import write_part_truth

    settings = {"boards": args.boards, "crop": args.crop, "seed": args.seed, "frame": [args.frame_width, args.frame_height],
                "speeds": list(args.speeds), "gaps": [args.gap_min, args.gap_max], "lead_in": args.lead_in,
                "flicker": args.flicker}
    # One folder per set of data settings: a cached build is reused only for the settings it was built with.
    key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    folder = work / f"line-data-{key}"
    manifest_path = folder / "manifest.json"
    if manifest_path.exists():
        return json.loads(manifest_path.read_text(encoding="utf-8"))
    folder.mkdir(parents=True, exist_ok=True)
    records = test_split_records(args.seed)
    half = len(records) // 2
    wanted = args.boards
    parts_by_set = {"calibration": part_list(records[:half][:wanted], args.crop, args.seed + 1),
                    "verification": part_list(records[half:][:wanted], args.crop, args.seed + 2)}
    filler = next(p for p in part_list(records[half:][wanted:wanted + 1], args.crop, args.seed + 3) if p["boxes"])
    stills = write_stills(parts_by_set, filler, args.crop, folder / "stills")
    videos: dict = {}
    for speed in args.speeds:
        for number, (name, parts) in enumerate(parts_by_set.items()):
            images = [part_image(part, args.crop) for part in parts]
            started = time.perf_counter()
            truth = write_conveyor_video(
                folder / f"{name}_{speed}px.avi", part_images=images, class_names=CLASS_NAMES,
                frame_size=(args.frame_width, args.frame_height), speed_px_per_frame=speed, fps=30.0,
                gap_px=(args.gap_min, args.gap_max), lead_in_frames=args.lead_in, textured_belt=True,
                flicker=args.flicker, seed=args.seed * 100 + speed * 10 + number)
            truth_csv = write_part_truth(folder / f"{name}_{speed}px.truth.csv", truth.known_parts())
            (folder / f"{name}_{speed}px.truth.json").write_text(json.dumps(truth.to_dict()), encoding="utf-8")
            videos[f"{name}_{speed}"] = {"video": str(truth.path), "truth_csv": str(truth_csv),
                                         "truth_json": str(folder / f"{name}_{speed}px.truth.json"),
                                         "frames": truth.frames, "parts": len(truth.parts),
                                         "defective": len(truth.defective_parts),
                                         "seconds_to_write": round(time.perf_counter() - started, 1)}
            print(f"wrote {truth.path.name}: {truth.frames} frames, {len(truth.parts)} parts "
                  f"({len(truth.defective_parts)} defective)")
    manifest = {"crop_px": args.crop, "frame_size": [args.frame_width, args.frame_height], "speeds": list(args.speeds),
                "gap_px": [args.gap_min, args.gap_max], "lead_in_frames": args.lead_in, "flicker": args.flicker,
                "textured_belt": True, "stills": str(stills), "videos": videos,
                "boards": {name: len({p["image"] for p in parts if p["boxes"]}) for name, parts in parts_by_set.items()},
                "parts": {name: {"total": len(parts), "defective": sum(bool(p["boxes"]) for p in parts)}
                          for name, parts in parts_by_set.items()}}
    (folder / "parts.json").write_text(json.dumps(parts_by_set), encoding="utf-8")
    manifest_path.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return manifest


# ------------------------------------------------------------------------------------------- measure
def read_events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def station_outcome(events: list[dict], truth, min_iou: float = 0.5) -> dict:
    """Each event is put on the part whose true box on the event's frame overlaps its part box best (IoU >= min_iou);
    others are belt events. A part is rejected when one of its decisions is reject or error (the line's fail-safe)."""
    from yolodefect.detections import box_iou

    decisions: dict[int, list[str]] = {part.index: [] for part in truth.parts}
    belt, unplaced = [], []
    for event in events:
        box, frame = event.get("part_bbox_xyxy"), event.get("frame_index")
        if box is None or frame is None:
            unplaced.append(event)
            continue
        scored = [(float(box_iou([box], [truth.part_box(i, frame)])[0, 0]), i) for i in truth.parts_in_view(frame)]
        iou, index = max(scored, default=(0.0, None))
        if index is None or iou < min_iou:
            belt.append({"frame_index": frame, "decision": event["decision"], "part_bbox_xyxy": box, "iou": iou})
            continue
        decisions[index].append(event["decision"])
    defective = {part.index for part in truth.parts if part.defective}
    rejected = {i for i, found in decisions.items() if {"reject", "error"} & set(found)}
    escapes = sorted(defective - rejected)
    false_rejects = sorted(rejected - defective)
    good = len(truth.parts) - len(defective)
    return {
        "parts": len(truth.parts), "defective": len(defective), "good": good,
        "escape_rate": len(escapes) / len(defective) if defective else None,
        "false_reject_rate": len(false_rejects) / good if good else None,
        "escaped_parts": escapes, "false_rejected_parts": false_rejects,
        "events": len(events), "belt_events": len(belt), "belt_event_examples": belt[:5],
        "events_without_part_box": len(unplaced),
        "parts_with_more_than_one_decision": sorted(i for i, d in decisions.items() if len(d) > 1),
        "parts_without_decision": sorted(i for i, d in decisions.items() if not d),
        "error_parts": sorted(i for i, d in decisions.items() if "error" in d),
    }


def eval_rates(result) -> dict:
    decisions = result.metrics.decisions
    return {"escape_rate": decisions.escape_rate, "false_reject_rate": decisions.false_reject_rate,
            "defective": decisions.defective, "good": decisions.good, "thresholds": decisions.thresholds}


def run_station(model: Path, video: str, thresholds: Path, out: Path, args) -> tuple[dict, float]:
    """``watch`` on a video with a thresholds file, every decision emitted (pass too) to events.jsonl."""
    from yolodefect.stream.options import WatchOptions
    from yolodefect.stream.watch import watch

    out.mkdir(parents=True, exist_ok=True)
    for name in ("events.jsonl", "outbox.sqlite"):
        (out / name).unlink(missing_ok=True)
    started = time.perf_counter()
    summary = watch(WatchOptions(source=video, mode="track", model=model, imgsz=args.station_imgsz,
                                 thresholds=thresholds, belt_frames=args.belt_frames, emit_pass=True,
                                 sinks=(str(out / "events.jsonl"),), outbox=out / "outbox.sqlite"))
    stats = summary.stats.to_dict()
    keep = ("frames", "fps", "parts", "rejects", "passes", "errors", "off_part_detections", "discarded_regions",
            "belt_frames", "failed_frames")
    return {key: stats.get(key) for key in keep}, time.perf_counter() - started


def within(measured: float | None, promised: float | None, points: float = 0.02) -> bool | None:
    if measured is None or promised is None:
        return None
    return abs(measured - promised) <= points + 1e-9


def measure(model: Path, data: dict, work: Path, args) -> dict:
    """Per speed: thresholds from stills and from the calibration run; the station on the verification video."""
    from yolodefect.calibrate import CalibrateOptions, calibrate
    from yolodefect.data.conveyor import ConveyorTruth
    from yolodefect.evaluate import evaluate
    from yolodefect.stream.options import WatchOptions

    stills = Path(data["stills"])
    runs = work / "line-runs"
    # (a) thresholds on still images of the calibration parts, as `eval --target-recall 0.99` chooses them
    chosen = evaluate(model, stills, split="val", imgsz=IMGSZ, target_recall=args.target_recall,
                      out_dir=runs / "eval-stills-calibration", plots=False)
    stills_thresholds = Path(chosen.files["thresholds"])
    eval_verify_stills = evaluate(model, stills, split="test", imgsz=IMGSZ, thresholds=stills_thresholds,
                                  plots=False, out_dir=runs / "eval-stills-verification")
    results: dict = {"stills": {"thresholds_path": str(stills_thresholds),
                                "promised_on_calibration_stills": eval_rates(chosen),
                                "eval_on_verification_stills": eval_rates(eval_verify_stills),
                                "val_map50_on_verification_stills": eval_verify_stills.metrics.map50},
                     "speeds": {}}
    for speed in args.speeds:
        calibration, verification = data["videos"][f"calibration_{speed}"], data["videos"][f"verification_{speed}"]
        truth = ConveyorTruth.from_dict(json.loads(Path(verification["truth_json"]).read_text(encoding="utf-8")))
        per_speed: dict = {}
        started = time.perf_counter()
        station = WatchOptions(model=model, imgsz=args.station_imgsz, belt_frames=args.belt_frames)
        try:
            calibrated = calibrate(calibration["video"], calibration["truth_csv"], station=station,
                                   options=CalibrateOptions(target_recall=args.target_recall,
                                                            out_dir=runs / f"calibrate_{speed}px"))
            per_speed["calibration_run"] = {
                "seconds": round(time.perf_counter() - started, 1), "parts_found": calibrated.parts_found,
                "parts_expected": calibrated.parts_expected, "min_frames": calibrated.min_frames,
                "target_reached": calibrated.target_reached, "conf": calibrated.conf,
                "promised_escape_rate": calibrated.escape_rate,
                "promised_false_reject_rate": calibrated.false_reject_rate, "search": calibrated.search,
                "thresholds_path": str(calibrated.thresholds_path)}
            calibrated_thresholds = calibrated.thresholds_path
        except Exception as error:  # noqa: BLE001 - a failed calibration is a result to report, not a crash
            per_speed["calibration_run"] = {"error": f"{type(error).__name__}: {error}"}
            calibrated_thresholds = None
        for label, thresholds in (("stills_thresholds", stills_thresholds), ("calibrated_thresholds",
                                                                                calibrated_thresholds)):
            if thresholds is None:
                continue
            stats, seconds = run_station(model, verification["video"], thresholds, runs / f"watch_{speed}px_{label}",
                                         args)
            outcome = station_outcome(read_events(runs / f"watch_{speed}px_{label}" / "events.jsonl"), truth)
            same_parts = evaluate(model, stills, split="test", imgsz=IMGSZ, thresholds=thresholds, plots=False,
                                  out_dir=runs / f"eval_{speed}px_{label}")
            entry = {"station": outcome, "watch_stats": stats, "seconds": round(seconds, 1),
                     "eval_same_parts_same_thresholds": eval_rates(same_parts)}
            if label == "calibrated_thresholds":
                promise = per_speed["calibration_run"]
                entry["targets"] = {
                    "escape_within_2_points_of_calibration": within(outcome["escape_rate"],
                                                                    promise["promised_escape_rate"]),
                    "false_reject_within_2_points_of_calibration": within(outcome["false_reject_rate"],
                                                                          promise["promised_false_reject_rate"]),
                    "no_belt_events": outcome["belt_events"] == 0,
                    "one_decision_per_part": not outcome["parts_with_more_than_one_decision"]
                    and not outcome["parts_without_decision"]}
            per_speed[label] = entry
            print(f"{speed} px/frame, {label}: station escape {_pct(outcome['escape_rate'])} FRR "
                  f"{_pct(outcome['false_reject_rate'])} | eval same parts escape "
                  f"{_pct(entry['eval_same_parts_same_thresholds']['escape_rate'])} FRR "
                  f"{_pct(entry['eval_same_parts_same_thresholds']['false_reject_rate'])} | belt events "
                  f"{outcome['belt_events']}, parts with >1 decision {len(outcome['parts_with_more_than_one_decision'])}"
                  f", with none {len(outcome['parts_without_decision'])}")
        results["speeds"][str(speed)] = per_speed
    return results


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


# ---------------------------------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/line_bench"), help="Folder for data, model, videos.")
    parser.add_argument("--model", default=None, help="A trained detector (skips training).")
    parser.add_argument("--stage", choices=("model", "data", "all"), default="all")
    parser.add_argument("--train-minutes", type=float, default=27.0)
    parser.add_argument("--epochs", type=int, default=40, help="Upper bound; the time budget usually stops first.")
    parser.add_argument("--train-tiles", type=int, default=1500)
    parser.add_argument("--val-tiles", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--boards", type=int, default=60, help="Test-split boards per video (2 parts each).")
    parser.add_argument("--crop", type=int, default=320, help="Part size: native-resolution crops of this many px.")
    parser.add_argument("--frame-width", type=int, default=640)
    parser.add_argument("--frame-height", type=int, default=360)
    parser.add_argument("--speeds", type=int, nargs="+", default=[12, 24], help="Belt speeds, px per frame.")
    parser.add_argument("--gap-min", type=int, default=20)
    parser.add_argument("--gap-max", type=int, default=80)
    parser.add_argument("--lead-in", type=int, default=40, help="Frames of empty belt before the first part.")
    parser.add_argument("--flicker", type=float, default=0.05, help="Lighting gain per frame in [1-f, 1+f].")
    parser.add_argument("--target-recall", type=float, default=0.99)
    parser.add_argument("--station-imgsz", type=int, default=640, help="640 on 640x360 frames: parts at native scale.")
    parser.add_argument("--belt-frames", type=int, default=30, help="Frames the station learns the empty belt from.")
    parser.add_argument("--output", type=Path, default=None, help="Result file (default bench/results/line.json).")
    args = parser.parse_args()
    if not DEEPPCB.is_dir():
        print(f"skipped: DeepPCB not found under {SHARED_DIR}")
        return 0
    info = machine_info()
    print(machine_line(info))
    args.work.mkdir(parents=True, exist_ok=True)
    if args.stage in ("data", "all"):
        data = build_line_data(args.work, args)
        print(f"line data: {json.dumps(data['parts'])}")
        if args.stage == "data":
            return 0
    model, training = ensure_model(args.work, args)
    print(f"model {model}: {json.dumps({k: training.get(k) for k in ('seconds', 'val_map50', 'epochs_run')})}")
    if args.stage == "model":
        return 0
    started = time.perf_counter()
    results = measure(model, data, args.work, args)
    payload = {"benchmark": "line", "protocol": "CPU", "machine": info, "model": training,
               "data": {k: v for k, v in data.items() if k != "videos"},
               "videos": data["videos"], "station_imgsz": args.station_imgsz, "eval_imgsz": IMGSZ,
               "belt_frames": args.belt_frames, "target_recall": args.target_recall, **results,
               "seconds_measuring": round(time.perf_counter() - started, 1)}
    path = write_result("line", payload, args.output)
    print(f"wrote {path}")
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
