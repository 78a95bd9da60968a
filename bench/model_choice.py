"""Which nano model is the default of `yolodefect train`: YOLO11n or YOLO26n, by CPU latency.

    python bench/model_choice.py [--runs 50] [--imgsz 256 640] [--threads 2] [--output PATH]

Batch-1 latency of both architectures in PyTorch (the checkpoint through Ultralytics' AutoBackend) and in
ONNX Runtime (the FP32 graph ``yolodefect export`` writes) on this machine, timed by the library's rule
(``yolodefect.inference.timing.measure``: warm-up, then both architectures of a runtime interleaved in
blocks of 5 runs, median and p95; network only, no letterbox or NMS), with their parameter counts and
GFLOPs. Weights are random (the COCO checkpoints cannot be downloaded here): latency does not depend on
them. Writes bench/results/model_choice.json (or --output).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, machine_line, write_result  # noqa: E402

ARCHITECTURES = ("yolo11n", "yolo26n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--imgsz", type=int, nargs="+", default=[256, 640])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=None, help="default: bench/results/model_choice.json")
    args = parser.parse_args()
    from ultralytics import YOLO
    from ultralytics.utils.torch_utils import get_flops, get_num_params

    from yolodefect.exporting.onnx_fp32 import export_onnx_fp32
    from yolodefect.inference.timing import measure, model_runner

    info = machine_info()
    print(machine_line(info))
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="model-choice-") as scratch:
        work = Path(scratch)
        checkpoints = {}
        for arch in ARCHITECTURES:
            model = YOLO(f"{arch}.yaml")  # a model definition: random weights, nothing downloaded
            results[arch] = {"parameters": int(get_num_params(model.model)),
                             "gflops_640": round(float(get_flops(model.model, 640)), 2)}
            checkpoints[arch] = work / f"{arch}.pt"
            model.save(str(checkpoints[arch]))
        for imgsz in args.imgsz:
            runners = []
            for arch in ARCHITECTURES:
                onnx_dir = work / f"{arch}_{imgsz}"
                onnx_dir.mkdir()
                onnx_path = export_onnx_fp32(checkpoints[arch], onnx_dir / f"{arch}.onnx", onnx_dir, imgsz=imgsz,
                                             dynamic=False).path
                runners += [model_runner(f"{arch} pytorch", checkpoints[arch], imgsz=imgsz, threads=args.threads),
                            model_runner(f"{arch} onnxruntime", onnx_path, imgsz=imgsz, threads=args.threads)]
            latency = measure(runners, runs=args.runs, warmup=args.warmup, threads=args.threads)
            for arch in ARCHITECTURES:
                for runtime in ("pytorch", "onnxruntime"):
                    measured = latency[f"{arch} {runtime}"]
                    results[arch][f"{runtime}_{imgsz}"] = {"median": round(measured.median_ms, 2),
                                                           "p95": round(measured.p95_ms, 2),
                                                           "latency": measured.to_dict()}
                print(f"{arch} {imgsz}px: PyTorch {results[arch][f'pytorch_{imgsz}']['median']} ms, ONNX Runtime "
                      f"{results[arch][f'onnxruntime_{imgsz}']['median']} ms (medians, batch 1, {args.threads} threads)")
    judged = max(args.imgsz)
    faster = min(results, key=lambda a: results[a][f"onnxruntime_{judged}"]["median"])
    path = write_result("model_choice", {
        "benchmark": "model_choice", "machine": info, "machine_line": machine_line(info), "runs": args.runs,
        "warmup": args.warmup, "threads": args.threads,
        "protocol": "yolodefect.inference.timing.measure: batch 1, network only, interleaved blocks of 5 runs; "
                    "PyTorch = Ultralytics AutoBackend on the checkpoint, ONNX Runtime = yolodefect export's FP32 graph",
        "results": results, f"faster_onnx_{judged}": faster}, args.output)
    print(f"faster in ONNX Runtime at {judged} px: {faster}\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
