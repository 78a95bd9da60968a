"""INT8 export on CPU: is ONNX Runtime INT8 >= 2x faster than FP32 at batch 1, within 1 mAP50 point?

    python bench/export_int8.py [--model best.pt] [--data data.yaml] [--imgsz 256 640] [--runs 50]
                                [--alone-runs 100] [--rounds 3]

For each image size: PyTorch FP32, ONNX Runtime FP32 (Ultralytics' graph as exported, and ours:
onnxsim + the DFL Softmax rewrite), ONNX Runtime INT8 (ours, ``yolodefect export --int8``), ONNX Runtime
INT8 (Ultralytics 8.4's own ``quantize=8`` path), and OpenVINO FP32/INT8 when openvino + nncf are
installed (the precision OpenVINO really computed in, INFERENCE_PRECISION_HINT, is recorded; a second
OpenVINO FP32 row forces f32). Every model is scored by THE evaluator on val and timed at batch 1 with
the same threads, two ways in the same run (yolodefect.inference.timing):

- alone, deployment-true, THE HEADLINE: each model runs --alone-runs consecutive inferences after its own
  warm-up with nothing in between, as a station runs its one model; --rounds alternating rounds (A alone,
  B alone, ..., A alone, ...), the speed-up vs ORT FP32 is the median of the per-round ratios;
- interleaved: models of one runtime in blocks of 5 runs (--runs each), runtimes one after the other, as
  this benchmark measured before; it pays the wake-up of thread pools (OpenVINO's TBB, ORT) that the line
  never pays, so its times are higher.
Also records which operator types ONNX Runtime still runs in float in our INT8 graph after its
optimizations. Writes bench/results/export_int8.json (or --output) with the machine line.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, machine_line, write_result  # noqa: E402

NEU_MODEL = Path("/tmp/bench-neu/runs/ours/weights/best.pt")
NEU_DATA = Path("/tmp/bench-neu/neu-yolo/data.yaml")
TARGET_SPEEDUP = 2.0
TARGET_MAX_DROP = 1.0  # mAP50 points
REFERENCE = "ORT FP32 (ours)"
OURS = "ORT INT8 (ours)"


def optimized_op_types(path: Path, threads: int) -> dict[str, int]:
    """Operator types ONNX Runtime actually runs after its graph optimizations (QLinear* = int8)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as scratch:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(Path(scratch) / "optimized.onnx")
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        counts = Counter(node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node)
    return dict(counts.most_common())


