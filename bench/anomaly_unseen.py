"""Issue 16's benchmark: does the anomaly stage catch a defect class the detector never saw?

    python bench/anomaly_unseen.py                          # data, detector, anomaly models (cached in --work)
    python bench/anomaly_unseen.py --held-out scratch --work /tmp/anomaly_unseen_scratch

Generated steel parts (`yolodefect.data.synth.render_part`, 256 px, lossless PNG), one class held out (--held-out,
default ``pit``):

* Detector training data: parts with 1-3 defects dealt from the SEEN classes only (the held-out class is never
  drawn, not merely unlabelled) and good parts (--good-share of them). The detector is fine-tuned from
  weights/yolodefect-demo.pt with `yolodefect.train` (CPU protocol, the demo's short fine-tune recipe, imgsz 256,
  a wall-clock budget --train-minutes) on a class list WITHOUT the held-out class, so its class head is
  re-initialised and cannot name it. (The demo model itself saw all four steel classes: its backbone may still
  respond to the held-out class; that is the realistic starting point a user has.)
* Anomaly models (`yolodefect.anomaly.train_anomaly`) on the good parts of the detector's train split, with two
  backbones: the trained detector's best.pt and weights/yolodefect-demo.pt.
* Validation parts (new seeds): good parts and seen-class parts only (nobody has samples of a class they do not
  know about). Every operating point is chosen here: the lowest threshold whose false-reject rate on the good
  validation parts is at most 1% / 5%.
* Test parts (new seeds): good parts, parts with only seen classes, parts with only the held-out class.

Scores: the detector's part score is its highest detection confidence (any class; 0 without detections), through
the evaluator's predictor (`yolodefect.evaluation.predictors.UltralyticsPredictor`, conf floor 0.001); the anomaly
model's is its confidence (`AnomalyModel.score`, one part per call, timed). Decision rules: detector alone,
anomaly alone, and detector OR anomaly (the station's two stages). The OR rule's two thresholds are chosen
jointly on validation: the pair with the fewest seen-class escapes whose combined false-reject rate stays within
the limit; among equals, the one giving the anomaly stage the lowest threshold (the detector takes only the false
rejects it needs, the anomaly stage gets the rest of the budget). Also reported: the test-set oracle (thresholds
chosen on the test parts themselves, per defect group), image AUROC vs good test parts, training times, and
anomaly scoring ms/part (median). Writes bench/results/anomaly_unseen.json (or --output).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, machine_line, median, write_result

ROOT = Path(__file__).resolve().parents[1]
DEMO_MODEL = ROOT / "weights" / "yolodefect-demo.pt"
KIND = "steel"
GROUPS = ("good", "seen", "held_out")
LIMITS = (0.01, 0.05)  # the false-reject rates the operating points may not exceed
# The demo's fine-tune recipe (yolodefect/demo.py), with a higher lr0: here the class head starts from scratch.
FINETUNE = {"optimizer": "AdamW", "warmup_epochs": 0, "close_mosaic": 0, "verbose": False}


# ---------------------------------------------------------------------------------------------- data
def render_set(folder: Path, set_id: int, plan: list[str], args) -> list[dict]:
    """Render one part per plan entry (a group name) into FOLDER; the part list is cached as parts.json."""
    import cv2
    import numpy as np

    from yolodefect.data.synth import CLASS_NAMES, ClassDealer, render_part

    manifest = folder / "parts.json"
    if manifest.exists():
        return json.loads(manifest.read_text(encoding="utf-8"))
    folder.mkdir(parents=True, exist_ok=True)
    seen = [name for name in CLASS_NAMES[KIND] if name != args.held_out]
    plan_rng = np.random.default_rng([args.seed, set_id, 0])
    dealer = ClassDealer(seen, plan_rng)
    parts = []
    for index, group in enumerate(plan):
        count = int(plan_rng.integers(1, args.max_defects + 1))
        defects = [] if group == "good" else dealer.deal(count) if group == "seen" else [args.held_out] * count
        image, boxes = render_part(KIND, np.random.default_rng([args.seed, set_id, 1, index]),
                                   (args.part_px, args.part_px), defects)
        path = folder / f"{group}_{index:05d}.png"  # PNG: lossless, the boxes match the pixels
        cv2.imwrite(str(path), image)
        parts.append({"image": str(path), "group": group,
                      "boxes": [[box.class_name, *map(float, box.xyxy)] for box in boxes]})
    manifest.write_text(json.dumps(parts), encoding="utf-8")
    return parts


def mixed_plan(count: int, good_share: float) -> list[str]:
    """Good parts spread evenly (as the generator spreads backgrounds), seen-class parts otherwise."""
    return ["good" if math.floor((i + 1) * good_share + 1e-9) > math.floor(i * good_share + 1e-9) else "seen"
            for i in range(count)]


def detector_dataset(work: Path, args) -> Path:
    """A YOLO dataset (train + val) of good and seen-class parts; the class list leaves the held-out class out."""
    from yolodefect.data.convert import ConvertOptions, build_dataset
    from yolodefect.data.records import Box, ImageRecord, SourceDataset
    from yolodefect.data.synth import CLASS_NAMES

    out = work / "detector-data"
    if (out / "data.yaml").exists():
        return out / "data.yaml"
    records = []
    for set_id, (split, count) in enumerate((("train", args.train_images), ("val", args.detector_val_images)), 1):
        for part in render_set(work / "render" / split, set_id, mixed_plan(count, args.good_share), args):
            boxes = [Box(name, tuple(xyxy)) for name, *xyxy in part["boxes"]]
            records.append(ImageRecord(Path(part["image"]), boxes, split=split))
    seen = [name for name in CLASS_NAMES[KIND] if name != args.held_out]
    build_dataset(SourceDataset(f"steel-without-{args.held_out}", records, seen), out,
                  ConvertOptions(keep_split=True, transfer="copy"),
                  source_label=f"the steel generator without {args.held_out!r} (seed {args.seed})")
    return out / "data.yaml"


def scoring_sets(work: Path, args) -> dict[str, list[dict]]:
    """Validation (good + seen) and test (good + seen + held-out) parts, new seeds."""
    validation = ["good"] * args.good_parts + ["seen"] * args.defective_parts
    test = validation + ["held_out"] * args.defective_parts
    return {"validation": render_set(work / "render" / "validation", 3, validation, args),
            "test": render_set(work / "render" / "test", 4, test, args)}


# --------------------------------------------------------------------------------------------- models
def ensure_detector(work: Path, data: Path, args) -> tuple[Path, dict]:
    """Fine-tune the demo model on the data without the held-out class (cached in WORK/detector)."""
    from yolodefect.train import TrainOptions, train

    cached, record = work / "detector" / "best.pt", work / "detector" / "training.json"
    if cached.exists() and record.exists():
        return cached, json.loads(record.read_text(encoding="utf-8"))
    started = time.perf_counter()
    result = train(data, TrainOptions(
        model=str(DEMO_MODEL), epochs=args.epochs, imgsz=args.part_px, project=work / "runs", name="detector",
        exist_ok=True, seed=args.seed, plots=False, run_check=False, patience=args.epochs, nbs=64,
        overrides={**FINETUNE, "lr0": args.lr0, "time": args.train_minutes / 60.0}))
    seconds = time.perf_counter() - started
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(Path(result.best_model).read_bytes())
    metrics = result.evaluation.metrics
    results_csv = Path(result.run_dir) / "results.csv"
    info = {"from": "weights/yolodefect-demo.pt", "imgsz": args.part_px, "epochs_bound": args.epochs,
            "time_budget_min": args.train_minutes, "lr0": args.lr0, "recipe": FINETUNE,
            "epochs_run": max(0, len(results_csv.read_text(encoding="utf-8").strip().splitlines()) - 1)
            if results_csv.exists() else None,
            "seconds": round(seconds, 1), "val_map50": metrics.map50, "val_map50_95": metrics.map50_95,
            "per_class_ap50": {c.name: c.ap50 for c in metrics.per_class},
            "transfer_note": result.transfer_note, "run_dir": str(result.run_dir), "path": str(cached)}
    record.write_text(json.dumps(info, indent=2, default=str), encoding="utf-8")
    return cached, info


def ensure_anomaly(work: Path, data: Path, name: str, backbone: Path, args) -> tuple[Path, dict]:
    """An anomaly model on the good parts of the detector's train split, with BACKBONE (cached)."""
    from yolodefect.anomaly import AnomalyTrainOptions, train_anomaly

    cached, record = work / f"anomaly-{name}.npz", work / f"anomaly-{name}.json"
    if cached.exists() and record.exists():
        return cached, json.loads(record.read_text(encoding="utf-8"))
    result = train_anomaly(AnomalyTrainOptions(data=data, backbone=str(backbone), imgsz=args.anomaly_imgsz,
                                               out=cached, seed=args.seed))
    info = {"backbone": name, "backbone_path": str(backbone), **result.to_dict()}
    info.pop("card", None)
    info["seconds"] = round(result.seconds, 1)
    record.write_text(json.dumps(info, indent=2, default=str), encoding="utf-8")
    return cached, info


