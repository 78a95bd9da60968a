"""The ``yolodefect`` command line: parse options, call one library function, render its result."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Optional

import typer

from yolodefect import __version__
from yolodefect.compare.options import CompareOptions
from yolodefect.console import (configure_logging, default_of, err_console, print_json, progress_bar, stdout_reserved,
                                ultralytics_logs_to_stderr, user_errors)
from yolodefect.data.convert import ConvertOptions
from yolodefect.data.review_merge import MergeOptions
from yolodefect.data.synth_dataset import SynthOptions
from yolodefect.demo import DemoOptions
from yolodefect.evaluate import evaluate
from yolodefect.exporting.options import ExportOptions
from yolodefect.train import TrainOptions

app = typer.Typer(
    name="yolodefect",
    help="From labelled defect images to an inline inspection station, on Ultralytics YOLO.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print the full result as JSON on stdout.")]
ForceOption = Annotated[bool, typer.Option("--force", help="Replace OUT if it is not empty.")]


def _version(value: bool) -> None:
    if value:
        print(f"yolodefect {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    log_format: Annotated[str, typer.Option(help="human (default) or json: one JSON object per log line on stderr, "
                                                 "for journald / Loki.")] = "human",
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
) -> None:
    if log_format not in ("human", "json"):
        raise typer.BadParameter(f"must be human or json, got {log_format!r}", param_hint="--log-format")
    configure_logging(debug, log_format)
    ctx.obj = {"debug": debug}


def _debug(ctx: typer.Context) -> bool:
    return bool(ctx.obj and ctx.obj.get("debug"))


@app.command()
def convert(
    ctx: typer.Context,
    src: Annotated[Path, typer.Argument(help="The labelled dataset to read (never modified).")],
    out: Annotated[Path, typer.Argument(help="Folder for the YOLO dataset (created).")],
    format: Annotated[str, typer.Option("--format", "-f", help="voc, coco, labelme, deeppcb, mask, yolo-seg, yolo or auto.")] = default_of(ConvertOptions, "format"),
    split: Annotated[str, typer.Option(help="train,val[,test] fractions for a seeded split stratified by class.")] = default_of(ConvertOptions, "split"),
    keep_split: Annotated[Optional[bool], typer.Option("--keep-split/--resplit", help="Keep the source's own split, or re-split. Default: keep it when every image has one.")] = default_of(ConvertOptions, "keep_split"),
    seed: Annotated[int, typer.Option(help="Seed of the split and of tile sampling.")] = default_of(ConvertOptions, "seed"),
    classes: Annotated[Optional[list[str]], typer.Option("--classes", help="Rename or merge classes: 'old=new' or 'a,b=defect' (repeatable, or ';'-separated).")] = None,
    drop: Annotated[Optional[list[str]], typer.Option("--drop", help="Drop a class (repeatable).")] = None,
    copy: Annotated[bool, typer.Option("--copy/--link", help="Copy images (EXIF orientation applied), or link them (default, falls back to copy).")] = default_of(ConvertOptions, "transfer") == "copy",
    tile: Annotated[Optional[int], typer.Option(help="Cut images into tiles of this many pixels.")] = default_of(ConvertOptions, "tile"),
    overlap: Annotated[float, typer.Option(help="Tile overlap as a fraction of the tile.")] = default_of(ConvertOptions, "overlap"),
    min_visibility: Annotated[float, typer.Option(help="Keep a box in a tile if this share of it is inside.")] = default_of(ConvertOptions, "min_visibility"),
    background_tiles: Annotated[float, typer.Option(help="Share of defect-free tiles kept.")] = default_of(ConvertOptions, "background_tiles"),
    include_templates: Annotated[bool, typer.Option(help="DeepPCB: add the defect-free template images as backgrounds.")] = default_of(ConvertOptions, "include_templates"),
    min_area: Annotated[int, typer.Option(help="Masks: smallest component kept, in pixels.")] = default_of(ConvertOptions, "mask_min_area"),
    mask_threshold: Annotated[int, typer.Option(help="Masks: foreground is above this grey level.")] = default_of(ConvertOptions, "mask_threshold"),
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Skip malformed files (listed in conversion.json) instead of stopping.")] = default_of(ConvertOptions, "skip_bad"),
    force: ForceOption = default_of(ConvertOptions, "force"),
    json_output: JsonOption = False,
) -> None:
    """Convert a labelled defect dataset into a clean, split YOLO dataset.

    Writes OUT/images/{train,val,test}, OUT/labels/..., OUT/data.yaml and OUT/conversion.json.

    [bold]Examples[/bold]

      yolodefect convert ../shared/datasets/neu-det neu-yolo --format voc

      yolodefect convert PCBData pcb-yolo --format deeppcb --copy

      yolodefect convert coco/ out/ --classes 'scratch,scuff=surface' --drop label_noise
    """
    from yolodefect.data.convert import convert as run_convert
    from yolodefect.render import render_conversion

    with user_errors(_debug(ctx)):
        options = ConvertOptions(
            format=format, split=split, keep_split=keep_split, seed=seed, classes=tuple(classes or ()),
            drop=tuple(drop or ()), transfer="copy" if copy else "link", tile=tile, overlap=overlap,
            min_visibility=min_visibility, background_tiles=background_tiles, skip_bad=skip_bad, force=force,
            include_templates=include_templates, mask_min_area=min_area, mask_threshold=mask_threshold,
        )
        with progress_bar(not json_output) as progress:
            result = run_convert(src, out, options, progress)
        if json_output:
            print_json(result.to_dict())
        else:
            render_conversion(result, err_console)


@app.command()
def synth(
    ctx: typer.Context,
    out: Annotated[Path, typer.Argument(help="Folder for the synthetic YOLO dataset (created).")],
    kind: Annotated[str, typer.Option(help="steel (scratch, pit, inclusion, patch) or pcb (open, short, mousebite, spur, spurious_copper, pin_hole).")] = default_of(SynthOptions, "kind"),
    images: Annotated[int, typer.Option(help="Number of images.")] = default_of(SynthOptions, "images"),
    size: Annotated[int, typer.Option(help="Image side in pixels.")] = default_of(SynthOptions, "size_wh")[0],
    background: Annotated[float, typer.Option(help="Share of defect-free images.")] = default_of(SynthOptions, "background_fraction"),
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same dataset.")] = default_of(SynthOptions, "seed"),
    split: Annotated[str, typer.Option(help="train,val[,test] fractions.")] = default_of(SynthOptions, "split"),
    force: ForceOption = default_of(SynthOptions, "force"),
    json_output: JsonOption = False,
) -> None:
    """Generate a seeded synthetic defect dataset (no download needed).

    [bold]Example[/bold]

      yolodefect synth steel-demo --kind steel --images 300
    """
    from yolodefect.data.synth_dataset import synthesize
    from yolodefect.render import render_conversion

    with user_errors(_debug(ctx)):
        options = SynthOptions(kind=kind, images=images, seed=seed, size_wh=(size, size),
                               background_fraction=background, split=split, force=force)
        with progress_bar(not json_output) as progress:
            result = synthesize(out, options, progress)
        if json_output:
            print_json(result.to_dict())
        else:
            render_conversion(result, err_console)


@app.command()
def check(
    ctx: typer.Context,
    data: Annotated[Path, typer.Argument(help="A data.yaml, or a dataset folder holding one.")],
    json_output: JsonOption = False,
) -> None:
    """Validate a YOLO dataset: counts, class balance, box sizes, and every problem found.

    Exit code 1 when an error-level problem is found (corrupt images, bad labels, leakage).

    [bold]Example[/bold]

      yolodefect check neu-yolo
    """
    from yolodefect.data.check import check_dataset
    from yolodefect.render import render_check

    with user_errors(_debug(ctx)):
        report = check_dataset(data)
        if json_output:
            print_json(report.to_dict())
        else:
            render_check(report, err_console)
        if report.has_errors:
            raise typer.Exit(1)


def _parse_overrides(pairs: list[str] | None) -> dict:
    import yaml

    from yolodefect.errors import UsageError

    overrides = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--set {pair!r}: write key=value, e.g. --set lr0=0.005")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


@app.command()
def train(
    ctx: typer.Context,
    data: Annotated[Path, typer.Argument(help="A data.yaml or a dataset folder made by `convert`.")],
    model: Annotated[Optional[str], typer.Option(help="Any Ultralytics checkpoint (transfer learning, other classes are fine) or a .yaml to "
                                                       "train from scratch. Default: COCO-pretrained yolo26n.pt from Ultralytics' weights folder "
                                                       "(downloaded there when online), never a file of the working folder. A .pt file runs code "
                                                       "when loaded: use checkpoints from sources you trust.")] = None,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = default_of(TrainOptions, "epochs"),
    imgsz: Annotated[Optional[int], typer.Option(help="Training image size. Default: suggested by `check` from the box sizes.")] = None,
    batch: Annotated[Optional[int], typer.Option(help="Batch size. Default: 16 on CPU, AutoBatch on GPU.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Data loader workers on GPU (default up to 8; Ultralytics uses none on CPU).")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu, 0, 0,1 ... Default: the first GPU, else CPU.")] = None,
    threads: Annotated[Optional[int], typer.Option(help="PyTorch threads for CPU training. Default: every physical core (Ultralytics uses cores - 1).")] = None,
    class_weights: Annotated[Optional[float], typer.Option("--class-weights", help="cls_pw power in [0, 1] for class imbalance. Default: 0.5 when check finds more than 3:1, else off.")] = None,
    freeze: Annotated[Optional[int], typer.Option(help="Freeze the first N layers (transfer learning with little data).")] = None,
    patience: Annotated[int, typer.Option(help="Stop after this many epochs without val improvement.")] = default_of(TrainOptions, "patience"),
    flipud: Annotated[Optional[float], typer.Option(help="Vertical flip probability. Default: Ultralytics' 0.0 (0.5 measured no gain on NEU-DET, from scratch or fine-tuning); try 0.5 where defects have no 'up'.")] = None,
    nbs: Annotated[Optional[int], typer.Option(help="Images per weight update (Ultralytics' nominal batch). Default: from scratch (a .yaml --model), the batch size when accumulating to Ultralytics' 64 would give fewer than 10,000 updates (small defect sets); otherwise, and always when fine-tuning a checkpoint, 64.")] = None,
    grayscale: Annotated[Optional[bool], typer.Option("--grayscale/--color", help="Turn hue/saturation augmentation off for grayscale data. Default: detected.")] = None,
    act: Annotated[Optional[str], typer.Option(help="relu or silu: the activation of every convolution. relu is INT8-friendly (faster ONNX Runtime/OpenVINO INT8); it needs a .yaml --model (from scratch) or a checkpoint already trained with it. Default: the model's own (SiLU).")] = None,
    name: Annotated[str, typer.Option(help="Run name: results go to PROJECT/NAME.")] = default_of(TrainOptions, "name"),
    project: Annotated[Path, typer.Option(help="Folder for runs.")] = default_of(TrainOptions, "project"),
    exist_ok: Annotated[bool, typer.Option("--exist-ok", help="Reuse PROJECT/NAME instead of NAME2, NAME3...")] = default_of(TrainOptions, "exist_ok"),
    resume: Annotated[bool, typer.Option("--resume", help="Resume the interrupted run PROJECT/NAME.")] = default_of(TrainOptions, "resume"),
    seed: Annotated[int, typer.Option(help="Training seed.")] = default_of(TrainOptions, "seed"),
    no_check: Annotated[bool, typer.Option("--no-check", help="Train even if `check` finds errors.")] = not default_of(TrainOptions, "run_check"),
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Any other Ultralytics argument, key=value (repeatable).")] = None,
    json_output: JsonOption = False,
) -> None:
    """Fine-tune YOLO on a defect dataset with defect-aware presets, then score it.

    Runs `check` first, shows the presets and why, trains with Ultralytics, and scores the best model on val with the same evaluator as `yolodefect eval`.

    [bold]Examples[/bold]

      yolodefect train neu-yolo --epochs 100

      yolodefect train neu-yolo --model yolo11n.yaml --imgsz 256 --epochs 30   # offline, from scratch

      yolodefect train pcb-yolo --model my_line_model.pt --freeze 10 --epochs 50
    """
    from yolodefect.render import render_presets, render_train
    from yolodefect.train import plan_training, run_training

    with user_errors(_debug(ctx)):
        options = TrainOptions(
            model=model, epochs=epochs, imgsz=imgsz, batch=batch, workers=workers, threads=threads, device=device,
            class_weights=class_weights, freeze=freeze, patience=patience, flipud=flipud, nbs=nbs, grayscale=grayscale,
            act=act, resume=resume, project=project, name=name, exist_ok=exist_ok, seed=seed, run_check=not no_check,
            overrides=_parse_overrides(set_),
        )
        plan = plan_training(data, options)
        if not json_output:
            render_presets(plan.presets, err_console)
        with stdout_reserved(json_output):
            result = run_training(plan)
        if json_output:
            print_json(result.to_dict())
        else:
            render_train(result, err_console)


@app.command(name="eval")
def eval_command(
    ctx: typer.Context,
    model: Annotated[Path, typer.Argument(help="Any model Ultralytics loads: .pt, .onnx (FP32 or INT8), OpenVINO folder, .engine; or an anomaly model (.npz).")],
    data: Annotated[Path, typer.Argument(help="A data.yaml or dataset folder.")],
    split: Annotated[str, typer.Option(help="val or test.")] = default_of(evaluate, "split"),
    imgsz: Annotated[Optional[int], typer.Option(help="Default: the size the model was trained or exported at.")] = None,
    conf: Annotated[float, typer.Option(help="One confidence threshold for every class (when neither --thresholds nor --target-recall).")] = default_of(evaluate, "conf"),
    thresholds: Annotated[Optional[Path], typer.Option(help="A thresholds.yaml to score at (with --baseline: the baseline's; default: the thresholds.yaml beside it).")] = None,
    target_recall: Annotated[Optional[float], typer.Option(help="Choose thresholds reaching this part-level recall with the fewest false rejects, and write thresholds.yaml (with --baseline: the baseline's).")] = None,
    per_class: Annotated[bool, typer.Option("--per-class", help="With --target-recall: one threshold per class.")] = default_of(evaluate, "per_class_thresholds"),
    reject: Annotated[Optional[list[str]], typer.Option("--reject", help="A class that rejects a part (repeatable). Default: the thresholds file's, else every class.")] = None,
    min_area: Annotated[float, typer.Option(help="As watch --min-area: defect boxes smaller than this many square pixels do not count.")] = default_of(evaluate, "min_area"),
    roi: Annotated[Optional[str], typer.Option(help="As watch --roi: only defects centred inside the polygon 'x,y x,y x,y ...' count. Frame pixels: the images must be the station's frames.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Folder for metrics.json, thresholds.yaml and plots. Default: a new runs/eval/MODEL-SPLIT (then MODEL-SPLIT2, ...).")] = None,
    device: Annotated[str, typer.Option(help="cpu or a GPU index.")] = default_of(evaluate, "device"),
    baseline: Annotated[Optional[Path], typer.Option(help="The model the line runs now: score both on the same split and say whether MODEL may replace it (not more escapes, overall and per class, at the baseline's false-reject rate); exit 1 when it may not.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Score a model: mAP, per-class AP and P/R/F1, confusion matrix, escape and false-reject rates.

    The one evaluator of the project: the same numbers for a .pt and its ONNX or INT8 export.

    [bold]Examples[/bold]

      yolodefect eval runs/train/weights/best.pt neu-yolo --split test

      yolodefect eval best.pt neu-yolo --target-recall 0.99 --per-class   # writes thresholds.yaml

      yolodefect eval best.pt frames --thresholds thresholds.yaml --roi "40,20 600,20 600,340 40,340" --min-area 64

      yolodefect eval new/best.pt neu-yolo --baseline line/best.pt --split test   # gate: exit 1 = keep the old one

    The escape and false-reject rates are the station's: watch with the same --conf, --thresholds,
    --reject, --min-area and --roi rejects the same parts.

    An anomaly model (yolodefect anomaly train) is scored instead by image and pixel AUROC and its part
    rates; --target-recall writes a thresholds.yaml with the class 'anomaly' (--conf, --per-class,
    --min-area, --roi are detector options and refused).
    """
    from yolodefect.anomaly import is_anomaly_model_file
    from yolodefect.errors import UsageError
    from yolodefect.evaluate import new_eval_dir
    from yolodefect.render import render_anomaly_eval, render_eval

    with user_errors(_debug(ctx)):
        out_dir = out or new_eval_dir(model, split)
        run_eval, render = evaluate, render_eval
        extra = {"baseline": baseline} if baseline is not None else {}
        if is_anomaly_model_file(model):  # same options; the detector-only ones are refused there
            from yolodefect.anomaly.evaluate import evaluate_anomaly as run_eval
            render = render_anomaly_eval
            if baseline is not None:
                raise UsageError("--baseline compares two detectors; an anomaly model is scored on its own")
        with progress_bar(not json_output) as progress, stdout_reserved(json_output):
            result = run_eval(model, data, split=split, imgsz=imgsz, conf=conf, thresholds=thresholds,
                              target_recall=target_recall, per_class_thresholds=per_class, reject_classes=reject,
                              min_area=min_area, roi=roi, out_dir=out_dir, device=device, progress=progress, **extra)
        if json_output:
            print_json(result.to_dict())
        else:
            render(result, err_console)
            err_console.print(f"Results are in [bold]{out_dir}[/bold]", highlight=False)
    promotion = getattr(result, "promotion", None)
    if promotion is not None and not promotion.promote:
        raise typer.Exit(1)  # a script gates on it: the new model may not replace the baseline


