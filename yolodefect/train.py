"""``yolodefect train``: Ultralytics training with defaults that suit defect data.

Every preset is decided in :func:`defect_presets`, with the reason shown to the user, and the
arguments handed to Ultralytics are built in exactly one place (:func:`ultralytics_arguments`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from yolodefect.data.check import CheckReport, check_dataset
from yolodefect.data.yolo_dataset import DataConfig, load_data_config
from yolodefect.errors import DatasetError, UsageError, YoloDefectError
from yolodefect.inference.model_file import (CHECKPOINT, check_imgsz, check_model_file, fetch_ultralytics_weights,
                                             is_ultralytics_weights, load_yolo, model_stride, resolve_imgsz,
                                             weights_dir)
from yolodefect.inference.names import names_list
from yolodefect.jpeg import files_ultralytics_would_resave
from yolodefect.option_checks import choice, flag, fraction, optional_bool, whole_number

if TYPE_CHECKING:
    from yolodefect.evaluate import EvalResult

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "yolo26n.pt"  # chosen by bench/model_choice.py: as fast or faster on CPU, NMS-free
AMP_CHECK_WEIGHTS = "yolo26n.pt"  # hard-coded in ultralytics.utils.checks.check_amp
IMBALANCE_THRESHOLD = 3.0  # max/min instances per class above which classes are re-weighted
DEFAULT_CLASS_WEIGHT_POWER = 0.5  # square-root inverse frequency: helps rare classes without starving common ones
FEW_UPDATES = 10_000  # Ultralytics' own line between a short run (AdamW) and a long one (SGD), inline in its trainer
# --act: the activation written into a .yaml model definition (Ultralytics' ``activation`` key).
ACTIVATIONS = {"relu": "ReLU", "silu": "SiLU"}  # option value -> torch.nn class name
ACTIVATION_REASONS = {
    "relu": "INT8-friendly: ONNX Runtime folds ReLU into the int8 convolution, where SiLU needs extra "
            "quantized ops (bench/int8_activation.py: 1.91-2.15x INT8 speed-up vs 1.52-1.77x with SiLU)",
    "silu": "given by --act silu (Ultralytics' default activation)",
}
CPU_BF16_REASON = ("from scratch on a CPU with native bfloat16 (AVX512-BF16/AMX): bf16 autocast and channels_last, "
                   "which Ultralytics does only on CUDA (--set amp=fp32: plain fp32)")
# Presets we apply ourselves, never passed to YOLO.train: to the model definition (activation) or through our CPU
# trainer (threads).
OWN_PRESETS = frozenset({"activation", "threads"})
OFFLINE_HELP = (
    "could not download {model} into {folder} (this machine seems to be offline). Two ways forward: "
    "--model path/to/checkpoint.pt (any Ultralytics checkpoint, even one trained on other classes), "
    "or --model {stem}.yaml to train from scratch (slower to converge)."
)


@dataclass(frozen=True)
class TrainOptions:
    model: str | None = None  # None: DEFAULT_MODEL from Ultralytics' weights folder (never the working folder)
    epochs: int = 100
    imgsz: int | None = None  # None: suggested by check from the box sizes
    batch: int | None = None  # None: 16 on CPU, AutoBatch on GPU
    workers: int | None = None
    threads: int | None = None  # CPU: PyTorch threads; None: every physical core (Ultralytics: cores - 1)
    device: str | None = None  # None: first GPU if present, else CPU
    class_weights: float | None = None  # cls_pw; None: on when check finds an imbalance
    freeze: int | None = None
    patience: int = 30
    flipud: float | None = None  # None: Ultralytics' 0.0 (vertical flips measured no gain on NEU-DET)
    nbs: int | None = None  # None: the batch when a run at nbs 64 makes few weight updates, else Ultralytics' 64
    grayscale: bool | None = None  # None: detected from the images
    act: str | None = None  # "relu" or "silu" for every convolution; None: the model's own (Ultralytics: SiLU)
    resume: bool = False
    project: Path = Path("runs")
    name: str = "train"
    exist_ok: bool = False
    seed: int = 0
    run_check: bool = True
    plots: bool = True
    overrides: dict = field(default_factory=dict)  # any other Ultralytics argument, applied last

    def __post_init__(self) -> None:
        """Refuse a bad value when the options are built, naming the CLI flag (files are checked by plan_training)."""
        whole_number("--epochs", self.epochs, 1)
        if self.imgsz is not None:
            check_imgsz(self.imgsz)  # the stride is applied once the model is loaded
        if self.batch is not None and self.batch != -1:
            whole_number("--batch", self.batch, 1)  # -1: Ultralytics' AutoBatch
        for name, minimum in (("workers", 0), ("freeze", 0), ("nbs", 1), ("threads", 1)):
            whole_number(flag(name), getattr(self, name), minimum, optional=True)
        whole_number("--patience", self.patience, 0)
        whole_number("--seed", self.seed, 0)
        fraction("--class-weights", self.class_weights, optional=True)
        fraction("--flipud", self.flipud, optional=True)
        optional_bool("--grayscale/--color", self.grayscale)
        if self.act is not None:
            choice("--act", self.act, ACTIVATIONS)
        if not isinstance(self.name, str) or not self.name.strip():
            raise UsageError(f"--name must be a run name, got {self.name!r}")
        if not isinstance(self.overrides, dict):
            raise UsageError(f"--set must give key=value pairs, got {self.overrides!r}")
        if self.overrides:
            check_overrides(self.overrides)
        if "imgsz" in self.overrides:
            check_imgsz(self.overrides["imgsz"], option="--set imgsz")


@dataclass(frozen=True)
class Preset:
    """One training argument we chose, and why (shown before training starts)."""

    key: str
    value: object
    reason: str


@dataclass
class TrainResult:
    run_dir: Path
    best_model: Path
    last_model: Path
    presets: list[Preset]
    arguments: dict
    evaluation: EvalResult  # the best model scored on val by our evaluator
    seconds: float
    transfer_note: str

    def to_dict(self) -> dict:
        return {
            "run_dir": str(self.run_dir), "best_model": str(self.best_model), "last_model": str(self.last_model),
            "presets": [asdict(preset) for preset in self.presets],
            "arguments": {key: str(value) if isinstance(value, Path) else value for key, value in self.arguments.items()},
            "evaluation": self.evaluation.to_dict(), "seconds": self.seconds, "transfer_note": self.transfer_note,
        }


def detect_device(requested: str | None) -> str:
    if requested:
        return requested
    import torch

    return "0" if torch.cuda.is_available() else "cpu"


def is_grayscale_dataset(data: Path, sample: int = 20, seed: int = 0) -> bool:
    """True when sampled training images have equal channels (stored as RGB or not)."""
    images = load_data_config(data).images("train")
    if not images:
        return False
    for path in random.Random(seed).sample(images, min(sample, len(images))):
        with Image.open(path) as image:
            if image.mode in ("L", "I", "I;16", "1"):
                continue
            array = np.asarray(image.convert("RGB").resize((64, 64)), dtype=np.int16)
            if np.abs(array[..., 0] - array[..., 1]).max() > 8 or np.abs(array[..., 1] - array[..., 2]).max() > 8:
                return False
    return True


def weight_updates(train_images: int, epochs: int, batch: int, nbs: int) -> int:
    """How many optimizer steps Ultralytics makes: one per ``round(nbs / batch)`` batches, counted across epochs."""
    accumulate = max(round(nbs / batch), 1)
    return math.ceil(train_images / batch) * epochs // accumulate


def nominal_batch_preset(options: TrainOptions, batch: int, train_images: int) -> Preset | None:
    """Update the weights every batch when Ultralytics' accumulation to ``nbs`` images would leave a small set few
    updates, when training from scratch.

    Defect datasets are small (hundreds to a few thousand images): at batch 16 Ultralytics steps the optimizer
    every 4th batch, so 1,400 images x 30 epochs is only ~680 updates. Stepping every batch gives 4x the updates
    for the same compute; weight decay is scaled by Ultralytics to the same value per image. ``batch`` -1
    (AutoBatch) is only sized once training starts, so it keeps Ultralytics' default.

    Only from scratch (a .yaml model): that is where it was measured to help (bench/results/train_neu.json). From a
    checkpoint, 4x as many steps at the learning rate Ultralytics fits for 64-image steps pull the pretrained weights
    apart: on NEU-DET transfer (bench/results/train_neu_transfer.json) val mAP50 fell to 0.05 at epoch 2 (0.37
    without it) and the 10-epoch run ended 2.9 / 2.6 points lower on val / test, so fine-tuning keeps Ultralytics'
    nominal batch.
    """
    from ultralytics.cfg import DEFAULT_CFG_DICT

    if options.nbs is not None:
        return Preset("nbs", options.nbs, "given by --nbs")
    default_nbs = DEFAULT_CFG_DICT["nbs"]
    if not is_model_definition(options.model) or not 0 < batch < default_nbs or train_images <= 0:
        return None
    nominal = weight_updates(train_images, options.epochs, batch, default_nbs)
    if nominal >= FEW_UPDATES:
        return None
    every_batch = weight_updates(train_images, options.epochs, batch, batch)
    return Preset("nbs", batch, f"{train_images} train images x {options.epochs} epochs is only {nominal:,} weight "
                                f"updates when accumulating to {default_nbs} images: update every batch "
                                f"({every_batch:,})")


def cpu_has_native_bf16() -> bool:
    from yolodefect.cpu_training import native_bf16

    return native_bf16()


def cpu_cores() -> int:
    from yolodefect.cpu_training import training_cores

    return training_cores()


def train_image_count(report: CheckReport | None, data: Path) -> int:
    if report is not None and "train" in report.splits:
        return report.splits["train"].images
    return len(load_data_config(data).images("train"))


def defect_presets(options: TrainOptions, report: CheckReport | None, data: Path, device: str) -> list[Preset]:
    """The arguments we set on top of Ultralytics' defaults, each with the reason."""
    presets = []
    if options.imgsz is not None:
        presets.append(Preset("imgsz", options.imgsz, "given by --imgsz"))
    elif report is not None and report.imgsz is not None:
        advice = report.imgsz
        why = f"check: 10% of boxes are {advice.box_px_at_suggested:.0f} px or smaller at this size"
        if advice.small_objects and advice.tile:
            why += f"; still small: consider `convert --tile {advice.tile}` or the P2 head (--model yolo26n-p2.yaml)"
        presets.append(Preset("imgsz", advice.suggested_imgsz, why))

    if options.class_weights is not None:
        presets.append(Preset("cls_pw", options.class_weights, "given by --class-weights"))
    elif report is not None and report.imbalance_ratio is not None and report.imbalance_ratio > IMBALANCE_THRESHOLD:
        presets.append(Preset("cls_pw", DEFAULT_CLASS_WEIGHT_POWER,
                              f"class imbalance {report.imbalance_ratio:.1f}:1 > {IMBALANCE_THRESHOLD:g}:1: rare classes weighted up"))

    if options.flipud is not None:
        # Not a default: on NEU-DET vertical flips never helped (from scratch -2.6 val mAP50 points; transfer
        # -2.0/-1.2 and +0.9/-3.9 val/test, bench/results/train_neu_transfer.json), though surfaces have no "up".
        presets.append(Preset("flipud", options.flipud, "given by --flipud"))
    grayscale = is_grayscale_dataset(data) if options.grayscale is None else options.grayscale
    if grayscale:
        presets.append(Preset("hsv_h", 0.0, "grayscale images: a hue shift only adds colour noise"))
        presets.append(Preset("hsv_s", 0.0, "grayscale images: a saturation shift only adds colour noise"))
    if options.act is not None:
        presets.append(Preset("activation", f"nn.{ACTIVATIONS[options.act]}()", ACTIVATION_REASONS[options.act]))
    if options.freeze is not None:
        presets.append(Preset("freeze", options.freeze, "given by --freeze: keeps pretrained features with little data"))
    presets.append(Preset("patience", options.patience, "early stop when val mAP stops improving"))
    if device == "cpu":
        batch = options.batch or 16
        presets.append(Preset("batch", batch, "CPU: a fixed batch (AutoBatch needs a GPU)"))
        # No workers preset: on CPU Ultralytics loads data in the main process whatever is asked.
        threads = options.threads or cpu_cores()
        presets.append(Preset("threads", threads, "given by --threads" if options.threads else
                              f"CPU: all {threads} cores (Ultralytics trains on cores - 1, keeping one for data "
                              "loaders it does not start on a CPU)"))
        if cpu_has_native_bf16() and is_model_definition(options.model):
            # Measured from scratch only (bench/train_time_to_map.py); fine-tuning opts in with --set amp=bf16.
            presets.append(Preset("amp", "bf16", CPU_BF16_REASON))
    else:
        batch = options.batch or -1
        presets.append(Preset("batch", batch, "GPU: AutoBatch fits the batch to memory"))
        presets.append(Preset("workers", options.workers if options.workers is not None else min(8, os.cpu_count() or 2),
                              "GPU: up to 8 data loaders"))
    nominal = nominal_batch_preset(options, batch, train_image_count(report, data))
    if nominal is not None:
        presets.append(nominal)
    return presets