# -------------------------------------------------------------------------------------------- scoring
def detector_scores(model: Path, parts: list[dict], imgsz: int) -> tuple[list[float], list[str | None], float]:
    """Each part's highest detection confidence (0 without detections), that detection's class, and the seconds."""
    from yolodefect.evaluation.predictors import UltralyticsPredictor

    predictor = UltralyticsPredictor(model, imgsz=imgsz, batch=8)
    started = time.perf_counter()
    detections = predictor([Path(part["image"]) for part in parts])
    seconds = time.perf_counter() - started
    top = [int(d.confidence.argmax()) if len(d) else None for d in detections]
    return ([float(d.confidence[i]) if i is not None else 0.0 for d, i in zip(detections, top)],
            [predictor.class_names[int(d.class_id[i])] if i is not None else None for d, i in zip(detections, top)],
            seconds)


def anomaly_scores(model_path: Path, parts: list[dict]) -> tuple[list[float], list[float]]:
    """Each part's anomaly confidence, scored one part per call as the station does, and ms per call."""
    from yolodefect.anomaly import load_anomaly_model
    from yolodefect.data.image_file import read_image

    model = load_anomaly_model(model_path)
    model.score([read_image(Path(parts[0]["image"]))])  # warm-up: first-call allocations are not a part's cost
    confidences, milliseconds = [], []
    for part in parts:
        image = read_image(Path(part["image"]))
        started = time.perf_counter()
        result = model.score([image])[0]
        milliseconds.append(1000 * (time.perf_counter() - started))
        confidences.append(result.confidence)
    return confidences, milliseconds


