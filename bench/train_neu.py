"""NEU-DET training benchmark, CPU protocol: plain Ultralytics vs `yolodefect train`, one run.

    python bench/train_neu.py                       # yolo11n.yaml from scratch, imgsz 256, 30 epochs
    python bench/train_neu.py --model ../shared/weights/fall-detection-yolov8s.pt --name train_neu_transfer
    python bench/train_neu.py --act relu --name train_neu_relu   # ours with ReLU only, beside train_neu.json's SiLU

Converts ../shared/datasets/neu-det with our converter (seeded split, written into the result),
trains the plain call `YOLO(model).train(data, imgsz, epochs, batch=16, seed)` with Ultralytics'
defaults and then `yolodefect train` with our presets on the same split and budget, and scores
both best models with THE evaluator on val and test. Writes bench/results/NAME.json.

With --act, only `yolodefect train --act ACT` runs (same split, budget and presets), and the result
sets it beside the SiLU `yolodefect` side of bench/results/train_neu.json (named with its commit and
date): what the INT8-friendly activation costs in accuracy.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import RESULTS_DIR, SHARED_DIR, machine_info, machine_line, write_result  # noqa: E402
from scoring import score_val_test  # noqa: E402

BASELINE = RESULTS_DIR / "train_neu.json"  # the SiLU protocol run --act is compared with


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="yolo11n.yaml")
    parser.add_argument("--imgsz", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", default="0.8,0.1,0.1")
    parser.add_argument("--name", default="train_neu")
    parser.add_argument("--work", type=Path, default=None, help="Folder for the dataset and runs (default: a temp dir).")
    parser.add_argument("--act", choices=["relu", "silu"], default=None,
                        help="Train only ours with this activation and compare with train_neu.json's SiLU side.")
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
    if args.act:
        return run_activation(args, data, model_arg, info)

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

    plain_scores = score_val_test(plain_best, data_yaml, args.imgsz)
    ours_scores = score_val_test(ours.best_model, data_yaml, args.imgsz)
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


def run_activation(args, data: Path, model_arg: str, info: dict) -> int:
    """`yolodefect train --act` alone, on the protocol of train_neu.json, set beside that file's SiLU numbers."""
    from yolodefect.train import TrainOptions, train

    baseline = json.loads(BASELINE.read_text(encoding="utf-8"))
    splits = {s: v.images for s, v in _splits(data).items()}
    same = {"model": args.model, "imgsz": args.imgsz, "epochs": args.epochs, "seed": args.seed}
    differs = {key: (value, baseline.get(key)) for key, value in same.items() if baseline.get(key) != value}
    if baseline["split"]["images"] != splits:
        differs["split"] = (splits, baseline["split"]["images"])
    if differs:
        print(f"warning: protocol differs from {BASELINE.name} (ours, theirs): {differs}")
    started = time.perf_counter()
    ours = train(data, TrainOptions(model=model_arg, imgsz=args.imgsz, epochs=args.epochs, seed=args.seed,
                                    act=args.act, project=data.parent / "runs",
                                    name=f"ours-{args.act}", exist_ok=True))
    seconds = time.perf_counter() - started
    scores = score_val_test(ours.best_model, data / "data.yaml", args.imgsz)
    presets = [{"key": p.key, "value": p.value, "reason": p.reason} for p in ours.presets]
    silu_presets = baseline["yolodefect"]["presets"]
    silu = {split: baseline["yolodefect"][split] for split in ("val", "test")}
    delta = {split: {key: scores[split][key] - silu[split][key] for key in ("map50", "map50_95")}
             for split in ("val", "test")}
    payload = {
        "benchmark": args.name, "protocol": "CPU", "machine": info, "model": args.model, "imgsz": args.imgsz,
        "epochs": args.epochs, "seed": args.seed,
        "split": {"fractions": args.split, "seed": args.seed, "images": splits},
        "question": f"what does `yolodefect train --act {args.act}` (INT8-friendly) cost in accuracy against "
                    "Ultralytics' SiLU, on the same protocol?",
        "silu": {"source": f"bench/results/{BASELINE.name}, its 'yolodefect' side (commit "
                           f"{baseline['machine'].get('commit')}, {baseline['machine'].get('date')}; file last "
                           f"committed {_last_commit(BASELINE)})",
                 "machine": baseline["machine"],  # training on another CPU can follow another path
                 "presets": silu_presets, "seconds": baseline["yolodefect"].get("seconds"), **silu},
        args.act: {"presets": presets, "preset_changes_vs_silu": preset_changes(presets, silu_presets),
                   "seconds": round(seconds, 1),
                   "best_model": str(ours.best_model), **scores},
        f"delta_{args.act}_minus_silu": delta,
        "evaluator": "yolodefect.evaluate (faster-coco-eval), same as train_neu.json",
    }
    path = write_result(args.name, payload)
    for split in ("val", "test"):
        s, o = silu[split], scores[split]
        print(f"{split}: SiLU mAP50 {_f(s['map50'])} mAP50-95 {_f(s['map50_95'])} | {args.act} mAP50 "
              f"{_f(o['map50'])} mAP50-95 {_f(o['map50_95'])}")
    print(f"wall time {seconds / 60:.1f} min; best model {ours.best_model}; wrote {path}")
    return 0


def preset_changes(presets: list[dict], baseline: list[dict]) -> dict:
    """Which presets differ from the baseline run's: a value (what trains differently) or only the reason text."""
    ours, theirs = ({p["key"]: p for p in group} for group in (presets, baseline))
    return {
        "value_changed": {key: {"now": ours[key]["value"], "baseline": theirs[key]["value"]} for key in ours
                          if key in theirs and ours[key]["value"] != theirs[key]["value"]},
        "added": [ours[key] for key in ours if key not in theirs],
        "removed": [theirs[key] for key in theirs if key not in ours],
        "reason_only_changed": {key: {"now": ours[key]["reason"], "baseline": theirs[key]["reason"]} for key in ours
                                if key in theirs and ours[key]["value"] == theirs[key]["value"]
                                and ours[key]["reason"] != theirs[key]["reason"]},
    }


def _last_commit(path: Path) -> str:
    try:
        return subprocess.run(["git", "log", "-1", "--format=%h %cI", "--", str(path)], cwd=path.parent,
                              capture_output=True, text=True, check=True).stdout.strip() or "uncommitted"
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _f(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _splits(data: Path):
    from yolodefect.data.check import check_dataset

    return check_dataset(data).splits


if __name__ == "__main__":
    raise SystemExit(main())