def ultralytics_arguments(options: TrainOptions, presets: list[Preset], data: Path, device: str) -> dict:
    """The one place where the dict handed to ``YOLO.train`` is built."""
    arguments = {
        "data": str(data), "epochs": options.epochs, "device": device, "seed": options.seed,
        "project": str(Path(options.project).resolve()), "name": options.name, "exist_ok": options.exist_ok,
        "plots": options.plots, "verbose": True,
    }
    arguments.update({preset.key: preset.value for preset in presets if preset.key not in OWN_PRESETS})
    arguments.update(options.overrides)
    return arguments


def check_model_option(model: str | None) -> None:
    """Refuse an impossible --model before anything runs: the wrong kind of file, or a missing or damaged checkpoint.

    Only the file's structure is read here (nothing is unpickled); loading comes with training.
    """
    if model is None:
        return
    path = Path(model)
    if path.suffix not in (".pt", ".yaml", ".yml"):
        raise UsageError(f"--model {model}: give a .pt checkpoint or a .yaml model definition")
    if path.suffix != ".pt":
        return
    if path.exists():
        check_model_file(path, expected=CHECKPOINT)
    elif not is_ultralytics_weights(model):
        raise DatasetError(f"model checkpoint {model} does not exist (nor is it one of Ultralytics' released "
                           f"weights such as {DEFAULT_MODEL})")