# ----------------------------------------------------------------------------------- operating points
def or_operating_point(detector, anomaly, defective, limit: float) -> dict:
    """Thresholds (detector, anomaly) for "reject when either reaches its threshold" at a false-reject rate <= LIMIT.

    Every observed detector confidence (and "detector off") is tried; for each, the anomaly threshold is the lowest
    one keeping the combined false rejects within the allowance (as escape_at_false_reject_rate chooses one).
    Kept: the fewest escapes, then the lowest anomaly threshold, then the highest detector threshold.
    """
    import numpy as np

    from yolodefect.evaluation.thresholds import RECALL_TOLERANCE

    detector, anomaly = np.asarray(detector, np.float32), np.asarray(anomaly, np.float32)
    defective = np.asarray(defective, bool)
    good = ~defective
    allowed = int(np.floor(limit * good.sum() + RECALL_TOLERANCE))
    best = None
    for t_detector in [*np.unique(detector).tolist(), math.inf]:
        by_detector = detector >= np.float32(t_detector)
        remaining = allowed - int((good & by_detector).sum())
        if remaining < 0:
            continue
        left = np.sort(anomaly[good & ~by_detector])[::-1]
        if remaining >= left.size:
            t_anomaly = float(anomaly.min())
        else:
            must_pass = left[remaining]
            above = anomaly[anomaly > must_pass]
            t_anomaly = float(above.min() if above.size else np.nextafter(must_pass, np.float32(np.inf)))
        rejected = by_detector | (anomaly >= np.float32(t_anomaly))
        escapes = int((defective & ~rejected).sum())
        key = (escapes, t_anomaly, -t_detector)
        if best is None or key < best[0]:
            best = (key, t_detector, t_anomaly)
    _, t_detector, t_anomaly = best
    return {"detector": None if math.isinf(t_detector) else t_detector, "anomaly": t_anomaly}


def single_threshold(confidence, defective, limit: float) -> float:
    import numpy as np

    from yolodefect.anomaly.evaluate import escape_at_false_reject_rate

    return escape_at_false_reject_rate(np.asarray(confidence), np.asarray(defective, bool), limit).threshold_confidence


def rejected_by(rule: str, thresholds: dict, scores: dict[str, object], anomaly_name: str):
    import numpy as np

    detector = np.asarray(scores["detector"], np.float32)
    anomaly = np.asarray(scores[anomaly_name], np.float32) if anomaly_name else None
    off = np.zeros(detector.shape, bool)
    by_detector = off if thresholds.get("detector") is None else detector >= np.float32(thresholds["detector"])
    by_anomaly = off if thresholds.get("anomaly") is None else anomaly >= np.float32(thresholds["anomaly"])
    return {"detector": by_detector, "anomaly": by_anomaly, "or": by_detector | by_anomaly}[rule]