def build_models(args, imgsz: int, work: Path) -> tuple[dict[str, tuple[str, Path]], dict]:
    """Every model to compare: name -> (kind, path). Also returns facts about how they were made."""
    from yolodefect.data.yolo_dataset import load_data_config
    from yolodefect.exporting.calibration import select_calibration_images
    from yolodefect.exporting.formats import ExportFormat, export_formats
    from yolodefect.exporting.onnx_fp32 import export_onnx_fp32, ultralytics_export
    from yolodefect.exporting.onnx_int8 import OrtInt8Settings, quantize_onnx
    from yolodefect.exporting.ultralytics_formats import calibration_yaml, export_with_ultralytics

    models: dict[str, tuple[str, Path]] = {"PyTorch FP32": ("torch", args.model)}
    facts: dict = {}
    plain = work / "plain"
    plain.mkdir()
    models["ORT FP32 (Ultralytics graph)"] = ("onnx", ultralytics_export(args.model, plain, format="onnx", imgsz=imgsz,
                                                                           simplify=False, batch=1, device="cpu"))
    ours = export_onnx_fp32(args.model, work / "fp32.onnx", work, imgsz=imgsz, dynamic=False)
    models[REFERENCE] = ("onnx", ours.path)
    facts["fp32_notes"] = ours.notes

    config = load_data_config(args.data)
    calibration = select_calibration_images(config, args.calib, seed=args.seed)
    facts["calibration"] = calibration.to_dict()
    started = time.perf_counter()
    settings = OrtInt8Settings()
    quantized = quantize_onnx(ours.path, work / "int8.onnx", calibration.images, imgsz, settings)
    facts["ours_quantization"] = {"settings": settings.describe(), "seconds": round(time.perf_counter() - started, 1),
                                  "float_nodes": len(quantized.float_nodes)}
    models[OURS] = ("onnx", quantized.path)

    theirs = work / "ultralytics_int8"
    theirs.mkdir()
    started = time.perf_counter()
    # Ultralytics calibrates on the val split and keeps every intermediate tensor of every image in memory:
    # cap the count (Ultralytics' fraction > 1 is a count) so 640 px fits in RAM. Speed does not depend on it.
    models["ORT INT8 (Ultralytics quantize=8)"] = ("onnx", ultralytics_export(
        args.model, theirs, format="onnx", imgsz=imgsz, quantize=8, data=str(args.data), simplify=False, batch=1,
        device="cpu", fraction=args.ultralytics_calib))
    facts["ultralytics_quantization"] = {
        "how": "Ultralytics 8.4 onnx_int8_quantize: quantize_static defaults (QDQ, S8 activations, per-tensor S8 "
               "weights, MinMax), every non-Conv node excluded",
        "calibration_images": f"up to {args.ultralytics_calib} val images", "seconds": round(time.perf_counter() - started, 1)}

    if args.skip_openvino:
        facts["openvino"] = "skipped (--skip-openvino)"
        return models, facts
    import importlib.util

    if not (importlib.util.find_spec("openvino") and importlib.util.find_spec("nncf")):
        facts["openvino"] = "not installed (pip install 'yolodefect[openvino]')"
        return models, facts
    spec = export_formats()[ExportFormat.OPENVINO]
    (work / "ov32").mkdir()
    (work / "ov8").mkdir()
    models["OpenVINO FP32"] = ("openvino", export_with_ultralytics(spec, args.model, work / "ov32", imgsz=imgsz,
                                                                   dynamic=False, device="cpu"))
    models["OpenVINO FP32 (f32 forced)"] = ("openvino-f32", models["OpenVINO FP32"][1])
    data = calibration_yaml(calibration.images, list(config.class_names), work / "ov8")
    models["OpenVINO INT8"] = ("openvino", export_with_ultralytics(spec, args.model, work / "ov8", imgsz=imgsz,
                                                                   dynamic=False, device="cpu", calibration_data=data))
    return models, facts


def runner(name: str, kind: str, path: Path, imgsz: int, threads: int, image):
    """The library's runner for the file (as ``yolodefect export`` times it); "openvino-f32" forces f32."""
    from yolodefect.inference.timing import model_runner

    return model_runner(name, path, imgsz=imgsz, threads=threads, image=image,
                        precision_hint="f32" if kind == "openvino-f32" else None)


def latency_summary(latency, reference, ultralytics_reference) -> dict:
    """One way of timing one model: its figures and same-run speed-ups (median of per-round ratios)."""
    from yolodefect.inference.timing import speedup

    return {"mode": latency.mode, "median_ms": latency.median_ms, "p95_ms": latency.p95_ms,
            "mean_ms": latency.mean_ms, "min_ms": latency.min_ms, "runs": latency.runs, "rounds": latency.rounds,
            "round_medians_ms": list(latency.round_medians_ms),
            "speedup_vs_ort_fp32": round(speedup(reference, latency), 2),
            "speedup_vs_ultralytics_ort_fp32": round(speedup(ultralytics_reference, latency), 2)}


