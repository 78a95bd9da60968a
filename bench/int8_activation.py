"""Why ONNX Runtime INT8 stays under 2x on CPU: the same YOLO11n with SiLU (Ultralytics' default) and with ReLU.

    python bench/int8_activation.py [--imgsz 256 640] [--runs 50] [--data neu-yolo/data.yaml]

Builds both architectures for 6 classes from Ultralytics' yolo11.yaml (ReLU through its ``activation``
key), exports each to FP32 ONNX and INT8 with exactly the path of ``yolodefect export --int8``, and
times FP32 against INT8 at batch 1 with ``yolodefect.inference.timing.measure`` (interleaved blocks,
same threads). Speed only: the weights are Ultralytics' initialisation (a convolution costs the same
whatever its weights), so no accuracy is reported. Calibration: images from --data's train split when
given, else random images. Writes bench/results/int8_activation.json with the machine line.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, machine_line, write_result  # noqa: E402

ACTIVATIONS = {"SiLU": None, "ReLU": "nn.ReLU()"}  # None: Ultralytics' default (SiLU)


def build_checkpoint(activation: str | None, work: Path) -> Path:
    import ultralytics
    import yaml
    from ultralytics import YOLO

    config = yaml.safe_load((Path(ultralytics.__file__).parent / "cfg/models/11/yolo11.yaml").read_text())
    config["nc"] = 6
    if activation:
        config["activation"] = activation
    definition = work / "yolo11n.yaml"  # the 'n' in the name picks the nano scale
    definition.write_text(yaml.safe_dump(config), encoding="utf-8")
    checkpoint = work / "init.pt"
    YOLO(str(definition)).save(str(checkpoint))
    return checkpoint


def calibration_images(data: Path | None, work: Path, count: int = 32) -> list[Path]:
    if data is not None:  # the same stratified, seeded choice as `yolodefect export --int8`
        from yolodefect.data.yolo_dataset import load_data_config
        from yolodefect.exporting.calibration import select_calibration_images

        return select_calibration_images(load_data_config(data), count, seed=0).images
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        path = work / f"random_{index}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))
        paths.append(path)
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--imgsz", type=int, nargs="+", default=[256, 640])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--output", type=Path, default=None, help="default: bench/results/int8_activation.json")
    args = parser.parse_args()

    from yolodefect.exporting.onnx_fp32 import export_onnx_fp32
    from yolodefect.exporting.onnx_int8 import quantize_onnx
    from yolodefect.inference.timing import measure, onnxruntime_runner

    info = machine_info()
    print(machine_line(info))
    results = []
    with tempfile.TemporaryDirectory(prefix="int8-activation-") as scratch:
        images = calibration_images(args.data, Path(scratch))
        for imgsz in args.imgsz:
            runners = []
            for name, activation in ACTIVATIONS.items():
                work = Path(scratch) / f"{name}-{imgsz}"
                work.mkdir()
                checkpoint = build_checkpoint(activation, work)
                fp32, int8 = work / "fp32.onnx", work / "int8.onnx"
                export_onnx_fp32(checkpoint, fp32, work, imgsz=imgsz, dynamic=False)
                quantize_onnx(fp32, int8, images, imgsz)
                runners += [onnxruntime_runner(f"{name} FP32", fp32, imgsz, args.threads),
                            onnxruntime_runner(f"{name} INT8", int8, imgsz, args.threads)]
            latencies = measure(runners, runs=args.runs, warmup=args.warmup, threads=args.threads)
            rows = []
            for name in ACTIVATIONS:
                fp32, int8 = latencies[f"{name} FP32"], latencies[f"{name} INT8"]
                speedup = fp32.median_ms / int8.median_ms
                rows.append({"activation": name, "fp32": fp32.to_dict(), "int8": int8.to_dict(),
                             "speedup_median": round(speedup, 2)})
                print(f"{imgsz} px {name}: ORT FP32 {fp32.median_ms:.2f} ms, INT8 {int8.median_ms:.2f} ms, "
                      f"{speedup:.2f}x")
            results.append({"imgsz": imgsz, "rows": rows})
    payload = {
        "benchmark": "int8_activation",
        "question": "is the activation what keeps ONNX Runtime INT8 under 2x FP32 on this CPU?",
        "machine": info, "machine_line": machine_line(info), "runs": args.runs, "warmup": args.warmup,
        "threads": args.threads, "calibration": str(args.data) if args.data else "32 random images",
        "protocol": "YOLO11n (6 classes, Ultralytics' initial weights), FP32 ONNX and INT8 by yolodefect's export "
                    "path, batch 1, ONNX Runtime CPU, FP32 and INT8 interleaved in blocks of 5 runs",
        "results": results,
    }
    print(f"wrote {write_result('int8_activation', payload, args.output)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