def _help_of(name: str) -> str:
    # The station's options document themselves once, in yolodefect.stream.options.
    from yolodefect.stream.options import OPTION_HELP

    return OPTION_HELP[name]


@app.command()
def watch(
    ctx: typer.Context,
    camera: Annotated[Optional[int], typer.Option(help="OpenCV camera index (same as --source N).")] = None,
    source: Annotated[Optional[list[str]], typer.Option(help=_help_of("source") + " Repeat for several cameras in one station (one model, shared).")] = None,
    camera_name: Annotated[Optional[str], typer.Option(help=_help_of("camera"))] = None,
    config: Annotated[Optional[Path], typer.Option(help="Station YAML (see examples/station.yaml); flags override it.")] = None,
    model: Annotated[Optional[Path], typer.Option(help=_help_of("model"))] = None,
    mode: Annotated[Optional[str], typer.Option(help=_help_of("mode"))] = None,
    imgsz: Annotated[Optional[int], typer.Option(help=_help_of("imgsz"))] = None,
    device: Annotated[Optional[str], typer.Option(help=_help_of("device"))] = None,
    thresholds: Annotated[Optional[Path], typer.Option(help=_help_of("thresholds"))] = None,
    conf: Annotated[Optional[float], typer.Option(help=_help_of("conf"))] = None,
    reject: Annotated[Optional[list[str]], typer.Option("--reject", help=_help_of("reject_classes"))] = None,
    min_area: Annotated[Optional[float], typer.Option(help=_help_of("min_area"))] = None,
    roi: Annotated[Optional[str], typer.Option(help="Region of interest polygon 'x,y x,y x,y ...' in frame pixels.")] = None,
    tile: Annotated[Optional[int], typer.Option(help=_help_of("tile"))] = None,
    anomaly: Annotated[Optional[Path], typer.Option(help=_help_of("anomaly"))] = None,
    anomaly_only: Annotated[Optional[bool], typer.Option("--anomaly-only/--no-anomaly-only", help=_help_of("anomaly_only"))] = None,
    anomaly_thresholds: Annotated[Optional[Path], typer.Option(help=_help_of("anomaly_thresholds"))] = None,
    trigger: Annotated[Optional[str], typer.Option(help=_help_of("trigger"))] = None,
    parts: Annotated[Optional[str], typer.Option(help=_help_of("parts"))] = None,
    belt: Annotated[Optional[Path], typer.Option(help=_help_of("belt"))] = None,
    belt_frames: Annotated[Optional[int], typer.Option(help=_help_of("belt_frames"))] = None,
    part_class: Annotated[Optional[str], typer.Option(help=_help_of("part_class"))] = None,
    min_part_area: Annotated[Optional[float], typer.Option(help=_help_of("min_part_area"))] = None,
    decide_at: Annotated[Optional[float], typer.Option(help=_help_of("decide_at"))] = None,
    min_frames: Annotated[Optional[int], typer.Option(help=_help_of("min_frames"))] = None,
    min_part_frames: Annotated[Optional[int], typer.Option(help=_help_of("min_part_frames"))] = None,
    emit_pass: Annotated[Optional[bool], typer.Option("--emit-pass/--no-emit-pass", help=_help_of("emit_pass"))] = None,
    sink: Annotated[Optional[list[str]], typer.Option("--sink", help=_help_of("sinks"))] = None,
    mqtt: Annotated[Optional[str], typer.Option(help="Shorthand for --sink mqtt://host:port/topic (QoS 1).")] = None,
    webhook: Annotated[Optional[str], typer.Option(help="Shorthand for --sink https://...; auth header from $YOLODEFECT_WEBHOOK_AUTH.")] = None,
    opcua: Annotated[Optional[str], typer.Option(help="Shorthand for --sink opc.tcp://host:port?decision=ns=2;i=2&defect_class=...")] = None,
    outbox: Annotated[Optional[Path], typer.Option(help=_help_of("outbox"))] = None,
    evidence: Annotated[Optional[Path], typer.Option(help=_help_of("evidence_dir"))] = None,
    evidence_cam: Annotated[Optional[bool], typer.Option("--evidence-cam/--no-evidence-cam", help=_help_of("evidence_cam"))] = None,
    evidence_cam_model: Annotated[Optional[Path], typer.Option(help=_help_of("evidence_cam_model"))] = None,
    review: Annotated[Optional[Path], typer.Option(help=_help_of("review"))] = None,
    review_band: Annotated[Optional[float], typer.Option(help=_help_of("review_band"))] = None,
    review_sample: Annotated[Optional[float], typer.Option(help=_help_of("review_sample"))] = None,
    review_max_per_min: Annotated[Optional[int], typer.Option(help=_help_of("review_max_per_min"))] = None,
    review_max_items: Annotated[Optional[int], typer.Option(help=_help_of("review_max_items"))] = None,
    save: Annotated[Optional[Path], typer.Option(help=_help_of("save"))] = None,
    show: Annotated[Optional[bool], typer.Option("--show/--no-show", help=_help_of("show"))] = None,
    fps: Annotated[Optional[float], typer.Option(help=_help_of("fps_cap"))] = None,
    loop: Annotated[Optional[bool], typer.Option("--loop/--no-loop", help=_help_of("loop"))] = None,
    follow: Annotated[Optional[bool], typer.Option("--follow/--no-follow", help=_help_of("follow"))] = None,
    fail_safe: Annotated[Optional[str], typer.Option(help=_help_of("fail_safe"))] = None,
    max_latency_ms: Annotated[Optional[float], typer.Option(help=_help_of("max_latency_ms"))] = None,
    max_frames: Annotated[Optional[int], typer.Option(help=_help_of("max_frames"))] = None,
    serve: Annotated[Optional[str], typer.Option(help=_help_of("serve"))] = None,
    serve_token_env: Annotated[Optional[str], typer.Option(help=_help_of("serve_token_env"))] = None,
    serve_insecure: Annotated[Optional[bool], typer.Option("--serve-insecure/--no-serve-insecure", help=_help_of("serve_insecure"))] = None,
    event_store: Annotated[Optional[Path], typer.Option(help=_help_of("event_store"))] = None,
    drift: Annotated[Optional[str], typer.Option(help=_help_of("drift"))] = None,
    profile: Annotated[Optional[Path], typer.Option(help=_help_of("profile"))] = None,
    drift_window: Annotated[Optional[int], typer.Option(help=_help_of("drift_window"))] = None,
    drift_psi: Annotated[Optional[float], typer.Option(help=_help_of("drift_psi"))] = None,
    camera_faults: Annotated[Optional[bool], typer.Option("--camera-faults/--no-camera-faults", help=_help_of("camera_faults"))] = None,
    frozen_s: Annotated[Optional[float], typer.Option(help=_help_of("frozen_s"))] = None,
    reload_on_change: Annotated[Optional[bool], typer.Option("--reload-on-change/--no-reload-on-change", help=_help_of("reload_on_change"))] = None,
    json_output: JsonOption = False,
) -> None:
    """Run the inspection station: read frames, detect, draw, and emit one event per defective part.

    Every event is written to a local SQLite outbox first and removed only when every sink has it, so a broker or webhook that is down loses nothing. Ctrl-C or SIGTERM finishes the frame, flushes and prints a summary. One station per outbox: a second one on the same file fails at start. If the outbox cannot store an event (disk full), the event still goes to the sinks directly and to stderr ('NOT PERSISTED EVENT {json}'), and the command exits 1 naming it.

    [bold]Examples[/bold]

      yolodefect watch --camera 0 --model best.pt --sink events.jsonl

      yolodefect watch --source conveyor.mp4 --model best_int8.onnx --mqtt mqtt://127.0.0.1:1883/line1/rejects

      yolodefect watch --source /line/cam1/ --follow --thresholds thresholds.yaml --evidence evidence/

      yolodefect watch --source conveyor.mp4 --model best.pt --anomaly runs/anomaly/parts/anomaly.npz --evidence evidence/

      yolodefect watch --source line1.mp4 --source line2.mp4 --serve 127.0.0.1:8080 --evidence evidence/

      yolodefect watch --config examples/station.yaml
    """
    from rich.live import Live

    from yolodefect.errors import UsageError
    from yolodefect.render import render_model_card, render_not_persisted, render_watch_summary, watch_panel
    from yolodefect.stream.options import resolve_options
    from yolodefect.stream.watch import watch as run_watch

    with user_errors(_debug(ctx)):
        if camera is not None and source:
            raise UsageError("give --camera or --source, not both")
        sources = [str(camera)] if camera is not None else list(source or [])
        if len(sources) > 1 and camera_name is not None:
            raise UsageError("--camera-name names the one camera; with several --source each is named after its "
                             "file (or cam0, cam1 ...): name them in a station file's cameras: list instead")
        sinks = [*(sink or []), *(url for url in (mqtt, webhook, opcua) if url)]
        overrides = {
            "source": sources[0] if len(sources) == 1 else None, "model": model,
            "cameras": [{"source": s} for s in sources] if len(sources) > 1 else None, "camera": camera_name,
            "serve": serve, "serve_token_env": serve_token_env, "serve_insecure": serve_insecure,
            "event_store": event_store, "mode": mode, "imgsz": imgsz,
            "device": device, "thresholds": thresholds, "conf": conf, "reject_classes": tuple(reject) if reject else None,
            "min_area": min_area, "roi": roi, "tile": tile, "min_frames": min_frames, "emit_pass": emit_pass,
            "trigger": trigger, "parts": parts, "belt": belt, "belt_frames": belt_frames, "part_class": part_class,
            "min_part_area": min_part_area, "decide_at": decide_at, "min_part_frames": min_part_frames,
            "sinks": tuple(sinks) if sinks else None, "outbox": outbox, "evidence_dir": evidence, "save": save,
            "evidence_cam": evidence_cam, "evidence_cam_model": evidence_cam_model,
            "review": review, "review_band": review_band, "review_sample": review_sample,
            "review_max_per_min": review_max_per_min, "review_max_items": review_max_items,
            "show": show, "fps_cap": fps, "loop": loop, "follow": follow, "fail_safe": fail_safe,
            "max_latency_ms": max_latency_ms, "max_frames": max_frames, "anomaly": anomaly, "anomaly_only": anomaly_only,
            "anomaly_thresholds": anomaly_thresholds,
            "drift": drift, "profile": profile, "drift_window": drift_window, "drift_psi": drift_psi,
            "camera_faults": camera_faults, "frozen_s": frozen_s, "reload_on_change": reload_on_change,
        }
        options = resolve_options(config, overrides)
        if options.cameras and sources:
            options = dataclasses.replace(options, source=None)  # --source replaces the station file's cameras
        if options.source is None and not options.cameras:
            raise UsageError("nothing to watch: give --camera N, --source PATH_OR_URL, or 'source:' in --config")
        stdout_events = "-" in options.sinks
        shown_card = []

        def show_card(stats) -> None:
            if not shown_card:
                shown_card.append(True)
                render_model_card(stats.model_card, err_console)

        if json_output or stdout_events:
            # Events (or the JSON summary) own stdout: keep the panel and Ultralytics' log lines off it.
            ultralytics_logs_to_stderr()
            summary = run_watch(options, install_signal_handlers=True, on_stats=show_card)
        else:
            with Live(console=err_console, refresh_per_second=4, transient=True) as live:
                def update(stats) -> None:
                    show_card(stats)
                    live.update(watch_panel(stats))

                summary = run_watch(options, install_signal_handlers=True, on_stats=update)
        if json_output and not stdout_events:
            print_json(summary.to_dict())
            render_not_persisted(summary, err_console)
        else:
            render_watch_summary(summary, err_console)
        if summary.not_persisted_event_ids:
            # They reached the sinks at best without durability: whoever runs the station must notice.
            raise typer.Exit(1)