def run_size(args, imgsz: int, work: Path) -> dict:
    from yolodefect.data.yolo_dataset import load_data_config
    from yolodefect.evaluate import evaluate
    from yolodefect.exporting.calibration import preprocess
    from yolodefect.inference.timing import ALONE, INTERLEAVED, measure
    from yolodefect.exporting.result import path_size
    from yolodefect.exporting.source import thresholds_file

    models, facts = build_models(args, imgsz, work)
    thresholds = thresholds_file(args.model)
    accuracy = {}
    for name, (kind, path) in models.items():
        if kind == "openvino-f32":
            continue  # same file as OpenVINO FP32; Ultralytics' runtime decides its precision
        metrics = evaluate(path, args.data, split="val", imgsz=imgsz, conf=0.25, thresholds=thresholds,
                           plots=False).metrics
        accuracy[name] = {"map50": metrics.map50, "map50_95": metrics.map50_95,
                          "per_class_ap50": {c.name: c.ap50 for c in metrics.per_class}}
        print(f"  {imgsz} {name:34s} mAP50 {metrics.map50 * 100:6.2f}  mAP50-95 {metrics.map50_95 * 100:6.2f}", flush=True)
    image = preprocess(load_data_config(args.data).images("val")[0], imgsz)
    runners = [runner(name, kind, path, imgsz, args.threads, image) for name, (kind, path) in models.items()]
    # Both ways in one run; alone first, interleaved second, each with its own warm-up.
    latencies = {
        ALONE: measure(runners, runs=args.alone_runs, warmup=args.warmup, threads=args.threads, mode=ALONE,
                       rounds=args.rounds),
        INTERLEAVED: measure(runners, runs=args.runs, warmup=args.warmup, threads=args.threads, mode=INTERLEAVED),
    }

    reference_map = accuracy[REFERENCE]["map50"]
    rows = []
    for name, (kind, path) in models.items():
        timed = {mode: latency_summary(latency[name], latency[REFERENCE], latency["ORT FP32 (Ultralytics graph)"])
                 for mode, latency in latencies.items()}
        lat = latencies[ALONE][name]
        headline = timed[ALONE]
        acc = accuracy.get(name) or accuracy.get("OpenVINO FP32", {})
        rows.append({
            "name": name, "file": str(path), "size_mb": round(path_size(Path(path)) / 1e6, 2),
            "runtime": lat.runtime, "precision": lat.precision, "settings": lat.settings,
            # the headline figures are the deployment-true ones (alone); both ways are under "latency"
            "median_ms": headline["median_ms"], "p95_ms": headline["p95_ms"], "min_ms": headline["min_ms"],
            "speedup_vs_ort_fp32": headline["speedup_vs_ort_fp32"],
            "speedup_vs_ultralytics_ort_fp32": headline["speedup_vs_ultralytics_ort_fp32"],
            "latency": timed,
            "map50": acc.get("map50"), "map50_95": acc.get("map50_95"),
            "map50_drop_vs_ort_fp32_points": None if acc.get("map50") is None
            else round((reference_map - acc["map50"]) * 100, 2),
            "per_class_ap50": acc.get("per_class_ap50"),
            "accuracy_note": "accuracy of OpenVINO FP32 as Ultralytics runs it" if kind == "openvino-f32" else None,
        })
    ours = next(row for row in rows if row["name"] == OURS)
    target = {"speedup": ours["speedup_vs_ort_fp32"], "timing": ALONE,
              "speedup_interleaved": ours["latency"][INTERLEAVED]["speedup_vs_ort_fp32"],
              "map50_drop_points": ours["map50_drop_vs_ort_fp32_points"],
              "met": ours["speedup_vs_ort_fp32"] >= TARGET_SPEEDUP
              and ours["map50_drop_vs_ort_fp32_points"] <= TARGET_MAX_DROP}
    return {"imgsz": imgsz, "rows": rows, "target": target, "facts": facts,
            "ours_int8_ops_after_ort_optimization": optimized_op_types(models[OURS][1], args.threads),
            "ours_fp32_ops_after_ort_optimization": optimized_op_types(models[REFERENCE][1], args.threads)}


