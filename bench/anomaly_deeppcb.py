"""Issue 16's benchmark: the anomaly model learned from DeepPCB's defect-free templates, alone and beside the detector.

    python bench/anomaly_deeppcb.py --work /tmp/anomaly_deeppcb --detector /tmp/line_bench/model/best.pt

DeepPCB (../shared/datasets/deeppcb) is converted with ``yolodefect convert --include-templates`` (the official
split: trainval -> train/val, test -> test). The anomaly model trains on the train split's templates only (its
defect-free images) with ``yolodefect.anomaly.train_anomaly``, once per backbone and image size; it is measured with
``yolodefect.anomaly.evaluate.evaluate_anomaly`` on the test split: the tested images (defective) and their templates
(good). torchvision's ImageNet backbones are tried and reported as unavailable when their weights cannot be
downloaded (this machine is offline).

The combination: the detector (``--detector``, trained by ``yolodefect train`` on DeepPCB; bench/line.py trains
it: CPU protocol, 320 px tiles, imgsz 320) scores each test image at native scale (imgsz 640 on 640 px images,
confidence floor 0.001; part score = its highest detection confidence). Escape rates are compared at the same
false-reject rate on the same test parts: the detector alone, the anomaly model alone, and detector OR anomaly
(the best pair of thresholds whose combined false-reject rate stays within the limit). Also reported: the same
with thresholds chosen on the val split and measured on test (what a user would get).
Writes bench/results/anomaly_deeppcb.json (or --output).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import SHARED_DIR, machine_info, machine_line, median, write_result

ROOT = Path(__file__).resolve().parents[1]
DEEPPCB = SHARED_DIR / "datasets" / "deeppcb"
DEMO = ROOT / "weights" / "yolodefect-demo.pt"
FALL = SHARED_DIR / "weights" / "fall-detection-yolov8s.pt"
LIMITS = (0.01, 0.05)
TIMING_IMAGES = 30


def converted(work: Path) -> Path:
    from yolodefect.data.convert import ConvertOptions, convert

    out = work / "deeppcb"
    if not (out / "data.yaml").exists():
        convert(DEEPPCB, out, ConvertOptions(include_templates=True))
    return out / "data.yaml"


def labelled(data_yaml: Path, split: str) -> tuple[list[Path], np.ndarray]:
    """(images, defective) of a split: defective = a non-empty label file."""
    from yolodefect.data.yolo_dataset import label_path_for, load_data_config

    images = load_data_config(data_yaml).images(split)
    defective = np.array([label_path_for(p).is_file() and bool(label_path_for(p).read_text().strip()) for p in images])
    return images, defective


def escape_at(good: np.ndarray, bad: np.ndarray, limit: float) -> tuple[float, float]:
    """Lowest escape rate with FRR <= limit for 'reject when score >= t'; returns (escape, threshold)."""
    allowed = int(np.floor(limit * len(good) + 1e-9))
    ordered = np.sort(good)[::-1]
    threshold = np.nextafter(ordered[allowed], np.inf) if allowed < len(ordered) else -np.inf
    return float(np.mean(bad < threshold)), float(threshold)


def combined_escape_at(det: tuple[np.ndarray, np.ndarray], ano: tuple[np.ndarray, np.ndarray],
                       limit: float) -> tuple[float, float, float]:
    """Best (escape, t_det, t_ano) for 'reject when det >= t_det OR ano >= t_ano' with FRR <= limit."""
    (det_good, det_bad), (ano_good, ano_bad) = det, ano
    allowed = int(np.floor(limit * len(det_good) + 1e-9))
    best = (2.0, np.inf, np.inf)
    for t_ano in np.concatenate([[np.inf], np.unique(ano_good) + 1e-9]):
        rejected_by_ano = ano_good >= t_ano
        if rejected_by_ano.sum() > allowed:
            continue
        rest = np.sort(det_good[~rejected_by_ano])[::-1]
        budget = allowed - int(rejected_by_ano.sum())
        t_det = np.nextafter(rest[budget], np.inf) if budget < len(rest) else -np.inf
        escape = float(np.mean((det_bad < t_det) & (ano_bad < t_ano)))
        if escape < best[0]:
            best = (escape, float(t_det), float(t_ano))
    return best


def rates_at(det_t: float, ano_t: float, det: np.ndarray, ano: np.ndarray, defective: np.ndarray) -> dict:
    rejected = (det >= det_t) | (ano >= ano_t)
    return {"escape_rate": float(np.mean(~rejected[defective])), "false_reject_rate": float(np.mean(rejected[~defective]))}


def detector_scores(model: Path, images: list[Path], imgsz: int) -> np.ndarray:
    from yolodefect.evaluation.predictors import UltralyticsPredictor

    predictions = UltralyticsPredictor(model, imgsz=imgsz, conf=0.001)(images)
    return np.array([float(p.confidence.max()) if len(p) else 0.0 for p in predictions])


def anomaly_confidences(scores_csv: Path, images: list[Path]) -> np.ndarray:
    with scores_csv.open(newline="") as handle:
        rows = {row["image"]: float(row["confidence"]) for row in csv.DictReader(handle)}
    return np.array([rows[p.name] if p.name in rows else rows[str(p)] for p in images])


def score_rules(scores_csv: Path) -> dict:
    """Image AUROC of each score rule from one scoring pass: PatchCore's plain maximum is score + baseline."""
    from yolodefect.anomaly.evaluate import auroc

    with scores_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    defective = np.array([row["defective"] == "1" for row in rows])
    score = np.array([float(row["score"]) for row in rows])
    baseline = np.array([float(row.get("baseline") or 0.0) for row in rows])
    return {"peak": round(auroc(score + baseline, defective), 4), "peak_over_p90": round(auroc(score, defective), 4)}