def load_model(model: str | None):
    """The Ultralytics model for --model, announcing which checkpoint file is loaded.

    Unpickling a checkpoint runs the code it holds, so a checkpoint nobody named is never taken from the working
    folder: without --model, and for a bare name of Ultralytics' released weights (yolo11n.pt) that is not a file
    here, the weights come from Ultralytics' weights folder, downloaded there when missing.
    """
    from ultralytics import YOLO

    check_model_option(model)
    name = model or DEFAULT_MODEL
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        try:
            return YOLO(name)
        except FileNotFoundError as error:
            raise UsageError(f"--model {model}: Ultralytics knows no such model definition ({error})") from None
    if model is not None and path.exists():
        logger.info("loading %s", path.resolve())
        return load_yolo(path, expected=CHECKPOINT)
    folder = weights_dir()
    try:
        weights = fetch_ultralytics_weights(name, folder)
    except ConnectionError:
        raise YoloDefectError(OFFLINE_HELP.format(model=name, folder=folder, stem=path.stem)) from None
    logger.info("loading %s weights %s", "default" if model is None else "Ultralytics'", weights)
    return load_yolo(weights, expected=CHECKPOINT)


def is_model_definition(model: str | None) -> bool:
    """A .yaml model definition: training starts from random weights (a checkpoint, and the default model, from
    trained ones)."""
    return model is not None and Path(model).suffix in (".yaml", ".yml")