def print_table(result: dict) -> None:
    print(f"\nimgsz {result['imgsz']}: batch 1, ms; x = same-run speed-up vs {REFERENCE}; "
          f"ALONE = deployment-true (the headline), interleaved = blocks of 5")
    print(f"  {'model':34s} {'ALONE med':>9s} {'p95':>7s} {'x':>5s}   {'interl. med':>11s} {'p95':>7s} {'x':>5s}"
          f"  {'mAP50':>6s} {'50-95':>6s} {'drop':>6s}  precision")
    for row in result["rows"]:
        alone, interleaved = row["latency"]["alone"], row["latency"]["interleaved"]
        map50 = "-" if row["map50"] is None else f"{row['map50'] * 100:.2f}"
        map95 = "-" if row["map50_95"] is None else f"{row['map50_95'] * 100:.2f}"
        drop = "-" if row["map50_drop_vs_ort_fp32_points"] is None else f"{row['map50_drop_vs_ort_fp32_points']:+.2f}"
        print(f"  {row['name']:34s} {alone['median_ms']:9.2f} {alone['p95_ms']:7.2f} {alone['speedup_vs_ort_fp32']:5.2f}"
              f"   {interleaved['median_ms']:11.2f} {interleaved['p95_ms']:7.2f} "
              f"{interleaved['speedup_vs_ort_fp32']:5.2f}  {map50:>6s} {map95:>6s} {drop:>6s}  {row['precision'] or ''}")
    target = result["target"]
    verdict = "MET" if target["met"] else "NOT met"
    print(f"  headline (alone, as the line runs it): {OURS} {target['speedup']}x vs {REFERENCE} "
          f"(interleaved {target['speedup_interleaved']}x); target (>= {TARGET_SPEEDUP}x, drop <= {TARGET_MAX_DROP}): "
          f"{verdict} ({target['map50_drop_points']} points)")
    floats = {op: n for op, n in result["ours_int8_ops_after_ort_optimization"].items()
              if not op.startswith(("QLinear", "Quantize", "Dequantize"))}
    print(f"  float/other ops left in our INT8 graph after ORT optimization: {floats}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=NEU_MODEL)
    parser.add_argument("--data", type=Path, default=NEU_DATA)
    parser.add_argument("--imgsz", type=int, nargs="+", default=[256, 640])
    parser.add_argument("--runs", type=int, default=50, help="timed runs per model, interleaved")
    parser.add_argument("--alone-runs", type=int, default=100,
                        help="consecutive timed runs per model per round, alone (deployment-true)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the alone timing")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calib", type=int, default=300, help="calibration images for our INT8 and OpenVINO INT8")
    parser.add_argument("--ultralytics-calib", type=int, default=32,
                        help="calibration images for Ultralytics' own ONNX INT8 path (it holds them all in RAM)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-openvino", action="store_true")
    parser.add_argument("--output", type=Path, default=None, help="default: bench/results/export_int8.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for required in (args.model, args.data):
        if not required.exists():
            print(f"{required} does not exist (train the NEU-DET model first, or pass --model/--data)", file=sys.stderr)
            return 2

    info = machine_info()
    print(machine_line(info))  # with the CPU's INT8 features
    results = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="export-int8-bench-") as scratch:
        for imgsz in args.imgsz:
            work = Path(scratch) / str(imgsz)
            work.mkdir()
            result = run_size(args, imgsz, work)
            print_table(result)
            results.append(result)
    payload = {
        "benchmark": "export_int8",
        "question": f"ORT INT8 >= {TARGET_SPEEDUP}x faster than ORT FP32 at batch 1, mAP50 drop <= {TARGET_MAX_DROP}",
        "machine": info, "machine_line": machine_line(info),
        "model": str(args.model), "data": str(args.data), "runs": args.runs, "alone_runs": args.alone_runs,
        "rounds": args.rounds, "warmup": args.warmup, "threads": args.threads, "calib": args.calib, "seed": args.seed,
        "headline": "alone",
        # OpenMP's spin-wait (PyTorch) on a 2-core machine shared with another job stalls every parallel region
        "environment": {name: os.environ.get(name) for name in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")},
        "protocol": "batch 1, model only (no letterbox/NMS), timed two ways in the same run: ALONE (the headline, "
                    f"deployment-true): each model {args.alone_runs} consecutive runs after its own {args.warmup} "
                    f"warm-up runs, in {args.rounds} alternating rounds, speed-up = median of the per-round ratios; "
                    f"INTERLEAVED: {args.runs} runs per model, models of one runtime in blocks of 5, runtimes one "
                    "after the other, speed-up = ratio of medians. Row median_ms/p95_ms/speedup_* are the alone "
                    "figures; both are under each row's latency. ONNX Runtime ORT_ENABLE_ALL with spin-wait off; "
                    "OpenVINO PERFORMANCE_HINT LATENCY with the thread count, the rest as the hint resolves it "
                    "(recorded in settings); mAP by yolodefect.evaluate on val at conf 0.25 (or the model's "
                    "thresholds.yaml)",
        "results": results, "seconds": round(time.perf_counter() - started, 1),
    }
    path = write_result("export_int8", payload, args.output)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
