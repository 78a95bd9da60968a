"""Issue 20 item 5: which `yolodefect train` preset hurts fine-tuning? NEU-DET transfer, CPU protocol, one run.

    python bench/train_transfer_ablation.py --work DIR [--epochs 10] [--parallel 2]

The transfer protocol of bench/train_neu.py (../shared/weights/fall-detection-yolov8s.pt, 256 px, seed-0 split
0.8/0.1/0.1, batch 16) with these sides, each trained in its own process, ``--parallel`` at a time with the cores
shared out evenly (so the sides of one run saw the same machine):

- ``plain``: ``YOLO(ckpt).train(data, imgsz, epochs, batch=16, seed)``, Ultralytics' defaults;
- ``ours``: ``yolodefect train`` as it is when run (the result lists the presets each side had);
- ``ours_flipud``: ``yolodefect train --flipud 0.5``, the vertical flips the presets used to apply;
- ``ours_nbs16``: ``yolodefect train --flipud 0.5 --nbs 16``, plus the every-batch update the presets used to apply
  here too;
- ``plain_nbs16``: plain with only ``nbs=16`` (the one preset alone), with ``--sides`` adding it.

On 2026-11-30 "ours" was plain + flipud 0.5 + no hue/saturation shift + nbs 16; the sides above isolate the two
presets that are no fine-tuning default since. ``--reuse`` keeps the sides already trained in ``--work`` (their
SIDE.json) and trains only the others, so a side can be retrained after a preset changed while the others keep their
run; every side is trained with one thread (``threads_per_side`` in the result), so reused and new runs do the same
arithmetic. Every best model is scored on val and test by THE evaluator. Per-epoch training losses and Ultralytics' val mAP50 come from each run's
results.csv. Writes bench/results/NAME.json (default train_neu_transfer.json: the transfer row of the training
benchmark).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import SHARED_DIR, machine_info, machine_line, write_result  # noqa: E402
from scoring import score_val_test  # noqa: E402

CHECKPOINT = SHARED_DIR / "weights" / "fall-detection-yolov8s.pt"
SIDES = ("plain", "ours", "ours_flipud", "ours_nbs16", "plain_nbs16")
DEFAULT_SIDES = "plain,ours,ours_flipud,ours_nbs16"


def train_side(side: str, data: Path, runs: Path, args) -> dict:
    """Train one side in this process; returns its seconds, best model, presets and epoch curve."""
    from ultralytics import YOLO

    from yolodefect.train import TrainOptions, train

    started = time.perf_counter()
    presets = None
    if side.startswith("plain"):
        extra = {"nbs": 16} if side == "plain_nbs16" else {}
        model = YOLO(str(CHECKPOINT))
        model.train(data=str(data / "data.yaml"), imgsz=args.imgsz, epochs=args.epochs, batch=16, seed=args.seed,
                    project=str(runs), name=side, exist_ok=True, **extra)
        best, run_dir = Path(model.trainer.best), Path(model.trainer.save_dir)
    else:
        result = train(data, TrainOptions(model=str(CHECKPOINT), imgsz=args.imgsz, epochs=args.epochs,
                                          seed=args.seed, nbs=16 if side == "ours_nbs16" else None,
                                          flipud=0.5 if side in ("ours_flipud", "ours_nbs16") else None,
                                          project=runs, name=side, exist_ok=True))
        best, run_dir = result.best_model, result.run_dir
        presets = [{"key": p.key, "value": p.value, "reason": p.reason} for p in result.presets]
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 1), "best_model": str(best), "presets": presets,
            "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "epochs": epoch_curve(run_dir / "results.csv")}


def epoch_curve(results_csv: Path) -> list[dict]:
    """Per epoch: Ultralytics' training losses and its own val mAP50 (our evaluator scores only the best model)."""
    keep = {"epoch": "epoch", "train/box_loss": "box", "train/cls_loss": "cls", "train/dfl_loss": "dfl",
            "metrics/mAP50(B)": "val_map50", "time": "elapsed_s"}
    with results_csv.open(newline="", encoding="utf-8") as handle:
        rows = [{k.strip(): v for k, v in row.items()} for row in csv.DictReader(handle)]
    return [{name: round(float(row[key]), 4) for key, name in keep.items() if key in row} for row in rows]