@app.command()
def calibrate(
    ctx: typer.Context,
    video: Annotated[Path, typer.Argument(help="A recording of master parts passing the camera (never modified).")],
    truth: Annotated[Path, typer.Option("--truth", help="CSV of the parts in the order they pass: part,truth[,classes] (good/defective).")],
    model: Annotated[Optional[Path], typer.Option(help=_help_of("model"))] = None,
    config: Annotated[Optional[Path], typer.Option(help="Station YAML: the same model, belt and rule settings as watch.")] = None,
    thresholds: Annotated[Optional[Path], typer.Option(help="Start from (or, with --verify, check) these thresholds.")] = None,
    target_recall: Annotated[float, typer.Option(help="Share of defective parts the station must reject.")] = 0.99,
    verify: Annotated[bool, typer.Option("--verify", help="Daily check: run at --thresholds; exit 1 when a known bad part passes.")] = False,
    max_min_frames: Annotated[int, typer.Option(help="Search k (frames a defect must be seen on) in 1..this.")] = 10,
    imgsz: Annotated[Optional[int], typer.Option(help=_help_of("imgsz"))] = None,
    tile: Annotated[Optional[int], typer.Option(help=_help_of("tile"))] = None,
    device: Annotated[Optional[str], typer.Option(help=_help_of("device"))] = None,
    belt: Annotated[Optional[Path], typer.Option(help=_help_of("belt"))] = None,
    belt_frames: Annotated[Optional[int], typer.Option(help=_help_of("belt_frames"))] = None,
    decide_at: Annotated[Optional[float], typer.Option(help=_help_of("decide_at"))] = None,
    min_frames: Annotated[Optional[int], typer.Option(help="With --verify: override the thresholds file's k.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Output folder (default runs/calibrate/<video>).")] = None,
    json_output: JsonOption = False,
) -> None:
    """Choose (or verify) the station's thresholds on a run of known good and bad parts.

    The station itself runs over VIDEO (same part finder, same rule as watch); its parts are paired in order with the truth file. Without --verify it chooses per-class thresholds and k (a defect must be seen on k of a part's frames) for --target-recall with the fewest false rejects, judging each candidate on parts its thresholds were not chosen on (5-fold cross-validation), and writes thresholds.yaml for watch with what it promises on new parts. With --verify it is the daily check with master parts: exit 1 when a known bad part passes or a part is not found.

    [bold]Examples[/bold]

      yolodefect calibrate masters.mp4 --truth masters.csv --model best_int8.onnx --thresholds runs/eval/best-val/thresholds.yaml

      yolodefect calibrate today.mp4 --truth masters.csv --model best_int8.onnx --thresholds runs/calibrate/masters/thresholds.yaml --verify
    """
    from yolodefect.calibrate import CalibrateOptions, calibrate as run_calibrate
    from yolodefect.render import render_calibration
    from yolodefect.stream.options import resolve_options

    with user_errors(_debug(ctx)):
        station = resolve_options(config, {"model": model, "thresholds": thresholds, "imgsz": imgsz, "tile": tile,
                                           "device": device, "belt": belt, "belt_frames": belt_frames,
                                           "decide_at": decide_at, "min_frames": min_frames})
        if station.model is None:
            from yolodefect.shipped import with_shipped_model

            station = with_shipped_model(station)
        options = CalibrateOptions(target_recall=target_recall, verify=verify, max_min_frames=max_min_frames, out_dir=out)
        with stdout_reserved(json_output):
            result = run_calibrate(video, truth, station, options)
        if json_output:
            print_json(result.to_dict())
        else:
            render_calibration(result, err_console)
            err_console.print(f"Results are in [bold]{result.out_dir}[/bold]", highlight=False)
        if verify and not result.ok:
            raise typer.Exit(1)