def model_activations(yolo) -> set[str]:
    """The torch.nn activation classes (``SiLU``, ``ReLU``...) a loaded ``ultralytics.YOLO`` computes with."""
    from torch import nn

    return {type(module).__name__ for module in yolo.model.modules()
            if type(module).__module__ == nn.modules.activation.__name__}


def check_checkpoint_activation(yolo, checkpoint: str, act: str) -> None:
    """A checkpoint's activations are part of its weights: --act may only confirm them, never change them."""
    wanted = ACTIVATIONS[act]
    found = model_activations(yolo)
    if found == {wanted}:
        return
    raise UsageError(f"--act {act}: {checkpoint} computes with {', '.join(sorted(found)) or 'no activation'}, and "
                     f"weights trained with one activation do not carry over to {wanted}. Train from scratch from a "
                     f"model definition (e.g. --model yolo11n.yaml --act {act}), or give a checkpoint trained with "
                     f"{wanted}")


def pin_run_dir(arguments: dict) -> tuple[Path, dict]:
    """The run folder Ultralytics would pick (PROJECT/NAME, else NAME-2...: its own ``increment_path``), created now
    so that files can be written into it before training; the arguments then name it exactly."""
    from ultralytics.utils.files import increment_path

    run_dir = increment_path(Path(arguments["project"]) / arguments["name"], exist_ok=arguments["exist_ok"])
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir, {**arguments, "name": run_dir.name, "exist_ok": True}


