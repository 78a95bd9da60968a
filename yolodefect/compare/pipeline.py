"""``yolodefect compare``: YOLO and SSD trained on the same data and budget, scored by the same
evaluator, timed on the same machine.

Stages, each resumable from ``out``: train YOLO (``out/yolo``, ``done.json`` when finished), train
the SSD (``out/ssd``, ``checkpoint.pt`` every epoch, ``done.json``), then evaluate, time and report
(always redone: minutes at most). A crash halfway keeps the finished side.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from yolodefect.compare import latency as lat
from yolodefect.compare.best_f1 import BestF1, best_f1_threshold
from yolodefect.compare.options import CompareOptions
from yolodefect.compare.report import plot_comparison, verdict, write_json, write_markdown
from yolodefect.compare.result import CompareResult, SideResult, SpeedResult
from yolodefect.compare.ssd_model import SSDNetwork, architecture, input_size, load_ssd_model
from yolodefect.compare.ssd_predictor import CachedPredictor, SSDPredictor
from yolodefect.compare.ssd_train import SSDTrainOptions, SSDTrainResult, evaluator_module, torch_device, train_ssd
from yolodefect.compare.yolo_side import YoloTrainSettings, YoloTrainSummary, is_pretrained, train_yolo
from yolodefect.data.yolo_dataset import load_data_config
from yolodefect.errors import DatasetError, UsageError, YoloDefectError
from yolodefect.evaluate import EvalResult
from yolodefect.evaluation.ground_truth import load_ground_truth
from yolodefect.evaluation.predictors import Predictor
from yolodefect.exporting.onnx_fp32 import export_onnx_fp32
from yolodefect.inference.model_file import check_imgsz
from yolodefect.inference.timing import measure, onnxruntime_runner, torch_module_runner, torch_runner
from yolodefect.machine import machine_description

logger = logging.getLogger(__name__)


def _validate(data: Path, options: CompareOptions) -> tuple[Path, str, list[str]]:
    """Fail before any training: returns the data.yaml, the compared split and the class names."""
    if options.time_budget_min is None and options.epochs < 1:
        raise UsageError(f"--epochs {options.epochs}: train at least 1 epoch")
    if options.time_budget_min is not None and options.time_budget_min <= 0:
        raise UsageError(f"--time-budget {options.time_budget_min}: give minutes > 0")
    if Path(options.yolo).suffix not in (".pt", ".yaml", ".yml"):
        raise UsageError(f"--yolo {options.yolo}: give a .pt checkpoint or a .yaml model definition")
    if options.yolo_imgsz is not None:
        check_imgsz(options.yolo_imgsz, option="--yolo-imgsz")
    input_size(architecture(options.ssd), options.ssd_imgsz)
    if options.ssd_backbone_weights is not None and not Path(options.ssd_backbone_weights).is_file():
        raise UsageError(f"--ssd-backbone-weights {options.ssd_backbone_weights} does not exist")
    if options.latency_runs < 1 or options.latency_warmup < 0:
        raise UsageError("latency needs at least 1 timed run and a warm-up count >= 0")
    config = load_data_config(data)
    if config.yaml_path is None:
        raise DatasetError(f"{data} has no data.yaml: make one with `yolodefect convert`")
    for needed in ("train", "val"):
        if needed not in config.split_dirs:
            raise DatasetError(f"{data} has no {needed} split; both models need train and val "
                               "(re-run convert with --split)")
    split = options.split or ("test" if "test" in config.split_dirs else "val")
    if split not in config.split_dirs:
        raise DatasetError(f"--split {split}: {data} has only {', '.join(config.split_dirs)}")
    return config.yaml_path, split, config.class_names


def _workers(options: CompareOptions) -> int:
    if options.workers is not None:
        return options.workers
    return 0 if options.device == "cpu" else min(8, os.cpu_count() or 1)


def _evaluate_side(model_file: Path, predictor: Predictor, data_yaml: Path, split: str, class_names: list[str],
                   imgsz: int, out_dir: Path, options: CompareOptions) -> tuple[BestF1, EvalResult]:
    """Best-F1 threshold from the predictions, then THE evaluator at that threshold (predicting once)."""
    cached = CachedPredictor(predictor, class_names=class_names)
    ground_truth = load_ground_truth(load_data_config(data_yaml), split)
    predictions = cached([truth.image_path for truth in ground_truth])
    best = best_f1_threshold(ground_truth, predictions, class_names)
    evaluation = evaluator_module().evaluate(
        model_file, data_yaml, split=split, imgsz=imgsz, conf=best.threshold, predictor=cached, out_dir=out_dir,
        device=options.device, plots=options.plots,
    )
    return best, evaluation


def _yolo_speed(summary: YoloTrainSummary, options: CompareOptions, threads: int) -> SpeedResult:
    """The YOLO side timed as ``export`` times it: the checkpoint through Ultralytics' AutoBackend, and the
    FP32 ONNX graph ``yolodefect export`` ships (Ultralytics' exporter, onnxsim, the DFL Softmax rewrite)."""
    from ultralytics import YOLO

    shape = (1, 3, summary.imgsz, summary.imgsz)
    network = YOLO(str(summary.best_model)).model.float().eval()
    parameters = lat.count_parameters(network)
    network = network.fuse(verbose=False)  # what Ultralytics runs at inference
    gflops = lat.count_gflops(network, shape)
    runners = [torch_runner("pytorch", summary.best_model, summary.imgsz, threads)]
    onnx_path, diff, notes = None, None, []
    if options.onnx:
        with tempfile.TemporaryDirectory(prefix=".yolodefect-compare-onnx-", dir=summary.best_model.parent) as work:
            exported = export_onnx_fp32(summary.best_model, summary.best_model.with_suffix(".onnx"), Path(work),
                                        imgsz=summary.imgsz, dynamic=False)
        onnx_path = exported.path
        runners.append(onnxruntime_runner("onnxruntime", onnx_path, summary.imgsz, threads))
        diff = lat.onnx_max_abs_diff(network, onnx_path, shape, threads=threads)
        notes.append("YOLO ONNX: the FP32 graph `yolodefect export` writes (Ultralytics' exporter, onnxsim, DFL "
                     "Softmax rewrite; no NMS in the graph), so its latency is the one export reports")
    latency = measure(runners, runs=options.latency_runs, warmup=options.latency_warmup, threads=threads)
    return SpeedResult(summary.imgsz, parameters, gflops, summary.best_model, lat.file_size_mb(summary.best_model),
                       onnx_path, lat.file_size_mb(onnx_path), latency, diff, notes)


def _ssd_speed(trained: SSDTrainResult, options: CompareOptions, threads: int) -> SpeedResult:
    model, info = load_ssd_model(trained.best_model)
    network = SSDNetwork(model).eval()
    shape = (1, 3, info.image_size, info.image_size)
    runners = [torch_module_runner("pytorch", network, info.image_size, threads)]
    onnx_path, diff, notes = None, None, []
    if options.onnx:
        onnx_path = lat.export_onnx(network, trained.best_model.with_suffix(".onnx"), shape)
        runners.append(onnxruntime_runner("onnxruntime", onnx_path, info.image_size, threads))
        diff = lat.onnx_max_abs_diff(network, onnx_path, shape, threads=threads)
        notes.append("SSD ONNX: backbone + head only (class logits and box offsets per anchor); torchvision's "
                     "resize, anchor decoding and NMS stay outside the graph, as NMS is outside the YOLO export")
    latency = measure(runners, runs=options.latency_runs, warmup=options.latency_warmup, threads=threads)
    return SpeedResult(info.image_size, lat.count_parameters(model), lat.count_gflops(network, shape),
                       trained.best_model, lat.file_size_mb(trained.best_model), onnx_path,
                       lat.file_size_mb(onnx_path), latency, diff, notes)


def _fairness_notes(options: CompareOptions, yolo_pretrained: str | None, ssd_pretrained: str | None,
                    split: str, yolo_imgsz: int, ssd_size: int, threads: int) -> list[str]:
    notes = []
    if yolo_pretrained is None and ssd_pretrained is None:
        notes.append("both models trained from scratch: no pretrained weights on either side")
    elif yolo_pretrained and ssd_pretrained:
        notes.append(f"both start from pretrained weights: YOLO from {yolo_pretrained} (a whole detector), the SSD "
                     f"backbone from {ssd_pretrained}")
    else:
        with_weights = "YOLO" if yolo_pretrained else "SSD"
        notes.append(f"UNEQUAL START: only {with_weights} starts from pretrained weights "
                     f"({yolo_pretrained or ssd_pretrained}); for a like-for-like comparison train both from scratch "
                     "(--yolo yolo11n.yaml, no --ssd-backbone-weights) or give both pretrained weights")
    if yolo_imgsz != ssd_size:
        notes.append(f"input sizes differ: YOLO at {yolo_imgsz} px, SSD at {ssd_size} px")
    notes.append(f"latency: batch-1 forward of a (1, 3, S, S) tensor through the network only (no decoding, "
                 f"resizing or NMS), {threads} thread(s) in both runtimes, {options.latency_warmup} warm-up and "
                 f"{options.latency_runs} timed runs, timed as `yolodefect export` times (interleaved blocks); "
                 "YOLO's PyTorch network runs in Ultralytics' AutoBackend (Conv+BN fused), the SSD's is not fused "
                 "(ONNX Runtime fuses both)")
    notes.append("best epoch: YOLO by Ultralytics' fitness (val mAP50-95), SSD by val mAP50 from yolodefect's "
                 "evaluator")
    if split == "val":
        notes.append("the compared split (val) also picked each model's best epoch: a test split would be unbiased")
    notes.append(f"escape and false-reject rates are at each model's best-F1 threshold, chosen on {split} itself")
    return notes


def compare(data: Path | str, options: CompareOptions = CompareOptions()) -> CompareResult:
    """Train YOLO and SSD on ``data`` with one budget, score both with ``yolodefect.evaluate`` on the same
    split, time both on this machine, and write compare.json, compare.md and compare.png to ``options.out``.
    """
    import torch

    data = Path(data)
    data_yaml, split, class_names = _validate(data, options)
    out = Path(options.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    workers = _workers(options)
    threads = options.threads or torch.get_num_threads()
    budget = (f"{options.time_budget_min:g} min wall clock per model" if options.time_budget_min
              else f"{options.epochs} epoch{'s' if options.epochs != 1 else ''}")
    logger.info("compare on %s: %s, split %s, out %s", data_yaml, budget, split, out)

    yolo_summary = train_yolo(data_yaml, out / "yolo", YoloTrainSettings(
        model=options.yolo, epochs=options.epochs, time_budget_min=options.time_budget_min,
        imgsz=options.yolo_imgsz, batch=options.batch, workers=options.workers, device=options.device,
        seed=options.seed, plots=options.plots,
    ))
    ssd_trained = train_ssd(data_yaml, out / "ssd", SSDTrainOptions(
        architecture=options.ssd, epochs=options.epochs if not options.time_budget_min else max(options.epochs, 1000),
        time_budget_min=options.time_budget_min, image_size=options.ssd_imgsz, batch=options.batch,
        workers=workers, lr=options.ssd_lr, backbone_weights=options.ssd_backbone_weights, device=options.device,
        seed=options.seed,
    ))

    from yolodefect.evaluation.predictors import UltralyticsPredictor

    yolo_predictor = UltralyticsPredictor(yolo_summary.best_model, imgsz=yolo_summary.imgsz, device=options.device,
                                          batch=options.batch, progress=options.progress)
    yolo_best, yolo_eval = _evaluate_side(yolo_summary.best_model, yolo_predictor, data_yaml, split, class_names,
                                          yolo_summary.imgsz, out / "yolo" / f"eval-{split}", options)
    ssd_model, ssd_info = load_ssd_model(ssd_trained.best_model)
    ssd_device = torch_device(options.device)
    ssd_predictor = SSDPredictor(ssd_model.to(ssd_device), class_names=class_names, device=ssd_device,
                                 batch=options.batch)
    ssd_best, ssd_eval = _evaluate_side(ssd_trained.best_model, ssd_predictor, data_yaml, split, class_names,
                                        ssd_info.image_size, out / "ssd" / f"eval-{split}", options)
    implementations = {yolo_eval.metrics.implementation, ssd_eval.metrics.implementation}
    if len(implementations) != 1:
        raise YoloDefectError(f"the two models were scored by different evaluators ({implementations}); "
                              "this is a bug in compare")

    yolo_pretrained = options.yolo if is_pretrained(options.yolo) else None
    ssd_pretrained = str(options.ssd_backbone_weights) if options.ssd_backbone_weights else None
    sides = [
        SideResult("yolo", f"YOLO {Path(options.yolo).stem}", options.yolo, yolo_pretrained, yolo_summary.imgsz,
                   yolo_summary.epochs_trained, yolo_summary.best_epoch, yolo_summary.seconds,
                   yolo_summary.best_model, yolo_best.threshold, yolo_best.f1, yolo_eval,
                   _yolo_speed(yolo_summary, options, threads)),
        SideResult("ssd", f"SSD {options.ssd}", architecture(options.ssd).torchvision_name, ssd_pretrained,
                   ssd_info.image_size, ssd_trained.epochs_trained, ssd_trained.best_epoch, ssd_trained.seconds,
                   ssd_trained.best_model, ssd_best.threshold, ssd_best.f1, ssd_eval,
                   _ssd_speed(ssd_trained, options, threads)),
    ]
    notes = _fairness_notes(options, yolo_pretrained, ssd_pretrained, split, yolo_summary.imgsz,
                            ssd_info.image_size, threads)
    for side, best in zip(sides, (yolo_best, ssd_best)):
        if best.note:
            notes.append(f"{side.label}: {best.note}")
    for side in sides:
        notes.extend(note for note in side.evaluation.notes if note not in notes)  # e.g. no defect-free parts
    for side in sides:
        notes.extend(side.speed.notes)
    files = {"json": out / "compare.json", "markdown": out / "compare.md", "plot": out / "compare.png"}
    result = CompareResult(
        data=str(data_yaml), split=split, budget=budget, device=options.device, machine=machine_description(),
        evaluator=implementations.pop(), sides=sides, verdict=verdict(sides), files=files, notes=notes,
    )
    plot_comparison(sides, files["plot"])
    write_markdown(result, files["markdown"])
    write_json(result, files["json"])
    return result