@app.command()
def demo(
    ctx: typer.Context,
    out: Annotated[Path, typer.Argument(help="Folder for everything the demo writes (created).")] = default_of(DemoOptions, "out"),
    quick: Annotated[bool, typer.Option("--quick", help="Smaller data and video: about a minute instead of a few.")] = default_of(DemoOptions, "quick"),
    seed: Annotated[int, typer.Option(help="Seed of the generated data and video.")] = default_of(DemoOptions, "seed"),
    force: Annotated[bool, typer.Option("--force", help="Replace OUT if an earlier demo wrote it.")] = default_of(DemoOptions, "force"),
    json_output: JsonOption = False,
) -> None:
    """Run the whole line on generated data, offline: data, check, fine-tune, eval, INT8 export, video, watch.

    Uses the shipped demonstration model (weights/yolodefect-demo.pt, trained on synthetic parts) and writes everything into OUT.

    [bold]Examples[/bold]

      yolodefect demo

      yolodefect demo /tmp/demo --quick
    """
    from yolodefect.demo import run_demo
    from yolodefect.render import render_demo

    with user_errors(_debug(ctx)):
        def announce(title: str, explanation: str) -> None:
            if not json_output:
                err_console.print(f"\n[bold cyan]{title}[/bold cyan]  {explanation}", highlight=False)

        with progress_bar(not json_output) as progress, stdout_reserved(json_output):
            result = run_demo(DemoOptions(out=out, quick=quick, seed=seed, force=force), on_step=announce,
                              progress=progress)
        if json_output:
            print_json(result.to_dict())
        else:
            render_demo(result, err_console)


