"""Does calibrate's promise hold on new parts, on average? Repeated random halves of recorded master parts.

    python bench/line_promise.py --data /tmp/line_bench/line-data-ece214be --model best.pt --speed 12

One calibration run and one verification run (bench/line.py) compare two numbers, each from a hundred or so parts:
their gap is mostly sampling noise (a rate from 100 parts has a 95 % interval of about +-4 points at 5 %). This
bench asks the question underneath, whether the promise is biased: ``calibrate`` runs once over each of the two
videos of a bench/line.py data folder (the calibration and the verification parts), recording every part's
per-frame scores (part_scores.npz), then, many times over, the recorded parts are split at random into
two halves: the rule is chosen on one half (:func:`yolodefect.calibrate.choose_line_rule`, calibrate's own choice)
and applied to the other with the station's own verdict (:func:`yolodefect.stream.line.part_rejected`: given a part's
per-frame scores it is exactly what ``watch`` decides). Reported per promise, the mean and spread of (rate on the
other half - promised rate): the rates on the calibration half itself, and the held-out rates calibrate promises.
Writes bench/results/line_promise_DATASET_SPEEDpx.json (or --output).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, machine_line, write_result


def recorded_parts(video: Path, truth_csv: Path, model: Path, imgsz: int, belt_frames: int, folder: Path) -> dict:
    """Per part: its per-frame class scores, whether it was an error part, and its truth, as ``calibrate`` records
    them (its part_scores.npz); one calibrate run per video, kept in ``folder``."""
    from yolodefect.calibrate import CalibrateOptions, calibrate, read_part_scores
    from yolodefect.stream.options import WatchOptions

    path = folder / "part_scores.npz"
    if not path.exists():
        calibrate(video, truth_csv, WatchOptions(model=model, imgsz=imgsz, belt_frames=belt_frames),
                  CalibrateOptions(out_dir=folder))
    scores, errors, defective = read_part_scores(path)
    return {"scores": scores, "errors": errors, "defective": defective}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="A bench/line.py data folder (line-data-*).")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--speed", type=int, default=12, help="Which videos of the folder (px per frame).")
    parser.add_argument("--halves", type=int, default=40, help="Random splits.")
    parser.add_argument("--target-recall", type=float, default=0.99)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--belt-frames", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()

    from yolodefect.calibrate import choose_line_rule
    from yolodefect.stream.line import part_rejected

    info = machine_info()
    print(machine_line(info))
    started = time.perf_counter()
    pooled = {"scores": [], "errors": [], "defective": []}
    for name in ("calibration", "verification"):
        video = args.data / f"{name}_{args.speed}px.avi"
        parts = recorded_parts(video, args.data / f"{name}_{args.speed}px.truth.csv", args.model, args.imgsz,
                               args.belt_frames, args.data / "recorded" / f"{video.stem}.{args.model.stem}")
        for key in pooled:
            pooled[key].extend(parts[key])
    recording_s = time.perf_counter() - started
    scores, errors, defective = pooled["scores"], np.array(pooled["errors"]), np.array(pooled["defective"])
    classes = max(s.shape[1] for s in scores)
    reject_ids = list(range(classes))
    rng = np.random.default_rng(args.seed)
    gaps: dict[str, list] = {"calibration_parts": [], "held_out": []}
    splits = []
    for _ in range(args.halves):
        order = rng.permutation(len(scores))
        chosen, other = np.sort(order[: len(order) // 2]), order[len(order) // 2:]
        rule = choose_line_rule([scores[i] for i in chosen], errors[chosen], defective[chosen], reject_ids,
                                target_recall=args.target_recall)
        thresholds = rule.thresholds.astype(np.float32)

        def rates(which) -> np.ndarray:
            rejected = np.array([errors[i] or part_rejected(scores[i], thresholds, reject_ids, rule.min_frames)
                                 for i in which])
            bad = defective[which]
            return np.array([(bad & ~rejected).sum() / bad.sum(), (~bad & rejected).sum() / (~bad).sum()])

        on_other = rates(other)
        on_calibration = rates(chosen)
        held_out = np.array([rule.expected["escape_rate"], rule.expected["false_reject_rate"]])
        gaps["calibration_parts"].append(on_other - on_calibration)
        gaps["held_out"].append(on_other - held_out)
        splits.append({"min_frames": rule.min_frames, "misses_allowed": rule.misses_allowed,
                       "other_half": on_other.round(4).tolist(), "calibration_half": on_calibration.round(4).tolist(),
                       "held_out_promise": held_out.round(4).tolist()})
    summary = {}
    for promise, values in gaps.items():
        points = 100 * np.array(values)
        summary[promise] = {
            "mean_gap_points": {"escape": round(float(points[:, 0].mean()), 2),
                                "false_reject": round(float(points[:, 1].mean()), 2)},
            "sd_gap_points": {"escape": round(float(points[:, 0].std()), 2),
                              "false_reject": round(float(points[:, 1].std()), 2)},
            "share_within_2_points_both": round(float((np.abs(points) <= 2 + 1e-9).all(axis=1).mean()), 3)}
        print(f"{promise}: other half minus promise, mean {summary[promise]['mean_gap_points']} points, "
              f"sd {summary[promise]['sd_gap_points']}; within 2 points (both rates) in "
              f"{summary[promise]['share_within_2_points_both']:.0%} of the splits")
    manifest = json.loads((args.data / "manifest.json").read_text(encoding="utf-8"))
    payload = {"benchmark": "line_promise", "machine": info, "data": str(args.data), "dataset": manifest.get("dataset", "deeppcb"),  # early data folders were DeepPCB only
               "model": str(args.model),
               "speed_px_per_frame": args.speed, "parts": len(scores), "defective": int(defective.sum()),
               "halves": args.halves, "target_recall": args.target_recall, "seed": args.seed,
               "gap": "rate on the other half minus the promised rate (positive: the promise was optimistic)",
               "summary": summary, "splits": splits, "seconds_recording": round(recording_s, 1),
               "seconds_total": round(time.perf_counter() - started, 1)}
    path = write_result(f"line_promise_{payload['dataset']}_{args.speed}px", payload, args.output)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
