"""Issue 20 item 2: can OpenVINO INT8 keep mAP50? Which layers NNCF should leave in float, measured.

    python bench/openvino_int8_scope.py --model neu.pt --data neu/data.yaml [--imgsz 256] [--accuracy-control]

One run, one model, the same 300 calibration images (stratified, seeded, from train; the letterbox
preprocessing of our ONNX Runtime INT8) for every variant:

- ``ultralytics``: Ultralytics' own OpenVINO INT8 export (``int8=True``, its float scope: Sigmoids and the
  Detect head's decoding), calibrated on those images;
- ``ours``: yolodefect/exporting/openvino_int8.py (Ultralytics' scope plus model.1's convolution), what
  ``export --int8`` builds;
- ``ours_plus_stem``: model.0's convolution in float too;
- with ``--accuracy-control``: NNCF's ``quantize_with_accuracy_control`` from Ultralytics' scope, max drop 0.5
  points of mAP50 on the val split (Ultralytics' matching and AP, the validator our evaluator agrees with), which
  reports the layers it had to revert; slow (20 minutes on 2 busy cores).

Every model is scored by THE evaluator on val and timed alone (batch 1, 2 threads, OpenVINO LATENCY hint;
the FP32 IR as OpenVINO runs it by default, which is bf16 on CPUs with AVX512-BF16/AMX, and forced to f32).
Writes bench/results/openvino_int8_scope.json.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, machine_line, write_result  # noqa: E402

MAX_DROP = 0.005  # mAP50 (fraction) the accuracy control may lose


def map50_validation(data_yaml: Path, imgsz: int):
    """NNCF's ``validation_fn`` and its data: mAP50 of a compiled model on the val split, scored like
    Ultralytics' validator (multi-label NMS at conf 0.001, its match_predictions and ap_per_class)."""
    import nncf
    import torch
    from ultralytics.models.yolo.detect.val import DetectionValidator
    from ultralytics.utils.metrics import ap_per_class, box_iou
    from ultralytics.utils.nms import non_max_suppression

    from yolodefect.data.yolo_dataset import label_path_for, load_data_config, read_label_rows
    from yolodefect.exporting.calibration import preprocess

    config = load_data_config(data_yaml.parent)
    items = []
    for image in config.images("val"):
        import cv2

        height, width = cv2.imread(str(image)).shape[:2]
        scale = imgsz / max(height, width)
        pad_x, pad_y = (imgsz - round(width * scale)) / 2, (imgsz - round(height * scale)) / 2
        label = label_path_for(image)
        rows = read_label_rows(label) if label.exists() else np.zeros((0, 5))
        xywh = rows[:, 1:] * [width, height, width, height]
        xyxy = np.c_[xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2] * scale + [pad_x, pad_y] * 2
        items.append((preprocess(image, imgsz), rows[:, 0], xyxy))
    validator = DetectionValidator.__new__(DetectionValidator)
    validator.iouv = torch.linspace(0.5, 0.95, 10)

    def validate(compiled, data) -> float:
        output = compiled.outputs[0]
        stats = []
        for tensor, classes, boxes in data:
            detections = non_max_suppression(torch.from_numpy(compiled({0: tensor})[output]), conf_thres=0.001,
                                             iou_thres=0.7, max_det=300, multi_label=True)[0]
            correct = np.zeros((len(detections), 10), bool)
            if len(detections) and len(classes):
                iou = box_iou(torch.tensor(boxes, dtype=torch.float32), detections[:, :4])
                correct = np.asarray(validator.match_predictions(detections[:, 5], torch.tensor(classes).float(), iou))
            stats.append((correct, detections[:, 4].numpy(), detections[:, 5].numpy(), classes))
        tp, conf, predicted, target = (np.concatenate([s[i] for s in stats]) for i in range(4))
        return float(ap_per_class(tp, conf, predicted, target)[5][:, 0].mean()) if len(tp) else 0.0

    return validate, nncf.Dataset(items)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="data.yaml")
    parser.add_argument("--imgsz", type=int, default=256)
    parser.add_argument("--calib", type=int, default=300)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--accuracy-control", action="store_true")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    import nncf
    import openvino as ov

    from yolodefect.evaluate import evaluate
    from yolodefect.exporting import openvino_int8
    from yolodefect.exporting.calibration import preprocess, select_calibration_images
    from yolodefect.exporting.formats import ExportFormat, format_spec
    from yolodefect.exporting.ultralytics_formats import calibration_yaml, export_with_ultralytics
    from yolodefect.data.yolo_dataset import load_data_config
    from yolodefect.inference.timing import ALONE, measure, model_runner

    info = machine_info()
    print(machine_line(info))
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-ov-int8-"))
    spec = format_spec(ExportFormat.OPENVINO)
    config = load_data_config(args.data.parent)
    calibration = select_calibration_images(config, args.calib, seed=0)
    fp32 = work / "fp32_openvino_model"
    if not fp32.exists():
        (work / "fp32").mkdir(parents=True, exist_ok=True)
        shutil.move(str(export_with_ultralytics(spec, args.model, work / "fp32", imgsz=args.imgsz, dynamic=False,
                                                device="cpu")), fp32)
    variants: dict[str, dict] = {}
    started = time.perf_counter()
    ultralytics_dir = work / "ultralytics_int8_openvino_model"
    if not ultralytics_dir.exists():
        (work / "ul").mkdir(exist_ok=True)
        data = calibration_yaml(calibration.images, list(config.class_names), work / "ul")
        shutil.move(str(export_with_ultralytics(spec, args.model, work / "ul", imgsz=args.imgsz, dynamic=False,
                                                device="cpu", calibration_data=data)), ultralytics_dir)
    variants["ultralytics"] = {"path": ultralytics_dir, "seconds": round(time.perf_counter() - started, 1),
                               "float": "Sigmoids, the Detect head's decoding (Ultralytics' rule)"}
    for name, layers in (("ours", ("1",)), ("ours_plus_stem", ("0", "1"))):
        result = openvino_int8.quantize_openvino(fp32, work / f"{name}_openvino_model", calibration.images,
                                                 args.imgsz, float_layers=layers)
        variants[name] = {"path": result.path, "seconds": result.seconds,
                          "float": f"Ultralytics' rule + the convolutions of model.{', model.'.join(layers)}"}
    if args.accuracy_control:
        core = ov.Core()
        model = core.read_model(next(fp32.glob("*.xml")))
        scope = nncf.IgnoredScope(names=openvino_int8.float_op_names(model, float_layers=()))
        validate, validation_data = map50_validation(args.data, args.imgsz)
        started = time.perf_counter()
        quantized = nncf.quantize_with_accuracy_control(
            model, nncf.Dataset([preprocess(p, args.imgsz) for p in calibration.images]), validation_data,
            validation_fn=validate, max_drop=MAX_DROP, drop_type=nncf.DropType.ABSOLUTE,
            preset=nncf.QuantizationPreset.MIXED, ignored_scope=scope, subset_size=len(calibration.images))
        folder = work / "accuracy_control_openvino_model"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        ov.save_model(quantized, folder / next(fp32.glob("*.xml")).name, compress_to_fp16=False)
        shutil.copy2(fp32 / "metadata.yaml", folder / "metadata.yaml")
        fake_quantized = {op.get_friendly_name() for op in quantized.get_ordered_ops()
                          if op.get_type_name() == "FakeQuantize"}
        variants["accuracy_control"] = {"path": folder, "seconds": round(time.perf_counter() - started, 1),
                                        "float": f"Ultralytics' rule + what NNCF reverted (see its log); "
                                                 f"{len(fake_quantized)} FakeQuantize ops left"}
    rows = {"fp32 (f32 forced)": {"path": fp32, "hint": "f32"}, "fp32 (OpenVINO default precision)": {"path": fp32}}
    rows.update(variants)
    runners = [model_runner(label, row["path"], imgsz=args.imgsz, threads=2, precision_hint=row.get("hint"))
               for label, row in rows.items()]
    latency = measure(runners, runs=args.runs, warmup=10, threads=2, mode=ALONE, rounds=3)
    reference = None
    for index, (label, row) in enumerate(rows.items()):
        metrics = evaluate(row["path"], args.data, split="val", imgsz=args.imgsz, plots=False,
                           out_dir=work / f"eval-{index}").metrics
        reference = metrics.map50 if reference is None else reference
        row.update({"map50": metrics.map50, "map50_change_points": round((metrics.map50 - reference) * 100, 2),
                    "per_class_ap50": {c.name: c.ap50 for c in metrics.per_class},
                    "median_ms": latency[label].median_ms, "precision": latency[label].precision,
                    "path": str(row["path"])})
        print(f"{label:34s} mAP50 {metrics.map50:.4f} ({row['map50_change_points']:+.2f}) "
              f"{latency[label].median_ms:.2f} ms [{latency[label].precision}]", flush=True)
    payload = {"benchmark": "openvino_int8_scope", "machine": info, "model": str(args.model), "data": str(args.data),
               "imgsz": args.imgsz, "calibration_images": len(calibration.images), "timing": "alone, 3 rounds, "
               f"{args.runs} runs each, batch 1, 2 threads, OpenVINO LATENCY hint", "evaluator": "yolodefect.evaluate",
               "reference": "the FP32 IR computed in f32", "variants": rows}
    path = write_result("openvino_int8_scope", payload, args.output)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