@app.command()
def compare(
    ctx: typer.Context,
    data: Annotated[Path, typer.Argument(help="A data.yaml or dataset folder made by `convert`.")],
    yolo: Annotated[str, typer.Option(help="YOLO model: a .yaml trains from scratch, a .pt starts from its weights.")] = default_of(CompareOptions, "yolo"),
    ssd: Annotated[str, typer.Option(help="ssdlite320 (MobileNetV3) or ssd300 (VGG16).")] = default_of(CompareOptions, "ssd"),
    epochs: Annotated[Optional[int], typer.Option(help=f"The same epoch budget for both (default {default_of(CompareOptions, 'epochs')}).")] = None,
    time_budget: Annotated[Optional[float], typer.Option(help="Wall-clock minutes per model instead of epochs.")] = None,
    yolo_imgsz: Annotated[Optional[int], typer.Option(help="YOLO image size (default: what `train` chooses).")] = None,
    ssd_imgsz: Annotated[Optional[int], typer.Option(help="SSD image size (default: native, 320 or 300).")] = None,
    ssd_backbone_weights: Annotated[Optional[Path], typer.Option(help="torchvision ImageNet backbone .pth (offline torchvision cannot download it); none: from scratch.")] = None,
    ssd_lr: Annotated[Optional[float], typer.Option(help="SSD learning rate (default: torchvision's recipe scaled to the batch).")] = None,
    batch: Annotated[int, typer.Option(help="Batch size for both.")] = default_of(CompareOptions, "batch"),
    device: Annotated[str, typer.Option(help="cpu or a GPU index, the same for both.")] = default_of(CompareOptions, "device"),
    split: Annotated[Optional[str], typer.Option(help="Split to compare on (default: test if present, else val).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for both.")] = default_of(CompareOptions, "seed"),
    latency_runs: Annotated[int, typer.Option(help="Timed batch-1 runs per model and runtime.")] = default_of(CompareOptions, "latency_runs"),
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for both runtimes.")] = None,
    out: Annotated[Path, typer.Option(help="Folder for both runs and the report; rerunning resumes.")] = default_of(CompareOptions, "out"),
    json_output: JsonOption = False,
) -> None:
    """Train SSD and YOLO on the same data and budget, score both with the same evaluator, time both.

    Writes compare.json, compare.md and compare.png to OUT; a crash halfway keeps the finished side.

    [bold]Examples[/bold]

      yolodefect compare neu-yolo --epochs 30 --yolo-imgsz 256

      yolodefect compare neu-yolo --time-budget 20 --ssd ssdlite320
    """
    from yolodefect.errors import UsageError
    from yolodefect.render import render_compare

    with user_errors(_debug(ctx)):
        if epochs is not None and time_budget is not None:
            raise UsageError("give --epochs or --time-budget, not both")
        from yolodefect.compare import compare as run_compare

        options = CompareOptions(
            out=out, yolo=yolo, ssd=ssd, epochs=default_of(CompareOptions, "epochs") if epochs is None else epochs, time_budget_min=time_budget, yolo_imgsz=yolo_imgsz,
            ssd_imgsz=ssd_imgsz, ssd_backbone_weights=ssd_backbone_weights, ssd_lr=ssd_lr, batch=batch, device=device,
            split=split, seed=seed, latency_runs=latency_runs, threads=threads,
        )
        with progress_bar(not json_output) as progress, stdout_reserved(json_output):
            result = run_compare(data, dataclasses.replace(options, progress=progress))
        if json_output:
            print_json(result.to_dict())
        else:
            render_compare(result, err_console)