def run_backbone(data_yaml: Path, work: Path, backbone: str, imgsz: int, max_bank: int) -> dict:
    from yolodefect.anomaly import AnomalyTrainOptions, load_anomaly_model, train_anomaly
    from yolodefect.anomaly.evaluate import evaluate_anomaly
    from yolodefect.data.image_file import read_image
    from yolodefect.errors import YoloDefectError

    name = Path(backbone).stem if backbone.endswith(".pt") else backbone
    model_path = work / "models" / f"{name}_{imgsz}.npz"
    row: dict = {"backbone": backbone, "backbone_name": name, "imgsz": imgsz}
    try:
        if model_path.exists():
            model = load_anomaly_model(model_path)
            row["train_seconds"] = model.card.get("train_seconds")
        else:
            started = time.perf_counter()
            result = train_anomaly(AnomalyTrainOptions(data=data_yaml, backbone=backbone, imgsz=imgsz,
                                                       max_bank=max_bank, out=model_path))
            model, row["train_seconds"] = result.model, round(time.perf_counter() - started, 1)
    except YoloDefectError as error:
        row["unavailable"] = str(error)
        print(f"{name}: unavailable: {error}", flush=True)
        return row
    card = model.card
    row.update(good_images=card["good_images"], holdout_images=card["holdout_images"], bank_size=card["bank_size"],
               bank_mb=round(card["bank_bytes"] / 1e6, 2), feature_dim=card["feature_dim"])
    test_images, _ = labelled(data_yaml, "test")
    timings = []
    for path in test_images[:TIMING_IMAGES]:
        image = read_image(path)
        started = time.perf_counter()
        model.score([image])
        timings.append((time.perf_counter() - started) * 1000.0)
    row["score_ms_median"] = round(median(timings), 1)
    for split in ("val", "test"):
        out_dir = work / "eval" / f"{name}_{imgsz}_{split}"
        if not (out_dir / "metrics.json").exists():
            evaluate_anomaly(model, data_yaml, split=split, out_dir=out_dir, plots=split == "test")
        if split == "test":
            metrics = json.loads((out_dir / "metrics.json").read_text())
            row.update(image_auroc=metrics["image_auroc"], pixel_auroc=metrics["pixel_auroc"],
                       at_false_reject_rate=metrics["at_false_reject_rate"], eval_dir=str(out_dir))
        row.setdefault("score_rules", {})[split] = score_rules(out_dir / "scores.csv")
        row[f"{split}_scores"] = str(out_dir / "scores.csv")
    print(f"{name} {imgsz}px: image AUROC {row.get('image_auroc')}, pixel AUROC {row.get('pixel_auroc')}, "
          f"{row['score_ms_median']} ms/image, bank {row['bank_size']}", flush=True)
    return row


