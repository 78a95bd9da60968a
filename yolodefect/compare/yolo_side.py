"""The YOLO side of ``compare``: trained by ``yolodefect.train``, resumable, skipped once done."""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from yolodefect.errors import UsageError
from yolodefect.inference.model_file import check_imgsz

logger = logging.getLogger(__name__)

DONE_MARKER = "done.json"


@dataclass(frozen=True)
class YoloTrainSettings:
    """What the YOLO side is trained with; must match to resume or reuse a finished run."""

    model: str
    epochs: int
    time_budget_min: float | None
    imgsz: int | None
    batch: int
    workers: int | None
    device: str
    seed: int
    plots: bool


@dataclass(frozen=True)
class YoloTrainSummary:
    run_dir: Path
    best_model: Path
    imgsz: int
    epochs_trained: int
    best_epoch: int | None
    seconds: float  # training and per-epoch validation, summed over resumed sessions
    transfer_note: str

    def to_dict(self) -> dict:
        return {"run_dir": str(self.run_dir), "best_model": str(self.best_model), "imgsz": self.imgsz,
                "epochs_trained": self.epochs_trained, "best_epoch": self.best_epoch, "seconds": self.seconds,
                "transfer_note": self.transfer_note}

    @classmethod
    def from_dict(cls, data: dict) -> YoloTrainSummary:
        return cls(Path(data["run_dir"]), Path(data["best_model"]), int(data["imgsz"]), int(data["epochs_trained"]),
                   data["best_epoch"], float(data["seconds"]), data["transfer_note"])


def is_pretrained(model: str) -> bool:
    """A .pt checkpoint starts from trained weights; a .yaml model definition from scratch."""
    return Path(model).suffix == ".pt"


def read_results_csv(run_dir: Path) -> tuple[int, int | None, float | None]:
    """Epochs trained, best epoch (Ultralytics' fitness: val mAP50-95) and training seconds.

    Ultralytics' ``time`` column restarts at 0 when a run is resumed; the sessions are summed.
    """
    path = run_dir / "results.csv"
    if not path.is_file():
        return 0, None, None
    with path.open(encoding="utf-8") as handle:
        rows = [{key.strip(): value for key, value in row.items()} for row in csv.DictReader(handle)]
    if not rows:
        return 0, None, None
    times = [float(row["time"]) for row in rows if row.get("time")]
    seconds = sum(t for t, following in zip(times, times[1:] + [-1.0]) if following < t) if times else None
    fitness = [float(row.get("metrics/mAP50-95(B)") or "nan") for row in rows]
    best = max(range(len(rows)), key=lambda i: (fitness[i] if fitness[i] == fitness[i] else -1.0))
    return len(rows), int(float(rows[best]["epoch"])), seconds


def train_yolo(data: Path, run_dir: Path, settings: YoloTrainSettings) -> YoloTrainSummary:
    """Train with ``yolodefect.train`` into ``run_dir`` (resuming an interrupted run), or reuse a finished one."""
    from yolodefect.train import TrainOptions, train

    if settings.imgsz is not None:
        check_imgsz(settings.imgsz, option="--yolo-imgsz")  # in compare's words; train rounds it to the stride
    marker = run_dir / DONE_MARKER
    wanted = asdict(settings)
    if marker.is_file():
        saved = json.loads(marker.read_text(encoding="utf-8"))
        if saved["settings"] != wanted:
            changed = {k: (saved["settings"].get(k), v) for k, v in wanted.items() if saved["settings"].get(k) != v}
            raise UsageError(f"{run_dir} holds a YOLO run with other settings ({changed}); give another output "
                             "folder, or delete that one to start over")
        logger.info("YOLO already trained in %s: skipping", run_dir)
        return YoloTrainSummary.from_dict(saved["result"])
    interrupted = (run_dir / "weights" / "last.pt").is_file()
    overrides = {"time": settings.time_budget_min / 60} if settings.time_budget_min else {}
    # fp32 like the SSD side: on a CPU with native bf16 `train` would otherwise give YOLO alone ~2x the steps.
    overrides["amp"] = "fp32"
    options = TrainOptions(
        model=settings.model, epochs=settings.epochs, imgsz=settings.imgsz, batch=settings.batch,
        workers=settings.workers, device=settings.device,
        patience=max(settings.epochs, 1),  # no early stop: both models get the whole budget
        project=run_dir.parent, name=run_dir.name, exist_ok=True, seed=settings.seed, plots=settings.plots,
        resume=interrupted, overrides=overrides,
    )
    if interrupted:
        logger.info("resuming the interrupted YOLO run in %s", run_dir)
    try:
        result = train(data, options)
    except AssertionError as error:
        if not (interrupted and "nothing to resume" in str(error)):
            raise
        # Ultralytics finished but the run stopped before the marker was written: use what it saved.
        summary = _finished_run(run_dir, settings)
    else:
        epochs, best_epoch, seconds = read_results_csv(result.run_dir)
        summary = YoloTrainSummary(
            run_dir=result.run_dir, best_model=result.best_model, imgsz=int(result.evaluation.imgsz or 640),
            epochs_trained=epochs, best_epoch=best_epoch,
            seconds=round(seconds if seconds is not None else result.seconds, 1),
            transfer_note=result.transfer_note if not interrupted else f"resumed; {_transfer_note(settings.model)}",
        )
    marker.write_text(json.dumps({"settings": wanted, "result": summary.to_dict()}, indent=2), encoding="utf-8")
    return summary


def _finished_run(run_dir: Path, settings: YoloTrainSettings) -> YoloTrainSummary:
    from yolodefect.inference.model_file import read_model_file

    best = run_dir / "weights" / "best.pt"
    if not best.is_file():
        raise UsageError(f"{run_dir} holds a finished YOLO run without weights/best.pt; delete it to start over")
    epochs, best_epoch, seconds = read_results_csv(run_dir)
    imgsz = read_model_file(best).imgsz
    return YoloTrainSummary(run_dir, best, int(imgsz if isinstance(imgsz, int) else settings.imgsz or 640), epochs,
                            best_epoch, round(seconds or 0.0, 1), _transfer_note(settings.model))


def _transfer_note(model: str) -> str:
    return f"started from {model}" if is_pretrained(model) else f"from scratch ({model})"