def same_weights(first: Path, second: Path) -> bool:
    """Whether two checkpoints hold bit-identical weights (the same training arithmetic, not just the same mAP)."""
    import torch

    def weights(path: Path) -> dict:
        return torch.load(path, map_location="cpu", weights_only=False)["model"].float().state_dict()

    a, b = weights(first), weights(second)
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, required=True, help="Folder for the dataset and runs.")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--imgsz", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sides", default=DEFAULT_SIDES, help=f"Comma-separated, of {', '.join(SIDES)}.")
    parser.add_argument("--parallel", type=int, default=2, help="Sides trained at once (cores shared evenly).")
    parser.add_argument("--reuse", action="store_true", help="Keep the sides already trained in --work.")
    parser.add_argument("--name", default="train_neu_transfer")
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)  # internal: train one side, write JSON
    args = parser.parse_args()
    if not (SHARED_DIR / "datasets" / "neu-det").is_dir() or not CHECKPOINT.exists():
        print(f"skipped: NEU-DET or {CHECKPOINT.name} not found under {SHARED_DIR}")
        return 0
    data, runs = args.work / "neu-yolo", args.work / "runs"
    if args.side:
        side = train_side(args.side, data, runs, args)
        (args.work / f"{args.side}.json").write_text(json.dumps(side, indent=1), encoding="utf-8")
        return 0

    from yolodefect.data.check import check_dataset
    from yolodefect.data.convert import ConvertOptions, convert

    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    unknown = set(sides) - set(SIDES)
    if unknown:
        parser.error(f"unknown sides {sorted(unknown)}")
    info = machine_info()
    print(machine_line(info))
    if not (data / "data.yaml").exists():
        convert(SHARED_DIR / "datasets" / "neu-det", data, ConvertOptions(format="voc", split="0.8,0.1,0.1",
                                                                         seed=args.seed))
    # One thread per side, each pinned to its own core where there are enough: yolodefect's threads preset then
    # agrees with Ultralytics' (cpu_count - 1 = 1 on 2 cores), so the sides differ only by their training arguments.
    threads = "1"
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    trained = {side for side in sides if args.reuse and (args.work / f"{side}.json").exists()}
    for side in sorted(trained):
        print(f"reusing {side} from {args.work / (side + '.json')}")
    pending, running, started = [side for side in sides if side not in trained], [], time.perf_counter()
    free_cores = sorted(os.sched_getaffinity(0))
    while pending or running:
        while pending and len(running) < args.parallel:
            side = pending.pop(0)
            command = [sys.executable, __file__, "--work", str(args.work), "--epochs", str(args.epochs), "--imgsz",
                       str(args.imgsz), "--seed", str(args.seed), "--side", side]
            core = free_cores.pop(0) if free_cores else None
            if core is not None:
                command = ["taskset", "-c", str(core), *command]
            log = (args.work / f"{side}.log").open("w")
            running.append((side, core, subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)))
            print(f"training {side} ({threads} thread, core {core}), log {args.work / (side + '.log')}", flush=True)
        time.sleep(5)
        for side, core, process in list(running):
            if process.poll() is not None:
                running.remove((side, core, process))
                if core is not None:
                    free_cores.append(core)
                if process.returncode:
                    print(f"{side} failed (exit {process.returncode}); see {args.work / (side + '.log')}")
                    return 1
                print(f"{side} done after {(time.perf_counter() - started) / 60:.1f} min", flush=True)

    results = {side: json.loads((args.work / f"{side}.json").read_text(encoding="utf-8")) for side in sides}
    for side in sides:
        results[side].update(score_val_test(Path(results[side]["best_model"]), data / "data.yaml", args.imgsz))
    for side in sides:
        if side != "plain" and "plain" in results:
            results[side]["same_weights_as_plain"] = same_weights(Path(results["plain"]["best_model"]),
                                                                  Path(results[side]["best_model"]))
    base = results.get("plain")
    ratio = {side: {split: {key: results[side][split][key] / base[split][key] for key in ("map50", "map50_95")}
                    for split in ("val", "test")} for side in sides if base and side != "plain"}
    payload = {
        "benchmark": args.name, "protocol": "CPU", "machine": info, "model": str(CHECKPOINT.relative_to(SHARED_DIR.parent)),
        "imgsz": args.imgsz, "epochs": args.epochs, "seed": args.seed, "batch": 16,
        "split": {"fractions": "0.8,0.1,0.1", "seed": args.seed,
                  "images": {s: v.images for s, v in check_dataset(data).splits.items()}},
        "parallel": args.parallel, "threads_per_side": int(threads),
        "reused_sides": sorted(trained), "trained_at": {side: results[side].get("trained_at") for side in sides},
        "sides": results, "ratio_over_plain": ratio,
        "evaluator": "yolodefect.evaluate (faster-coco-eval), same for every side",
    }
    path = write_result(args.name, payload)
    for side in sides:
        r = results[side]
        same = {True: " | weights identical to plain's", False: ""}.get(r.get("same_weights_as_plain"), "")
        print(f"{side:12s} val mAP50 {r['val']['map50']:.3f} mAP50-95 {r['val']['map50_95']:.3f} | test mAP50 "
              f"{r['test']['map50']:.3f} mAP50-95 {r['test']['map50_95']:.3f} | {r['seconds'] / 60:.1f} min{same}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