def write_model_definition(yolo, model: str, act: str, folder: Path) -> Path:
    """``model``'s resolved definition with ``activation: nn.<act>()``, as ``folder/<stem>-<act>.yaml``.

    The file keeps the scale that was picked from the name (yolo11n.yaml -> n) twice over: in its own name, from
    which Ultralytics guesses it, and as the only entry of ``scales``.
    """
    import yaml

    definition = {key: value for key, value in yolo.model.yaml.items() if key not in ("scale", "yaml_file")}
    scale = yolo.model.yaml.get("scale")
    if scale and scale in definition.get("scales", {}):
        definition["scales"] = {scale: definition["scales"][scale]}
    definition["activation"] = f"nn.{ACTIVATIONS[act]}()"
    path = folder / f"{Path(model).stem}-{act}.yaml"
    path.write_text(f"# {model} with every convolution's activation set by `yolodefect train --act {act}`\n"
                    + yaml.safe_dump(definition, sort_keys=False), encoding="utf-8")
    return path


def amp_check_weights(device: str, arguments: dict) -> Path | None:
    """The checkpoint Ultralytics' AMP check loads before GPU training (its own choice, not the user's), or None.

    ``check_amp`` unpickles ``WEIGHTS_DIR / "yolo26n.pt"`` on CUDA devices unless ``amp=False``; it is announced so
    that no checkpoint loads unseen.
    """
    from ultralytics.utils import WEIGHTS_DIR

    if str(device).lower() in ("cpu", "mps") or arguments.get("amp", True) is False:
        return None
    return (Path(WEIGHTS_DIR) / AMP_CHECK_WEIGHTS).absolute()


