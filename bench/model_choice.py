"""Which nano model is the default of `yolodefect train`: YOLO11n or YOLO26n, by CPU latency.

    python bench/model_choice.py [--runs 50]

Batch-1 latency (warm-up, then median and p95) of both architectures in PyTorch and in ONNX
Runtime at 256 and 640 px on this machine, with their parameter counts and GFLOPs. Weights are
random (the COCO checkpoints cannot be downloaded here): latency does not depend on them.
Writes bench/results/model_choice.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, machine_line, median, write_result  # noqa: E402


def latency_ms(run, runs: int, warmup: int = 5) -> dict:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return {"median": round(median(times), 2), "p95": round(float(np.percentile(times, 95)), 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    import onnxruntime as ort
    import torch
    from ultralytics import YOLO
    from ultralytics.utils.torch_utils import get_flops, get_num_params

    torch.set_num_threads(2)
    info = machine_info()
    print(machine_line(info))
    results = {}
    work = Path(tempfile.mkdtemp())
    os.chdir(work)  # Ultralytics exports a .yaml model into the working directory
    for arch in ("yolo11n", "yolo26n"):
        model = YOLO(f"{arch}.yaml")
        entry = {"parameters": int(get_num_params(model.model)), "gflops_640": round(float(get_flops(model.model, 640)), 2)}
        for imgsz in (256, 640):
            image = (np.random.default_rng(0).integers(0, 255, (imgsz, imgsz, 3))).astype(np.uint8)
            entry[f"pytorch_{imgsz}"] = latency_ms(
                lambda: model.predict(image, imgsz=imgsz, device="cpu", verbose=False), args.runs)
            onnx_path = YOLO(f"{arch}.yaml").export(format="onnx", imgsz=imgsz, simplify=True, project=str(work),
                                                    name=f"{arch}_{imgsz}")
            options = ort.SessionOptions()
            options.intra_op_num_threads = 2
            session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
            tensor = np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)
            name = session.get_inputs()[0].name
            entry[f"onnxruntime_{imgsz}"] = latency_ms(lambda: session.run(None, {name: tensor}), args.runs)
            print(f"{arch} {imgsz}px: PyTorch {entry[f'pytorch_{imgsz}']['median']} ms, "
                  f"ONNX Runtime {entry[f'onnxruntime_{imgsz}']['median']} ms (medians, batch 1, 2 threads)")
        results[arch] = entry
    faster = min(results, key=lambda a: results[a]["onnxruntime_640"]["median"])
    write_result("model_choice", {"benchmark": "model_choice", "machine": info, "runs": args.runs,
                                  "results": results, "faster_onnx_640": faster})
    print(f"faster in ONNX Runtime at 640 px: {faster}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