def scoring_time_by_bank(model_path: Path, images: list[Path], sizes: tuple[int, ...]) -> list[dict]:
    """Median ms to score one image with the first N patches of the bank (a prefix of a greedy coreset is one)."""
    from yolodefect.anomaly import AnomalyModel, load_anomaly_model
    from yolodefect.data.image_file import read_image

    model = load_anomaly_model(model_path)
    pictures = [read_image(p) for p in images]
    rows = []
    for size in sizes:
        if size > len(model.bank):
            continue
        smaller = AnomalyModel(model.backbone, model.bank[:size], model.card)
        smaller.score(pictures[:2])  # warm-up
        timings = []
        for picture in pictures:
            started = time.perf_counter()
            smaller.score([picture])
            timings.append((time.perf_counter() - started) * 1000.0)
        rows.append({"bank_size": size, "bank_mb": round(smaller.bank_bytes / 1e6, 2), "imgsz": model.imgsz,
                     "score_ms_median": round(median(timings), 1)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/anomaly_deeppcb"))
    parser.add_argument("--detector", type=Path, default=Path("/tmp/line_bench/model/best.pt"),
                        help="DeepPCB detector trained by yolodefect train (bench/line.py --stage model)")
    parser.add_argument("--detector-imgsz", type=int, default=640)
    parser.add_argument("--detector-trained-by", default="bench/line.py --stage model (yolodefect train, CPU protocol, "
                        "320 px DeepPCB tiles)", help="How --detector was trained, for the result file.")
    parser.add_argument("--runs", default="demo:256,demo:640,detector:640,fall:256,resnet18:640,wide_resnet50_2:640",
                        help="backbone:imgsz pairs; backbone demo, fall, detector, resnet18, wide_resnet50_2 or a .pt")
    parser.add_argument("--max-bank", type=int, default=10_000)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    if not DEEPPCB.is_dir():
        sys.exit(f"DeepPCB not found at {DEEPPCB}")
    args.work.mkdir(parents=True, exist_ok=True)
    data_yaml = converted(args.work)
    named = {"demo": str(DEMO), "fall": str(FALL), "detector": str(args.detector)}
    rows = []
    for run in args.runs.split(","):
        backbone, imgsz = run.rsplit(":", 1)
        rows.append(run_backbone(data_yaml, args.work, named.get(backbone, backbone), int(imgsz), args.max_bank))
    usable = [r for r in rows if r.get("image_auroc") is not None]
    best = max(usable, key=lambda r: r["image_auroc"])

    test_images, test_defective = labelled(data_yaml, "test")
    val_images, val_defective = labelled(data_yaml, "val")
    started = time.perf_counter()
    det_test = detector_scores(args.detector, test_images, args.detector_imgsz)
    det_val = detector_scores(args.detector, val_images, args.detector_imgsz)
    detector_ms = (time.perf_counter() - started) * 1000.0 / (len(test_images) + len(val_images))
    ano_test = anomaly_confidences(Path(best["test_scores"]), test_images)
    ano_val = anomaly_confidences(Path(best["val_scores"]), val_images)

    def split(values: np.ndarray, defective: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return values[~defective], values[defective]

    combination = []
    for limit in LIMITS:
        det_escape, det_t = escape_at(*split(det_test, test_defective), limit)
        ano_escape, ano_t = escape_at(*split(ano_test, test_defective), limit)
        both_escape, both_det_t, both_ano_t = combined_escape_at(split(det_test, test_defective),
                                                                 split(ano_test, test_defective), limit)
        # What a user gets: thresholds chosen on val at the limit, measured on test.
        _, det_vt = escape_at(*split(det_val, val_defective), limit)
        _, ano_vt = escape_at(*split(ano_val, val_defective), limit)
        _, both_vdt, both_vat = combined_escape_at(split(det_val, val_defective), split(ano_val, val_defective), limit)
        combination.append({
            "false_reject_limit": limit,
            "on_test": {"detector": det_escape, "anomaly": ano_escape, "detector_or_anomaly": both_escape,
                        "thresholds": {"detector": det_t, "anomaly": ano_t,
                                       "combined": {"detector": both_det_t, "anomaly": both_ano_t}}},
            "chosen_on_val": {"detector": rates_at(det_vt, np.inf, det_test, ano_test, test_defective),
                              "anomaly": rates_at(np.inf, ano_vt, det_test, ano_test, test_defective),
                              "detector_or_anomaly": rates_at(both_vdt, both_vat, det_test, ano_test, test_defective)},
        })
        print(f"FRR <= {limit:.0%}: escapes detector {det_escape:.1%}, anomaly {ano_escape:.1%}, "
              f"detector OR anomaly {both_escape:.1%}", flush=True)

    demo_256 = next((r for r in rows if r["backbone"] == str(DEMO) and r["imgsz"] == 256 and "unavailable" not in r),
                    None)
    by_bank = (scoring_time_by_bank(args.work / "models" / "yolodefect-demo_256.npz", test_images[:TIMING_IMAGES],
                                    (1024, 2048, 4096, 10_000)) if demo_256 else [])
    for row in by_bank:
        print(f"bank {row['bank_size']}: {row['score_ms_median']} ms per {row['imgsz']} px image", flush=True)
    payload = {
        "benchmark": "anomaly_deeppcb", "protocol": "CPU", "machine": machine_info(),
        "data": {"source": str(DEEPPCB), "train_templates": best.get("good_images", 0) + best.get("holdout_images", 0),
                 "test_defective": int(test_defective.sum()), "test_good": int((~test_defective).sum()),
                 "val_defective": int(val_defective.sum()), "val_good": int((~val_defective).sum())},
        "backbones": rows, "best": {"backbone": best["backbone_name"], "imgsz": best["imgsz"]},
        "detector": {"path": str(args.detector), "imgsz": args.detector_imgsz, "ms_per_image": round(detector_ms, 1),
                     "trained_by": args.detector_trained_by},
        "combination": combination,
        "scoring_time_by_bank_size": by_bank,
    }
    path = write_result("anomaly_deeppcb", payload, args.output)
    print(machine_line(payload["machine"]))
    print("RESULT anomaly_deeppcb " + json.dumps({
        "best": f"{best['backbone_name']}@{best['imgsz']}", "image_auroc": round(best["image_auroc"], 4),
        "escape_detector_frr1": combination[0]["on_test"]["detector"],
        "escape_detector_or_anomaly_frr1": combination[0]["on_test"]["detector_or_anomaly"]}))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
