"""Issue 20 item 4: wall time to a target val mAP50 on a CPU, plain Ultralytics vs `yolodefect train`, one run.

    python bench/train_time_to_map.py --work DIR [--target 0.5] [--epochs 30] [--sides plain,ours]

NEU-DET, CPU protocol of bench/train_neu.py (yolo11n.yaml from scratch, 256 px, seed-0 split 0.8/0.1/0.1, batch
16, a 30-epoch schedule). The sides run one after the other, each with every core, as a user would train:

- ``plain``: ``YOLO("yolo11n.yaml").train(data, imgsz=256, epochs=30, batch=16, seed=0)``;
- ``ours``: ``yolodefect train`` with its presets (on a CPU: every core, where Ultralytics takes cores - 1; with
  native bfloat16: bf16 autocast and channels_last, yolodefect/cpu_training.py; from scratch: a weight update every
  batch);
- ``ours_fp32``: ours with ``--set amp=fp32``, to tell the precision's share from the other presets'.

Each epoch's end is timed from the start of the ``train`` call, beside Ultralytics' own val mAP50 of that epoch (the
validator our evaluator agrees with). A side stops at the end of the epoch that first reaches ``--target`` unless
``--full``; with ``--full`` it trains the whole schedule and its best model is scored on val and test by THE
evaluator (the 30-epoch result). Writes bench/results/NAME.json (default train_time_to_map.json).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import SHARED_DIR, machine_info, machine_line, write_result  # noqa: E402
from scoring import score_val_test  # noqa: E402

SIDES = ("plain", "ours", "ours_fp32")
MAP50 = "metrics/mAP50(B)"


class EpochLog:
    """Ultralytics callbacks: seconds since the train call and val mAP50 at each epoch's end; stops at the target."""

    def __init__(self, target: float, stop_at_target: bool) -> None:
        self.target, self.stop_at_target = target, stop_at_target
        self.started = time.perf_counter()
        self.epochs: list[dict] = []
        self.done = False

    def epoch_end(self, trainer) -> None:
        if self.done:  # Ultralytics' final validation of best.pt fires this event once more
            return
        map50 = float(trainer.metrics.get(MAP50, 0.0))
        self.epochs.append({"epoch": trainer.epoch + 1, "seconds": round(time.perf_counter() - self.started, 1),
                            "val_map50": round(map50, 4)})
        if self.stop_at_target and map50 >= self.target:
            trainer.stop = True
        self.done = bool(trainer.stop)  # set before this event on the last epoch (schedule end, patience, time)

    def reached(self) -> dict | None:
        return next((row for row in self.epochs if row["val_map50"] >= self.target), None)


def run_side(side: str, data: Path, work: Path, args) -> dict:
    from ultralytics import YOLO

    from yolodefect.train import TrainOptions, train

    log = EpochLog(args.target, stop_at_target=not args.full)
    callbacks = {"on_fit_epoch_end": [log.epoch_end]}
    presets = None
    if side == "plain":
        model = YOLO("yolo11n.yaml")
        for event, functions in callbacks.items():
            for function in functions:
                model.add_callback(event, function)
        log.started = time.perf_counter()
        model.train(data=str(data / "data.yaml"), imgsz=args.imgsz, epochs=args.epochs, batch=16, seed=args.seed,
                    project=str(work / "runs"), name=side, exist_ok=True)
        best = Path(model.trainer.best)
    else:
        overrides = {"amp": "fp32"} if side == "ours_fp32" else {}
        log.started = time.perf_counter()
        result = train(data, TrainOptions(model="yolo11n.yaml", imgsz=args.imgsz, epochs=args.epochs, seed=args.seed,
                                          project=work / "runs", name=side, exist_ok=True, overrides=overrides),
                       callbacks=callbacks)
        best = result.best_model
        presets = [{"key": p.key, "value": p.value, "reason": p.reason} for p in result.presets]
    row = {"seconds_total": round(time.perf_counter() - log.started, 1), "epochs": log.epochs,
           "reached": log.reached(), "presets": presets, "best_model": str(best)}
    if args.full:
        row.update(score_val_test(best, data / "data.yaml", args.imgsz))
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=None, help="Folder for the dataset and runs (default: temp).")
    parser.add_argument("--target", type=float, default=0.5, help="Val mAP50 to reach (Ultralytics' per-epoch val).")
    parser.add_argument("--epochs", type=int, default=30, help="The schedule's length (a side may stop earlier).")
    parser.add_argument("--imgsz", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sides", default="plain,ours", help=f"Comma-separated, of {', '.join(SIDES)}.")
    parser.add_argument("--full", action="store_true", help="Train every side for all epochs and score it.")
    parser.add_argument("--name", default="train_time_to_map")
    args = parser.parse_args()
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    if set(sides) - set(SIDES):
        parser.error(f"unknown sides {sorted(set(sides) - set(SIDES))}")
    if not (SHARED_DIR / "datasets" / "neu-det").is_dir():
        print(f"skipped: NEU-DET not found under {SHARED_DIR}")
        return 0
    from yolodefect.data.check import check_dataset
    from yolodefect.data.convert import ConvertOptions, convert

    info = machine_info()
    print(machine_line(info))
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-ttm-"))
    data = work / "neu-yolo"
    if not (data / "data.yaml").exists():
        convert(SHARED_DIR / "datasets" / "neu-det", data, ConvertOptions(format="voc", split="0.8,0.1,0.1",
                                                                         seed=args.seed))
    results = {}
    for side in sides:
        results[side] = run_side(side, data, work, args)
        reached = results[side]["reached"]
        print(f"{side}: " + (f"val mAP50 {reached['val_map50']:.3f} >= {args.target} at epoch {reached['epoch']}, "
                             f"{reached['seconds']:.0f} s" if reached else f"never reached {args.target}"), flush=True)
    plain_reached = results.get("plain", {}).get("reached")
    ratios = {side: round(plain_reached["seconds"] / results[side]["reached"]["seconds"], 3)
              for side in sides if side != "plain" and plain_reached and results[side]["reached"]}
    payload = {
        "benchmark": args.name, "protocol": "CPU", "machine": info, "model": "yolo11n.yaml", "imgsz": args.imgsz,
        "epochs_schedule": args.epochs, "seed": args.seed, "batch": 16, "target_val_map50": args.target,
        "full": args.full,
        "split": {"fractions": "0.8,0.1,0.1", "seed": args.seed,
                  "images": {s: v.images for s, v in check_dataset(data).splits.items()}},
        "question": f"wall time to val mAP50 {args.target}: ours at most half of plain Ultralytics'?",
        "sides": results, "speedup_to_target_over_plain": ratios,
        "timing": "from the train call to the end of the epoch (its validation included) that first reached the "
                  "target; sides one after the other with all cores",
        "map_source": "per epoch: Ultralytics' validator (mAP50 agrees with yolodefect.evaluate); with --full the "
                      "best models scored by yolodefect.evaluate on val and test",
    }
    path = write_result(args.name, payload)
    print(f"time to val mAP50 {args.target}, speed-up over plain: {ratios}; wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