def rates_by_group(rejected, groups) -> dict:
    """False-reject rate on the good parts, escape rate on each defective group, with the counts."""
    import numpy as np

    groups = np.asarray(groups)
    out = {}
    for group in GROUPS:
        members = groups == group
        if not members.any():
            continue
        hits = int((rejected & members).sum())
        if group == "good":
            out["false_reject_rate"], out["false_rejects"] = hits / int(members.sum()), hits
        else:
            misses = int(members.sum()) - hits
            out[f"escape_rate_{group}"], out[f"escapes_{group}"] = misses / int(members.sum()), misses
    return out


def choose(rule: str, scores: dict, groups, anomaly_name: str, limit: float) -> dict:
    """The rule's thresholds at a false-reject rate <= LIMIT on the given parts (good vs all others defective)."""
    import numpy as np

    defective = np.asarray(groups) != "good"
    if rule == "detector":
        return {"detector": single_threshold(scores["detector"], defective, limit)}
    if rule == "anomaly":
        return {"anomaly": single_threshold(scores[anomaly_name], defective, limit)}
    return or_operating_point(scores["detector"], scores[anomaly_name], defective, limit)


def operating_points(scores: dict, anomaly_names: list[str]) -> list[dict]:
    """Per rule and false-reject limit: thresholds from validation measured on test, and the test oracle."""
    import numpy as np

    val_groups, test_groups = np.asarray(scores["validation"]["groups"]), np.asarray(scores["test"]["groups"])
    rules = [("detector", "")] + [(rule, name) for name in anomaly_names for rule in ("anomaly", "or")]
    rows = []
    for rule, name in rules:
        for limit in LIMITS:
            thresholds = choose(rule, scores["validation"], val_groups, name, limit)
            row = {"rule": rule, "anomaly_model": name or None, "max_false_reject_rate": limit,
                   "thresholds": thresholds,
                   "validation": rates_by_group(rejected_by(rule, thresholds, scores["validation"], name), val_groups),
                   "test": rates_by_group(rejected_by(rule, thresholds, scores["test"], name), test_groups),
                   "test_oracle": {}}
            for group in ("seen", "held_out"):
                keep = (test_groups == "good") | (test_groups == group)
                subset = {key: np.asarray(values)[keep] for key, values in scores["test"].items() if key != "groups"}
                oracle = choose(rule, subset, test_groups[keep], name, limit)
                measured = rates_by_group(rejected_by(rule, oracle, subset, name), test_groups[keep])
                row["test_oracle"][group] = {"thresholds": oracle, "false_reject_rate": measured["false_reject_rate"],
                                             "escape_rate": measured[f"escape_rate_{group}"]}
            rows.append(row)
    return rows


def aurocs(scores: dict, names: list[str]) -> dict:
    import numpy as np

    from yolodefect.anomaly.evaluate import auroc

    groups = np.asarray(scores["groups"])
    out = {}
    for name in names:
        values = np.asarray(scores[name])
        for group in ("held_out", "seen"):
            keep = (groups == "good") | (groups == group)
            out.setdefault(name, {})[f"{group}_vs_good"] = auroc(values[keep], groups[keep] == group)
    return out


# ----------------------------------------------------------------------------------------------- main
def _percent(value) -> str:
    return "  n/a" if value is None else f"{100 * value:5.1f}%"


def print_table(rows: list[dict]) -> None:
    print(f"{'rule':<26} {'FRR<=':>5} | {'test FRR':>8} {'esc seen':>8} {'esc held':>8} | "
          f"{'oracle seen':>11} {'oracle held':>11}")
    for row in rows:
        label = row["rule"] if not row["anomaly_model"] else f"{row['rule']} ({row['anomaly_model']})"
        test, oracle = row["test"], row["test_oracle"]
        print(f"{label:<26} {row['max_false_reject_rate']:5.2f} | {_percent(test['false_reject_rate']):>8} "
              f"{_percent(test['escape_rate_seen']):>8} {_percent(test['escape_rate_held_out']):>8} | "
              f"{_percent(oracle['seen']['escape_rate']):>11} {_percent(oracle['held_out']['escape_rate']):>11}")


