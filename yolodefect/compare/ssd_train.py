"""Training a torchvision SSD on a YOLO dataset: an explicit loop after torchvision's detection references.

``train_one_epoch`` and ``validate`` are plain functions (``references/detection/engine.py``);
:func:`train_ssd` runs them for an epoch or wall-clock budget with a linear warm-up, a cosine
learning-rate schedule, the best epoch kept by val mAP50 from THE evaluator
(:func:`yolodefect.evaluate.evaluate`), and one checkpoint dict
``{model, optimizer, lr_scheduler, args, epoch}`` (plus the best score so far) to resume from.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.optim.lr_scheduler import LambdaLR, LinearLR
from torch.utils.data import DataLoader

from yolodefect.compare.ssd_dataset import YoloDetectionDataset, collate, train_transforms
from yolodefect.compare.ssd_model import SSDModelInfo, architecture, build_ssd, input_size, save_ssd_model
from yolodefect.compare.ssd_predictor import SSDPredictor
from yolodefect.errors import UsageError, YoloDefectError

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
BEST_MODEL = "best.pt"
DONE_MARKER = "done.json"
WARMUP_ITERS = 1000  # torchvision's engine: min(1000, iterations in the first epoch - 1)
FINAL_LR_FACTOR = 0.01  # the cosine ends at 1% of the initial rate, like Ultralytics' lrf


@dataclass(frozen=True)
class SSDTrainOptions:
    """How to train the SSD. ``lr``/``weight_decay`` None: torchvision's recipe, scaled to ``batch``."""

    architecture: str = "ssdlite320"
    epochs: int = 30
    time_budget_min: float | None = None  # wall clock instead of epochs (the loop estimates how many fit)
    image_size: int | None = None  # None: native (320 or 300)
    batch: int = 16
    workers: int = 0
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float | None = None
    backbone_weights: Path | None = None
    vertical_flip: bool = False  # as YOLO's side: `train` leaves flipud at Ultralytics' 0
    device: str = "cpu"
    seed: int = 0
    log_every: int = 20

    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else architecture(self.architecture).lr_per_image * self.batch

    def resolved_weight_decay(self) -> float:
        return self.weight_decay if self.weight_decay is not None else architecture(self.architecture).weight_decay

    def checkpoint_args(self) -> dict:
        """What must match to resume (not workers, logging or the device)."""
        args = asdict(self)
        for key in ("workers", "log_every", "device"):
            args.pop(key)
        args["backbone_weights"] = str(self.backbone_weights) if self.backbone_weights else None
        return args


@dataclass
class CosineSchedule:
    """Learning-rate factor for an epoch: cosine from 1 to ``final`` over ``epochs``.

    A callable object rather than a lambda so ``LambdaLR.state_dict`` saves ``epochs`` with the
    checkpoint, and a time budget can set ``epochs`` once it knows how many fit.
    """

    epochs: int
    final: float = FINAL_LR_FACTOR

    def __call__(self, epoch: int) -> float:
        progress = min(epoch / max(self.epochs, 1), 1.0)
        return self.final + (1.0 - self.final) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class EpochStats:
    epoch: int
    loss: float
    bbox_regression: float
    classification: float
    lr: float
    iterations: int
    seconds: float
    stopped_by_budget: bool = False


@dataclass(frozen=True)
class EpochRecord:
    """One line of the training history (also written to history.json)."""

    epoch: int
    loss: float
    lr: float
    train_seconds: float
    val_map50: float | None
    val_map50_95: float | None
    val_seconds: float


@dataclass
class SSDTrainResult:
    run_dir: Path
    best_model: Path
    best_epoch: int
    best_map50: float | None
    epochs_trained: int
    seconds: float  # wall time of training and per-epoch validation, summed over resumed sessions
    pretrained_backbone: str | None
    image_size: int
    history: list[EpochRecord] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"run_dir": str(self.run_dir), "best_model": str(self.best_model), "best_epoch": self.best_epoch,
                "best_map50": self.best_map50, "epochs_trained": self.epochs_trained, "seconds": self.seconds,
                "pretrained_backbone": self.pretrained_backbone, "image_size": self.image_size,
                "history": [asdict(record) for record in self.history]}

    @classmethod
    def from_dict(cls, data: dict) -> SSDTrainResult:
        return cls(Path(data["run_dir"]), Path(data["best_model"]), int(data["best_epoch"]), data["best_map50"],
                   int(data["epochs_trained"]), float(data["seconds"]), data["pretrained_backbone"],
                   int(data["image_size"]), [EpochRecord(**record) for record in data["history"]])