@app.command()
def export(
    ctx: typer.Context,
    model: Annotated[Path, typer.Argument(help="A .pt checkpoint from `train`.")],
    data: Annotated[Path, typer.Option("--data", help="Dataset: calibration images from train, validation on val.")],
    int8: Annotated[bool, typer.Option("--int8", help="Post-training INT8 quantization, validated against FP32.")] = default_of(ExportOptions, "int8"),
    format: Annotated[Optional[str], typer.Option("--format", help="onnx (ONNX Runtime, CPU), openvino (the openvino extra) or engine (TensorRT, NVIDIA GPU). Default: auto: with --int8 on a CPU, every installed candidate (INT8 ONNX; with the openvino extra also INT8 OpenVINO and OpenVINO at the CPU's default precision, e.g. bf16) is built, gated and timed, and the fastest that passes is deployed; onnx otherwise.")] = default_of(ExportOptions, "format"),
    imgsz: Annotated[Optional[int], typer.Option(help="Export size in pixels, rounded up to a multiple of the model stride (32). Default: the training size.")] = None,
    dynamic: Annotated[bool, typer.Option("--dynamic", help="Dynamic input shape (static by default).")] = default_of(ExportOptions, "dynamic"),
    calib: Annotated[int, typer.Option(help="Calibration images, stratified by class, backgrounds included.")] = default_of(ExportOptions, "calib"),
    calibration: Annotated[Optional[str], typer.Option(help="ONNX Runtime calibration: minmax (default), percentile or entropy.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the calibration sample.")] = default_of(ExportOptions, "seed"),
    max_drop: Annotated[float, typer.Option(help="Largest mAP50 loss in points that still ships the INT8 model (each candidate in auto mode).")] = default_of(ExportOptions, "max_drop"),
    latency_runs: Annotated[int, typer.Option(help="Timed batch-1 runs per model.")] = default_of(ExportOptions, "latency_runs"),
    threads: Annotated[int, typer.Option(help="CPU threads for both models' latency.")] = default_of(ExportOptions, "threads"),
    out: Annotated[Optional[Path], typer.Option(help="Output folder (default: next to the model).")] = None,
    device: Annotated[Optional[str], typer.Option(help="Validation device (engine: the GPU).")] = None,
    json_output: JsonOption = False,
) -> None:
    """Export a model (ONNX, OpenVINO, TensorRT), optionally INT8, and validate it against FP32 before use.

    Both models are scored by the same evaluator on DATA's val split and timed at batch 1 on this machine. An INT8 model that loses more than --max-drop mAP50 points is kept aside as *.rejected.* and the command exits 1; one that passes is written with a model card (.card.json, .card.md) that `watch` shows. With --int8 on a CPU and no --format, every installed candidate is built and gated, and the fastest that passes is the deployable model.

    [bold]Examples[/bold]

      yolodefect export runs/train/weights/best.pt --data neu-yolo --int8

      yolodefect export best.pt --data neu-yolo --int8 --format openvino --max-drop 0.5
    """
    from yolodefect.export import export as run_export
    from yolodefect.render import render_export

    with user_errors(_debug(ctx)):
        options = ExportOptions(int8=int8, format=format, imgsz=imgsz, dynamic=dynamic, calib=calib, seed=seed,
                                max_drop=max_drop, latency_runs=latency_runs, threads=threads, out_dir=out,
                                calibration=calibration, device=device)
        with progress_bar(not json_output) as progress, stdout_reserved(json_output):
            result = run_export(model, data, dataclasses.replace(options, progress=progress))
        if json_output:
            print_json(result.to_dict())
        else:
            render_export(result, err_console)
        if result.exit_code:
            raise typer.Exit(result.exit_code)