def main() -> int:
    from yolodefect.data.synth import CLASS_NAMES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/anomaly_unseen"),
                        help="Folder for the parts, the detector and the anomaly models (all cached).")
    parser.add_argument("--held-out", choices=CLASS_NAMES[KIND], default="pit",
                        help="The steel class the detector never sees.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--part-px", type=int, default=256, help="Part side in px; also the detector's imgsz.")
    parser.add_argument("--max-defects", type=int, default=3, help="Defects per defective part: 1 to this many.")
    parser.add_argument("--train-images", type=int, default=340, help="Detector train split (good and seen-class).")
    parser.add_argument("--detector-val-images", type=int, default=60, help="Detector val split (best.pt, mAP).")
    parser.add_argument("--good-share", type=float, default=0.4,
                        help="Share of good parts in the detector's data (the anomaly model learns from these).")
    parser.add_argument("--good-parts", type=int, default=200, help="Good parts in validation and in test.")
    parser.add_argument("--defective-parts", type=int, default=100,
                        help="Parts per defective group in validation (seen) and in test (seen, held-out).")
    parser.add_argument("--epochs", type=int, default=30, help="Upper bound; the time budget usually stops first.")
    parser.add_argument("--train-minutes", type=float, default=7.0, help="Detector training wall-clock budget.")
    parser.add_argument("--lr0", type=float, default=0.001)
    parser.add_argument("--anomaly-imgsz", type=int, default=256)
    parser.add_argument("--output", type=Path, default=None, help="Result file (default bench/results/anomaly_unseen.json).")
    args = parser.parse_args()
    if args.good_parts < 50 or args.defective_parts < 50:
        parser.error("--good-parts and --defective-parts: at least 50 each (rates at 1% need parts)")

    info = machine_info()
    started = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    data = detector_dataset(args.work, args)
    sets = scoring_sets(args.work, args)
    print(f"parts: {json.dumps({name: len(parts) for name, parts in sets.items()})}, detector data {data}")

    detector, training = ensure_detector(args.work, data, args)
    print(f"detector {detector}: {json.dumps({k: training.get(k) for k in ('seconds', 'epochs_run', 'val_map50')})}")
    anomaly_models = {}
    for name, backbone in (("detector-backbone", detector), ("demo-backbone", DEMO_MODEL)):
        path, record = ensure_anomaly(args.work, data, name, backbone, args)
        anomaly_models[name] = (path, record)
        print(f"anomaly {name}: {record['seconds']} s, bank {record['bank_size']}, {record['good_images']} good images")

    scores, top_class, timing = {}, {}, {"detector_seconds_per_part": {}, "anomaly_ms_per_part": {}}
    for set_name, parts in sets.items():
        scores[set_name] = {"groups": [part["group"] for part in parts]}
        scores[set_name]["detector"], top_class[set_name], seconds = detector_scores(detector, parts, args.part_px)
        timing["detector_seconds_per_part"][set_name] = seconds / len(parts)
        for name, (path, _) in anomaly_models.items():
            scores[set_name][name], milliseconds = anomaly_scores(path, parts)
            timing["anomaly_ms_per_part"].setdefault(name, []).extend(milliseconds)
    ms_per_part = {name: {"median": round(median(values), 1), "parts": len(values)}
                   for name, values in timing["anomaly_ms_per_part"].items()}
    (args.work / "scores.json").write_text(json.dumps(scores), encoding="utf-8")

    names = list(anomaly_models)
    rows = operating_points(scores, names)
    payload = {
        "benchmark": "anomaly_unseen", "protocol": "CPU", "machine": info, "held_out": args.held_out,
        "seen_classes": [c for c in CLASS_NAMES[KIND] if c != args.held_out],
        "data": {"generator": "yolodefect.data.synth.render_part('steel', ...)", "part_px": args.part_px,
                 "max_defects": args.max_defects, "seed": args.seed, "detector_train": args.train_images,
                 "detector_val": args.detector_val_images, "good_share": args.good_share,
                 "validation": {g: scores["validation"]["groups"].count(g) for g in GROUPS},
                 "test": {g: scores["test"]["groups"].count(g) for g in GROUPS}, "work": str(args.work)},
        "detector": training,
        "anomaly_models": {name: record for name, (_, record) in anomaly_models.items()},
        "image_auroc_test": aurocs(scores["test"], ["detector", *names]),
        "anomaly_ms_per_part": ms_per_part,
        # What the detector calls the parts it has no class for: its top detection's class per test group.
        "detector_top_class_test": {group: dict(Counter(str(c) for c, g in zip(top_class["test"], scores["test"]["groups"])
                                                        if g == group)) for group in GROUPS},
        "detector_ms_per_part_batched": {k: round(1000 * v, 1) for k, v in timing["detector_seconds_per_part"].items()},
        "operating_points": rows,
        "seconds_total": round(time.perf_counter() - started, 1),
    }
    print_table(rows)
    print(f"image AUROC (test): {json.dumps(payload['image_auroc_test'])}")
    print(f"anomaly ms/part (median): {json.dumps(ms_per_part)}")
    print(f"detector's top class on test parts: {json.dumps(payload['detector_top_class_test'])}")
    path = write_result("anomaly_unseen", payload, args.output)
    print(f"wrote {path}")
    print(machine_line(info))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