def fit_imgsz_to_model(presets: list[Preset], arguments: dict, stride: int) -> tuple[list[Preset], dict, str | None]:
    """Presets and arguments with imgsz rounded up to the model's stride (Ultralytics would do it silently)."""
    requested = arguments.get("imgsz")
    if requested is None:
        return presets, arguments, None
    used, note = resolve_imgsz(requested, stride, option="imgsz")
    if note is None:
        return presets, arguments, None
    presets = [replace(preset, value=used, reason=f"{preset.reason}; {note}") if preset.key == "imgsz" else preset
               for preset in presets]
    return presets, {**arguments, "imgsz": used}, note


def transfer_note(model: str, model_names: dict | list | None, class_names: list[str]) -> str:
    if is_model_definition(model):
        return f"training from scratch ({model}): no pretrained weights"
    names = names_list(model_names) if model_names else []
    if names == class_names:
        return f"fine-tuning {model}, which already knows these classes"
    return (f"transfer learning from {model} ({len(names)} classes: {', '.join(map(str, names[:6]))}"
            f"{'...' if len(names) > 6 else ''}): backbone and neck reused, the class head is re-initialised "
            f"for {len(class_names)} classes")


@dataclass
class TrainPlan:
    """Everything decided before training starts, so the CLI can show it first."""

    data_yaml: Path
    class_names: list[str]
    options: TrainOptions
    device: str
    presets: list[Preset]
    arguments: dict
    report: CheckReport | None


