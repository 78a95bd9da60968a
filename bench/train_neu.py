"""NEU-DET training benchmark, CPU protocol: plain Ultralytics vs `yolodefect train`, one run.

    python bench/train_neu.py                       # yolo11n.yaml from scratch, imgsz 256, 30 epochs
    python bench/train_neu.py --model ../shared/weights/fall-detection-yolov8s.pt --name train_neu_transfer

Converts ../shared/datasets/neu-det with our converter (seeded split, written into the result),
trains the plain call `YOLO(model).train(data, imgsz, epochs, batch=16, seed)` with Ultralytics'
defaults and then `yolodefect train` with our presets on the same split and budget, and scores
both best models with THE evaluator on val and test. Writes bench/results/NAME.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import SHARED_DIR, machine_info, machine_line, write_result  # noqa: E402


def score(model: Path, data: Path, imgsz: int) -> dict:
    from yolodefect.evaluate import evaluate

    scores = {}
    for split in ("val", "test"):
        metrics = evaluate(model, data, split=split, imgsz=imgsz, plots=False).metrics
        scores[split] = {"map50": metrics.map50, "map50_95": metrics.map50_95,
                         "per_class_ap50": {c.name: c.ap50 for c in metrics.per_class}}
    return scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="yolo11n.yaml")
    parser.add_argument("--imgsz", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", default="0.8,0.1,0.1")
    parser.add_argument("--name", default="train_neu")
    parser.add_argument("--work", type=Path, default=None, help="Folder for the dataset and runs (default: a temp dir).")
    args = parser.parse_args()
    if not (SHARED_DIR / "datasets" / "neu-det").is_dir():
        print(f"skipped: NEU-DET not found under {SHARED_DIR}")
        return 0
    from ultralytics import YOLO

    from yolodefect.data.convert import ConvertOptions, convert
    from yolodefect.train import TrainOptions, train

    info = machine_info()
    print(machine_line(info))
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-neu-"))
    data = work / "neu-yolo"
    if not (data / "data.yaml").exists():
        convert(SHARED_DIR / "datasets" / "neu-det", data, ConvertOptions(format="voc", split=args.split, seed=args.seed))
    data_yaml = data / "data.yaml"
    model_arg = str(Path(args.model).resolve()) if Path(args.model).exists() else args.model

    started = time.perf_counter()
    plain = YOLO(model_arg)
    plain.train(data=str(data_yaml), imgsz=args.imgsz, epochs=args.epochs, batch=16, seed=args.seed,
                project=str(work / "runs"), name="plain", exist_ok=True)
    plain_seconds = time.perf_counter() - started
    plain_best = Path(plain.trainer.best)

    started = time.perf_counter()
    ours = train(data, TrainOptions(model=model_arg, imgsz=args.imgsz, epochs=args.epochs, seed=args.seed,
                                    project=work / "runs", name="ours", exist_ok=True))
    ours_seconds = time.perf_counter() - started

    plain_scores, ours_scores = score(plain_best, data_yaml, args.imgsz), score(ours.best_model, data_yaml, args.imgsz)
    ratio = {split: {key: (ours_scores[split][key] / plain_scores[split][key]) if plain_scores[split][key] else None
                     for key in ("map50", "map50_95")} for split in ("val", "test")}
    payload = {
        "benchmark": args.name, "protocol": "CPU", "machine": info, "model": args.model, "imgsz": args.imgsz,
        "epochs": args.epochs, "seed": args.seed, "split": {"fractions": args.split, "seed": args.seed,
                                                             "images": {s: v.images for s, v in _splits(data).items()}},
        "plain_ultralytics": {"call": f"YOLO({args.model!r}).train(data, imgsz={args.imgsz}, epochs={args.epochs}, "
                                      f"batch=16, seed={args.seed})", "seconds": round(plain_seconds, 1), **plain_scores},
        "yolodefect": {"presets": [{"key": p.key, "value": p.value, "reason": p.reason} for p in ours.presets],
                       "seconds": round(ours_seconds, 1), **ours_scores},
        "ratio_ours_over_plain": ratio,
        "evaluator": "yolodefect.evaluate (faster-coco-eval), same for both",
    }
    path = write_result(args.name, payload)
    for split in ("val", "test"):
        p, o, r = plain_scores[split], ours_scores[split], ratio[split]
        print(f"{split}: plain mAP50 {_f(p['map50'])} mAP50-95 {_f(p['map50_95'])} | ours mAP50 {_f(o['map50'])} "
              f"mAP50-95 {_f(o['map50_95'])} | ratio {_f(r['map50'])} / {_f(r['map50_95'])}")
    print(f"wall time: plain {plain_seconds / 60:.1f} min, ours {ours_seconds / 60:.1f} min; wrote {path}")
    return 0


def _f(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _splits(data: Path):
    from yolodefect.data.check import check_dataset

    return check_dataset(data).splits


if __name__ == "__main__":
    raise SystemExit(main())
