"""The records ``compare`` returns: plain data that serialises to compare.json and renders as tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from yolodefect.evaluate import EvalResult
from yolodefect.inference.timing import Latency


@dataclass(frozen=True)
class SpeedResult:
    """Size and batch-1 speed of one model's network on this machine."""

    input_size: int
    parameters: int
    gflops: float | None
    model_file: Path
    model_file_mb: float | None
    onnx_file: Path | None
    onnx_file_mb: float | None
    latency: dict[str, Latency]  # runtime ("pytorch", "onnxruntime") -> batch-1 latency
    onnx_max_abs_diff: float | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "input_size": self.input_size, "parameters": self.parameters, "gflops": self.gflops,
            "model_file": str(self.model_file), "model_file_mb": self.model_file_mb,
            "onnx_file": str(self.onnx_file) if self.onnx_file else None, "onnx_file_mb": self.onnx_file_mb,
            "latency": {runtime: stats.to_dict() for runtime, stats in self.latency.items()},
            "onnx_max_abs_diff": self.onnx_max_abs_diff, "notes": list(self.notes),
        }


@dataclass(frozen=True)
class SideResult:
    """One detector of the comparison: how it was trained, how it scored, how fast it runs."""

    key: str  # "yolo" or "ssd"
    label: str  # e.g. "YOLO yolo11n.yaml", "SSD ssdlite320"
    model: str  # what was trained: a YOLO .yaml/.pt, or the SSD architecture
    pretrained: str | None  # the weights it started from; None: from scratch
    imgsz: int
    epochs_trained: int
    best_epoch: int | None
    train_seconds: float
    best_model: Path
    best_f1_threshold: float
    best_f1: float | None
    evaluation: EvalResult  # THE evaluator on the compared split, at ``best_f1_threshold``
    speed: SpeedResult

    @property
    def map50(self) -> float | None:
        return self.evaluation.metrics.map50

    def fastest(self) -> Latency:
        """ONNX Runtime when measured, else PyTorch: the figure the verdict compares."""
        return self.speed.latency.get("onnxruntime") or self.speed.latency["pytorch"]

    def to_dict(self) -> dict:
        return {
            "key": self.key, "label": self.label, "model": self.model, "pretrained": self.pretrained,
            "imgsz": self.imgsz, "epochs_trained": self.epochs_trained, "best_epoch": self.best_epoch,
            "train_seconds": self.train_seconds, "best_model": str(self.best_model),
            "best_f1_threshold": self.best_f1_threshold, "best_f1": self.best_f1,
            "evaluation": self.evaluation.to_dict(), "speed": self.speed.to_dict(),
        }


@dataclass(frozen=True)
class CompareResult:
    """YOLO and SSD on the same data, split, budget, evaluator and machine."""

    data: str
    split: str
    budget: str  # "30 epochs" or "60 min wall clock"
    device: str
    machine: str
    evaluator: str  # the implementation string both evaluations report (they must agree)
    sides: list[SideResult]
    verdict: str  # one line: who wins on accuracy, who on speed, and by how much
    files: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def side(self, key: str) -> SideResult:
        for side in self.sides:
            if side.key == key:
                return side
        raise KeyError(f"no side {key!r} (sides: {', '.join(s.key for s in self.sides)})")

    def to_dict(self) -> dict:
        return {
            "data": self.data, "split": self.split, "budget": self.budget, "device": self.device,
            "machine": self.machine, "evaluator": self.evaluator, "verdict": self.verdict,
            "sides": [side.to_dict() for side in self.sides],
            "files": {name: str(path) for name, path in self.files.items()}, "notes": list(self.notes),
        }

    def table(self) -> tuple[list[str], list[list[str]]]:
        """Header and rows (one row per measure, one column per model) for a console or Markdown table."""
        header = ["", *(side.label for side in self.sides)]
        rows: list[list[str]] = []

        def add(name: str, values: list[str]) -> None:
            rows.append([name, *values])

        add("pretrained weights", [side.pretrained or "none (from scratch)" for side in self.sides])
        add("input size (px)", [str(side.imgsz) for side in self.sides])
        add("epochs trained (best)", [f"{side.epochs_trained} ({side.best_epoch if side.best_epoch else '-'})"
                                      for side in self.sides])
        add("training time (min)", [f"{side.train_seconds / 60:.1f}" for side in self.sides])
        add(f"mAP50 ({self.split})", [_fmt(side.evaluation.metrics.map50) for side in self.sides])
        add(f"mAP50-95 ({self.split})", [_fmt(side.evaluation.metrics.map50_95) for side in self.sides])
        for index, name in enumerate(self.sides[0].evaluation.metrics.class_names):
            add(f"  AP50 {name}", [_fmt(side.evaluation.metrics.per_class[index].ap50) for side in self.sides])
        add("best-F1 threshold", [f"{side.best_f1_threshold:.3f}" for side in self.sides])
        add("F1 at that threshold", [_fmt(side.best_f1) for side in self.sides])
        add("part escape rate", [_rate(side.evaluation.metrics.decisions.escape_rate) for side in self.sides])
        add("part false-reject rate", [_rate(side.evaluation.metrics.decisions.false_reject_rate)
                                       for side in self.sides])
        add("parameters (M)", [f"{side.speed.parameters / 1e6:.2f}" for side in self.sides])
        add("GFLOPs", [_fmt(side.speed.gflops, 2) for side in self.sides])
        add("model file (MB)", [_fmt(side.speed.model_file_mb, 1) for side in self.sides])
        add("ONNX file (MB)", [_fmt(side.speed.onnx_file_mb, 1) for side in self.sides])
        for runtime, title in (("pytorch", "PyTorch"), ("onnxruntime", "ONNX Runtime")):
            values = []
            for side in self.sides:
                stats = side.speed.latency.get(runtime)
                values.append("-" if stats is None else f"{stats.median_ms:.1f} / {stats.p95_ms:.1f}")
            add(f"{title} latency ms (median / p95)", values)
        return header, rows


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"