def train_one_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data_loader: DataLoader,
    device: torch.device,
    epoch: int,
    *,
    deadline: float | None = None,
    log_every: int = 20,
) -> EpochStats:
    """One pass over ``data_loader``; in epoch 0 the learning rate warms up linearly per iteration.

    Stops early, after the current iteration, once ``time.perf_counter()`` passes ``deadline``.
    """
    model.train()
    started = time.perf_counter()
    warmup = None
    if epoch == 0:
        warmup_iters = min(WARMUP_ITERS, len(data_loader) - 1)
        if warmup_iters > 0:
            warmup = LinearLR(optimizer, start_factor=0.001, total_iters=warmup_iters)
    sums = {"loss": 0.0, "bbox_regression": 0.0, "classification": 0.0}
    iterations, stopped = 0, False
    for iteration, (images, targets) in enumerate(data_loader):
        images = [image.to(device) for image in images]
        targets = [{"boxes": t["boxes"].as_subclass(torch.Tensor).to(device), "labels": t["labels"].to(device)}
                   for t in targets]
        losses = model(images, targets)
        loss = sum(losses.values())
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise YoloDefectError(
                f"SSD loss became {loss_value} at epoch {epoch + 1}, iteration {iteration + 1} "
                f"({ {k: float(v) for k, v in losses.items()} }): lower the learning rate (--ssd-lr) "
                "or check the labels"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if warmup is not None:
            warmup.step()
        iterations += 1
        sums["loss"] += loss_value
        for key in ("bbox_regression", "classification"):
            sums[key] += float(losses[key].detach())
        if log_every and iteration % log_every == 0:
            logger.info("epoch %d [%d/%d] loss %.4f lr %.5f", epoch + 1, iteration + 1, len(data_loader), loss_value,
                        optimizer.param_groups[0]["lr"])
        if deadline is not None and time.perf_counter() > deadline:
            stopped = True
            break
    n = max(iterations, 1)
    return EpochStats(epoch, sums["loss"] / n, sums["bbox_regression"] / n, sums["classification"] / n,
                      optimizer.param_groups[0]["lr"], iterations, time.perf_counter() - started, stopped)


def validate(model: torch.nn.Module, data: Path, *, class_names: list[str], device: torch.device, batch: int,
             split: str = "val", name: str = "ssd"):
    """Score ``model`` on ``split`` with THE evaluator; returns its ``EvalResult``."""
    predictor = SSDPredictor(model, class_names=class_names, device=device, batch=batch)
    return evaluator_module().evaluate(name, data, split=split, predictor=predictor, plots=False)


def evaluator_module():
    """The module ``yolodefect.evaluate``, whose ``evaluate`` scores every model of the comparison.

    Looked up at call time (so a test can spy on the one evaluator) through ``import_module``, which
    returns the module even if the package ever re-exports the function under the same name.
    """
    return importlib.import_module("yolodefect.evaluate")


def torch_device(device: str) -> torch.device:
    """Ultralytics' device spelling ("cpu", "0", "cuda:0") as a torch device."""
    return torch.device(f"cuda:{device}" if device.isdigit() else device)


def _read_done(run_dir: Path) -> SSDTrainResult | None:
    marker = run_dir / DONE_MARKER
    if not marker.is_file():
        return None
    return SSDTrainResult.from_dict(json.loads(marker.read_text(encoding="utf-8"))["result"])


def _check_same_args(saved: dict, wanted: dict, where: Path) -> None:
    changed = {key: (saved.get(key), value) for key, value in wanted.items() if saved.get(key) != value}
    if changed:
        details = ", ".join(f"{key}: {old!r} there, {new!r} now" for key, (old, new) in changed.items())
        raise UsageError(f"{where} holds an SSD run with other settings ({details}); "
                         "give another output folder, or delete that one to start over")


def train_ssd(data: Path, run_dir: Path, options: SSDTrainOptions = SSDTrainOptions()) -> SSDTrainResult:
    """Train (or resume, or skip when ``run_dir`` says it is done) and return the best epoch's model.

    ``run_dir`` receives ``checkpoint.pt`` after every epoch, ``best.pt`` when val mAP50 improves,
    ``history.json``, and ``done.json`` at the end.
    """
    run_dir = Path(run_dir)
    args = options.checkpoint_args()
    done = _read_done(run_dir)
    if done is not None:
        _check_same_args(json.loads((run_dir / DONE_MARKER).read_text(encoding="utf-8"))["args"], args, run_dir)
        logger.info("SSD already trained in %s: skipping", run_dir)
        return done
    arch = architecture(options.architecture)
    size = input_size(arch, options.image_size)
    if options.epochs < 1:
        raise UsageError(f"epochs {options.epochs}: train at least 1 epoch")
    device = torch_device(options.device)
    torch.manual_seed(options.seed)

    train_set = YoloDetectionDataset(data, split="train",
                                     transforms=train_transforms(fill_rgb=arch.fill_rgb(),
                                                                 vertical_flip=options.vertical_flip))
    class_names = train_set.class_names
    if len(train_set) < options.batch:
        logger.warning("only %d training images for batch %d", len(train_set), options.batch)
    loader = DataLoader(train_set, batch_size=options.batch, shuffle=True, num_workers=options.workers,
                        collate_fn=collate, drop_last=len(train_set) > options.batch,
                        generator=torch.Generator().manual_seed(options.seed),
                        persistent_workers=options.workers > 0)
    model = build_ssd(architecture_name=arch.name, class_names=class_names, image_size=size,
                      backbone_weights=options.backbone_weights).to(device)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(parameters, lr=options.resolved_lr(), momentum=options.momentum,
                                weight_decay=options.resolved_weight_decay())
    schedule = CosineSchedule(options.epochs)
    lr_scheduler = LambdaLR(optimizer, schedule)

    start_epoch, best_epoch, best_map50, seconds = 0, -1, None, 0.0
    history: list[EpochRecord] = []
    checkpoint_path = run_dir / CHECKPOINT
    if checkpoint_path.is_file():
        checkpoint = torch.load(checkpoint_path, map_location=device, weights_only=True)
        _check_same_args(checkpoint["args"], args, run_dir)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        lr_scheduler.load_state_dict(checkpoint["lr_scheduler"])
        start_epoch = checkpoint["epoch"] + 1
        best_epoch, best_map50 = checkpoint["best_epoch"], checkpoint["best_map50"]
        seconds = checkpoint["seconds"]
        history = [EpochRecord(**record) for record in checkpoint["history"]]
        logger.info("resuming the SSD from %s after epoch %d", checkpoint_path, start_epoch)
    run_dir.mkdir(parents=True, exist_ok=True)

    budget_s = options.time_budget_min * 60 if options.time_budget_min else None
    epoch = start_epoch
    pretrained = str(options.backbone_weights) if options.backbone_weights else None
    while epoch < schedule.epochs and not (budget_s is not None and seconds >= budget_s):
        session_start = time.perf_counter()
        deadline = session_start + (budget_s - seconds) if budget_s is not None else None
        stats = train_one_epoch(model, optimizer, loader, device, epoch, deadline=deadline, log_every=options.log_every)
        lr_scheduler.step()
        val_started = time.perf_counter()
        evaluation = validate(model, data, class_names=class_names, device=device, batch=options.batch)
        metrics = evaluation.metrics
        val_seconds = time.perf_counter() - val_started
        seconds += time.perf_counter() - session_start
        history.append(EpochRecord(epoch + 1, round(stats.loss, 5), stats.lr, round(stats.seconds, 2),
                                   metrics.map50, metrics.map50_95, round(val_seconds, 2)))
        logger.info("SSD epoch %d: loss %.4f, val mAP50 %s (%.0f s)", epoch + 1, stats.loss,
                    "n/a" if metrics.map50 is None else f"{metrics.map50:.3f}", stats.seconds + val_seconds)
        if best_epoch < 0 or (metrics.map50 or 0.0) > (best_map50 or 0.0):
            best_epoch, best_map50 = epoch + 1, metrics.map50
            save_ssd_model(run_dir / BEST_MODEL, model,
                           SSDModelInfo(arch.name, class_names, size, pretrained, best_epoch, best_map50))
        if budget_s is not None and epoch == start_epoch == 0 and not stats.stopped_by_budget:
            # Like Ultralytics' `time`: after one epoch, plan the cosine over the epochs that fit the budget.
            schedule.epochs = max(1, math.ceil(budget_s / max(seconds, 1e-6)))
            logger.info("time budget %.1f min: about %d epochs fit", budget_s / 60, schedule.epochs)
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "lr_scheduler": lr_scheduler.state_dict(), "args": args, "epoch": epoch,
                    "best_epoch": best_epoch, "best_map50": best_map50, "seconds": seconds,
                    "history": [asdict(record) for record in history]}, checkpoint_path.with_suffix(".tmp"))
        checkpoint_path.with_suffix(".tmp").replace(checkpoint_path)
        (run_dir / "history.json").write_text(json.dumps([asdict(r) for r in history], indent=2), encoding="utf-8")
        epoch += 1

    result = SSDTrainResult(run_dir, run_dir / BEST_MODEL, best_epoch, best_map50, epoch, round(seconds, 1),
                            pretrained, size, history)
    (run_dir / DONE_MARKER).write_text(json.dumps({"args": args, "result": result.to_dict()}, indent=2),
                                       encoding="utf-8")
    return result