anomaly_app = typer.Typer(help="Defects nobody labelled: an anomaly model learned from good parts only.",
                          no_args_is_help=True, rich_markup_mode="rich")
app.add_typer(anomaly_app, name="anomaly")


@anomaly_app.command(name="train")
def anomaly_train(
    ctx: typer.Context,
    data: Annotated[Path, typer.Argument(help="A dataset (data.yaml or folder: its defect-free images, i.e. empty "
                                              "label files) or a folder of good images. Never modified.")],
    backbone: Annotated[Optional[str], typer.Option(help="Ultralytics checkpoint (.pt) whose backbone gives the "
                                                         "features (best: your own detector's), or resnet18 / "
                                                         "wide_resnet50_2 (ImageNet weights: online, or "
                                                         "--backbone-weights). Default: the shipped demo model.")] = None,
    backbone_weights: Annotated[Optional[Path], typer.Option(help="torchvision ImageNet weights (.pth) for an "
                                                                   "offline resnet18 / wide_resnet50_2.")] = None,
    imgsz: Annotated[int, typer.Option(help="Images are resized to this square size (pixels, multiple of 16).")] = 256,
    coreset_ratio: Annotated[float, typer.Option(help="Share of the good patches kept in the memory bank.")] = 0.1,
    max_bank: Annotated[int, typer.Option(help="At most this many patches in the memory bank (bounds scoring time "
                                               "and size).")] = 4096,
    split: Annotated[str, typer.Option(help="Dataset split to take the good images from.")] = "train",
    holdout: Annotated[float, typer.Option(help="Share of the good images kept out of the memory bank; the highest "
                                                "score among them is the threshold (more: a steadier threshold).")] = 0.1,
    out: Annotated[Optional[Path], typer.Option(help="Model file to write (default runs/anomaly/<data>/anomaly.npz).")] = None,
    json_output: JsonOption = False,
) -> None:
    """Learn what a good part looks like (PatchCore: pretrained patch features, a coreset memory bank, nearest-neighbour distance).

    A tenth of the good images is held out: the highest score among them is the model's threshold until `yolodefect eval MODEL DATA --target-recall` chooses one on defective parts.

    [bold]Examples[/bold]

      yolodefect anomaly train datasets/pcb/data.yaml --backbone runs/train/pcb/weights/best.pt

      yolodefect anomaly train good_parts/ --imgsz 320
    """
    from yolodefect.anomaly import AnomalyTrainOptions, train_anomaly
    from yolodefect.render import render_anomaly_training

    with user_errors(_debug(ctx)):
        options = AnomalyTrainOptions(data=data, backbone=backbone, backbone_weights=backbone_weights, imgsz=imgsz,
                                      coreset_ratio=coreset_ratio, max_bank=max_bank, split=split, holdout=holdout,
                                      out=out)
        with progress_bar(not json_output) as progress, stdout_reserved(json_output):
            result = train_anomaly(options, progress)
        if json_output:
            print_json(result.to_dict())
        else:
            render_anomaly_training(result, err_console)