def check_overrides(overrides: dict) -> None:
    """Unknown Ultralytics arguments fail here, with the nearest valid name."""
    import difflib

    from ultralytics.cfg import DEFAULT_CFG_DICT

    for key in overrides:
        if key not in DEFAULT_CFG_DICT:
            close = difflib.get_close_matches(key, list(DEFAULT_CFG_DICT), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UsageError(f"--set {key}=...: Ultralytics has no training argument {key!r}{hint}")


def _refuse_files_ultralytics_would_resave(config: DataConfig) -> None:
    """Ultralytics re-saves, in place, every JPEG not ending with its end marker when it loads the dataset: never
    hand it a user's file that it would modify (also with --no-check: this is not a quality check)."""
    images = [image for split in ("train", "val") if split in config.split_dirs for image in config.images(split)]
    found = files_ultralytics_would_resave(images)
    if found:
        raise DatasetError(f"{len(found)} JPEG(s) such as {found[0]} have bytes after their end-of-image marker "
                           "(NUL padding or a trailer): Ultralytics would re-save them in place when it loads the "
                           "dataset, modifying your files; `yolodefect convert` writes clean copies to train on")


def plan_training(data: Path, options: TrainOptions = TrainOptions()) -> TrainPlan:
    """Check the dataset and decide every argument; nothing is trained yet."""
    data = Path(data)
    config = load_data_config(data)
    if config.yaml_path is None:
        raise DatasetError(f"{data} has no data.yaml: make one with `yolodefect convert`")
    check_model_option(options.model)  # the options' values were checked when they were built
    _refuse_files_ultralytics_would_resave(config)
    report = check_dataset(data) if options.run_check else None
    if report is not None and report.has_errors:
        raise DatasetError(f"check found {len(report.errors)} error(s) in {data}, first: {report.errors[0]}. "
                           f"Run `yolodefect check {data}` for all, or --no-check to train anyway")
    device = detect_device(options.device)
    if options.resume:
        return TrainPlan(config.yaml_path, config.class_names, options, device, [], {"resume": True}, report)
    presets = defect_presets(options, report, config.yaml_path, device)
    arguments = ultralytics_arguments(options, presets, config.yaml_path, device)
    return TrainPlan(config.yaml_path, config.class_names, options, device, presets, arguments, report)


def run_training(plan: TrainPlan, callbacks: Mapping[str, Sequence[Callable]] | None = None) -> TrainResult:
    """Train as planned, then score the best model on val with our evaluator.

    ``callbacks``: Ultralytics trainer callbacks by event (``{"on_fit_epoch_end": [fn]}``), added to the model
    before training: how a caller follows the epochs or stops the run (``trainer.stop = True``).
    """
    from yolodefect.evaluate import evaluate

    started = time.perf_counter()
    options = plan.options
    if options.resume:
        last = Path(options.project).resolve() / options.name / "weights" / "last.pt"
        if not last.exists():
            raise DatasetError(f"--resume: no interrupted run at {last}")
        model = load_model(str(last))
        note = f"resuming {last}"
        if options.act is not None:
            check_checkpoint_activation(model, str(last), options.act)
    else:
        model = load_model(options.model)
        note = transfer_note(options.model or DEFAULT_MODEL, getattr(model, "names", None), plan.class_names)
    arguments = plan.arguments
    if options.act is not None and not options.resume:
        if is_model_definition(options.model):
            run_dir, arguments = pin_run_dir(arguments)
            definition = write_model_definition(model, options.model, options.act, run_dir)
            model = load_model(str(definition))
            note += f", {ACTIVATIONS[options.act]} activations ({definition})"
        else:
            check_checkpoint_activation(model, options.model or DEFAULT_MODEL, options.act)
    logger.info(note)
    presets, arguments, imgsz_note = fit_imgsz_to_model(plan.presets, arguments, model_stride(model))
    if imgsz_note:
        logger.warning(imgsz_note)
    amp_weights = amp_check_weights(plan.device, arguments)
    if amp_weights is not None:
        logger.info("Ultralytics' mixed-precision check loads %s before training (--set amp=False skips it)",
                    amp_weights)
    for event, functions in (callbacks or {}).items():
        for function in functions:
            model.add_callback(event, function)
    threads = next((preset.value for preset in presets if preset.key == "threads"), None)
    from yolodefect.cpu_training import torch_threads_restored

    # PyTorch's thread count is per process, and Ultralytics' select_device sets it (training and evaluation).
    with torch_threads_restored():
        with cpu_trainer_class(model, plan.device, arguments, threads) as trainer_class:
            model.train(**arguments, **({"trainer": trainer_class} if trainer_class else {}))
        trainer = model.trainer
        run_dir = Path(trainer.save_dir)
        best = Path(trainer.best) if Path(trainer.best).exists() else Path(trainer.last)
        evaluation = evaluate(best, plan.data_yaml, split="val", imgsz=int(trainer.args.imgsz), device=plan.device,
                              out_dir=run_dir / "eval")
    result = TrainResult(run_dir, best, Path(trainer.last), presets, arguments, evaluation,
                         round(time.perf_counter() - started, 1), note)
    (run_dir / "metrics.json").write_text(json.dumps(result.to_dict(), indent=2, default=str), encoding="utf-8")
    return result


@contextlib.contextmanager
def cpu_trainer_class(model, device: str, arguments: dict, threads: int | None = None) -> Iterator[type | None]:
    """The trainer class for a CPU run (None: Ultralytics' own): ``threads`` PyTorch threads, and for ``amp`` bf16
    channels_last with bf16 autocast open meanwhile.

    A resumed run trains with the arguments saved in its checkpoint, so its own ``amp`` decides there.
    """
    amp = arguments.get("amp")
    if arguments.get("resume"):
        amp = (getattr(model, "ckpt", None) or {}).get("train_args", {}).get("amp")
    bf16 = amp == "bf16"
    if str(device).lower() != "cpu" or getattr(model, "task", "detect") != "detect" or (threads is None and not bf16):
        yield None
        return
    from yolodefect.cpu_training import cpu_bf16_autocast, cpu_trainer

    with cpu_bf16_autocast() if bf16 else contextlib.nullcontext():
        yield cpu_trainer(threads, channels_last=bf16)


def train(data: Path, options: TrainOptions = TrainOptions(),
          callbacks: Mapping[str, Sequence[Callable]] | None = None) -> TrainResult:
    """Check ``data``, train with defect presets, then score the best model with our evaluator."""
    return run_training(plan_training(data, options), callbacks)
