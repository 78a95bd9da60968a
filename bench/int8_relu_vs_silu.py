"""`train --act relu` vs SiLU, deployed: the two trained NEU-DET models' FP32 and INT8 latency, in the same run.

    python bench/int8_relu_vs_silu.py --silu SILU.pt --relu RELU.pt --data neu-yolo/data.yaml [--imgsz 256]

Two separate runs of bench/export_int8.py (bench/results/export_int8_silu.json, export_int8_relu.json)
give each model's accuracy and speed-ups, but on a shared machine their absolute times are minutes apart
under different loads. Here both models are exported exactly as bench/export_int8.py does (its
``build_models``: ORT FP32 ours, ORT INT8 ours, OpenVINO FP32 and INT8) and timed together, alone
(deployment-true) in --rounds alternating rounds, so each ReLU/SiLU ratio is the median of per-round
ratios taken minutes, not hours, apart. Speed only. Writes bench/results/export_int8_relu_paired.json.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from argparse import Namespace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from export_int8 import build_models, runner  # noqa: E402
from machine import machine_info, machine_line, write_result  # noqa: E402

TIMED = ("ORT FP32 (ours)", "ORT INT8 (ours)", "OpenVINO FP32", "OpenVINO FP32 (f32 forced)", "OpenVINO INT8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--silu", type=Path, required=True)
    parser.add_argument("--relu", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--imgsz", type=int, default=256)
    parser.add_argument("--alone-runs", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calib", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None,
                        help="default: bench/results/export_int8_relu_paired.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from yolodefect.data.yolo_dataset import load_data_config
    from yolodefect.exporting.calibration import preprocess
    from yolodefect.inference.timing import ALONE, measure, speedup

    info = machine_info()
    print(machine_line(info))
    started = time.perf_counter()
    image = preprocess(load_data_config(args.data).images("val")[0], args.imgsz)
    with tempfile.TemporaryDirectory(prefix="int8-relu-silu-") as scratch:
        runners = []
        for activation, checkpoint in (("SiLU", args.silu), ("ReLU", args.relu)):
            work = Path(scratch) / activation
            work.mkdir()
            build_args = Namespace(model=checkpoint, data=args.data, calib=args.calib, seed=args.seed,
                                   ultralytics_calib=32, skip_openvino=False)
            models, _ = build_models(build_args, args.imgsz, work)
            runners += [runner(f"{activation} {name}", *models[name], args.imgsz, args.threads, image)
                        for name in TIMED if name in models]
        latencies = measure(runners, runs=args.alone_runs, warmup=args.warmup, threads=args.threads, mode=ALONE,
                            rounds=args.rounds)
    rows = {}
    for name in TIMED:
        silu, relu = latencies.get(f"SiLU {name}"), latencies.get(f"ReLU {name}")
        if silu is None or relu is None:
            continue
        rows[name] = {
            "silu": {"median_ms": silu.median_ms, "p95_ms": silu.p95_ms, "round_medians_ms": list(silu.round_medians_ms),
                     "speedup_vs_ort_fp32": round(speedup(latencies["SiLU ORT FP32 (ours)"], silu), 2)},
            "relu": {"median_ms": relu.median_ms, "p95_ms": relu.p95_ms, "round_medians_ms": list(relu.round_medians_ms),
                     "speedup_vs_ort_fp32": round(speedup(latencies["ReLU ORT FP32 (ours)"], relu), 2),
                     "speedup_vs_silu_ort_fp32": round(speedup(latencies["SiLU ORT FP32 (ours)"], relu), 2)},
            "relu_speedup_vs_silu": round(speedup(silu, relu), 2),  # median of per-round SiLU/ReLU ratios
        }
        print(f"{args.imgsz} px {name:28s} SiLU {silu.median_ms:6.2f} ms  ReLU {relu.median_ms:6.2f} ms  "
              f"ReLU {rows[name]['relu_speedup_vs_silu']:.2f}x faster")
    payload = {
        "benchmark": "export_int8_relu_paired",
        "question": "how much faster is a `train --act relu` model than the same network with SiLU, deployed FP32 "
                    "and INT8 on this CPU, timed in the same run?",
        "machine": info, "machine_line": machine_line(info), "silu_model": str(args.silu),
        "relu_model": str(args.relu), "data": str(args.data), "imgsz": args.imgsz, "alone_runs": args.alone_runs,
        "rounds": args.rounds, "warmup": args.warmup, "threads": args.threads, "calib": args.calib,
        "protocol": "exports by bench/export_int8.py's build_models; batch 1, model only; ALONE: each model "
                    f"{args.alone_runs} consecutive runs after {args.warmup} warm-up runs, {args.rounds} alternating "
                    "rounds over all 10 models; ratios are medians of per-round ratios",
        "rows": rows, "seconds": round(time.perf_counter() - started, 1),
    }
    print(f"wrote {write_result('export_int8_relu_paired', payload, args.output)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