review_app = typer.Typer(help="Close the loop: fold the line's reviewed frames back into the dataset.",
                         no_args_is_help=True, rich_markup_mode="rich")
app.add_typer(review_app, name="review")


@review_app.command(name="merge")
def review_merge(
    ctx: typer.Context,
    queue: Annotated[Path, typer.Argument(help="The review queue folder of `watch --review DIR` (never modified).")],
    data: Annotated[Path, typer.Argument(help="The dataset (data.yaml or folder made by `convert`) the model was "
                                              "trained on (never modified).")],
    out: Annotated[Optional[Path], typer.Option(help="Folder for the new version (default: DATA's name + -v2, -v3... "
                                                     "beside DATA, the next free one).")] = None,
    accept_unreviewed: Annotated[bool, typer.Option("--accept-unreviewed", help="Also take items nobody reviewed, "
                                                    "with the model's boxes as they are.")] = default_of(MergeOptions, "accept_unreviewed"),
    copy: Annotated[bool, typer.Option("--copy/--link", help="Copy DATA's images into the new version, or link them "
                                                             "(default, falls back to copy). Queue frames are always "
                                                             "copied.")] = default_of(MergeOptions, "transfer") == "copy",
    json_output: JsonOption = False,
) -> None:
    """Add the reviewed LabelMe files of a review queue to a new version of DATA, train split only.

    Items count as reviewed when their `reviewed` flag is ticked or their boxes were edited. Images already in DATA (any split, same bytes) are skipped. Val and test stay as they are, so metrics stay comparable. Writes NEW/data.yaml, CHANGELOG.md, changes.json and merge.json.

    [bold]Examples[/bold]

      yolodefect review merge runs/review neu-yolo

      yolodefect review merge runs/review neu-yolo --out neu-yolo-line --accept-unreviewed
    """
    from yolodefect.data.review_merge import merge_review
    from yolodefect.render import render_review_merge

    with user_errors(_debug(ctx)):
        options = MergeOptions(out=out, accept_unreviewed=accept_unreviewed, transfer="copy" if copy else "link")
        with progress_bar(not json_output) as progress:
            result = merge_review(queue, data, options, progress)
        if json_output:
            print_json(result.to_dict())
        else:
            render_review_merge(result, err_console)
