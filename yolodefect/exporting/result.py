"""What ``export`` returns: the reference and the exported model side by side, the gate, the files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from yolodefect.evaluation.metrics import EvalMetrics
from yolodefect.exporting.calibration import CalibrationSet
from yolodefect.exporting.formats import ExportFormat, Precision
from yolodefect.exporting.gate import GateResult
from yolodefect.inference.timing import Latency
from yolodefect.inference.timing import speedup as same_run_speedup


def path_size(path: Path) -> int:
    """Bytes of a file, or of every file in an export folder."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


@dataclass(frozen=True)
class ModelReport:
    """One model as validated: its accuracy on val (THE evaluator), latency here, and size."""

    label: str  # e.g. "FP32 ONNX Runtime", "INT8 ONNX Runtime", "FP32 PyTorch"
    path: Path
    precision: Precision
    size_bytes: int
    metrics: EvalMetrics
    latency: Latency

    def to_dict(self) -> dict:
        m = self.metrics
        return {
            "label": self.label,
            "file": str(self.path),
            "precision": self.precision.value,
            "size_bytes": self.size_bytes,
            "map50": m.map50,
            "map50_95": m.map50_95,
            "per_class_ap50": {c.name: c.ap50 for c in m.per_class},
            "escape_rate": m.decisions.escape_rate,
            "false_reject_rate": m.decisions.false_reject_rate,
            "latency": self.latency.to_dict(),
        }


@dataclass(frozen=True)
class CandidateReport:
    """One model of an auto ``--int8`` run: built, gated against the FP32 reference, timed in the same run.

    ``speedup`` is the same-run ratio to the reference (``timing.speedup``: the median over the alternating rounds
    of the "alone" timing); ``chosen`` marks the fastest that passed the gate, the deployable model.
    """

    report: ModelReport
    format: ExportFormat
    gate: GateResult
    speedup: float | None
    chosen: bool = False
    quantization: str | None = None

    @property
    def name(self) -> str:
        return self.report.label

    @property
    def passed(self) -> bool:
        return self.gate.passed

    @property
    def inference_precision(self) -> str:
        """What it computes in: the file's precision, plus what OpenVINO ran its float parts in when it decides."""
        stored, ran = self.report.precision.value, self.report.latency.precision
        if not ran or ran == "f32" and stored == "fp32":
            return stored
        return ran if stored == "fp32" else f"{stored}/{ran}"  # e.g. int8/bf16: int8 layers, the rest in bf16

    def to_dict(self) -> dict:
        latency, metrics = self.report.latency, self.report.metrics
        return {
            "name": self.name,
            "file": str(self.report.path),
            "format": self.format.value,
            "runtime": latency.runtime,
            "precision": self.report.precision.value,
            "inference_precision": self.inference_precision,
            "size_bytes": self.report.size_bytes,
            "map50": metrics.map50,
            "map50_drop": round(self.gate.map50_drop, 3),
            "passed": self.passed,
            "median_ms": latency.median_ms,
            "p95_ms": latency.p95_ms,
            "speedup": None if self.speedup is None else round(self.speedup, 3),
            "chosen": self.chosen,
            "gate": self.gate.message,
        }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}"


def _speedup(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}x faster" if value >= 1 else f"{1 / value:.2f}x slower"


def _delta_points(before: float | None, after: float | None) -> str:
    return "-" if before is None or after is None else f"{(after - before) * 100:+.2f}"


@dataclass(frozen=True)
class ExportResult:
    """The outcome of ``yolodefect export``.

    ``reference`` is what the export is validated against (the FP32 export for --int8, else the
    PyTorch checkpoint); ``candidate`` is the exported model. ``model_path`` is the candidate's final
    file: ``<stem>_int8.onnx`` when ``deployable``, ``<stem>_int8.rejected.onnx`` when the gate failed.
    """

    source: Path
    source_sha256: str
    architecture: str
    format: ExportFormat
    precision: Precision
    imgsz: int
    dynamic: bool
    data: Path
    split: str
    threshold_source: str
    reference: ModelReport
    candidate: ModelReport
    gate: GateResult
    deployable: bool
    model_path: Path
    card_json: Path
    card_md: Path
    fp32_path: Path | None = None  # the FP32 export an INT8 run also writes
    calibration: CalibrationSet | None = None
    quantization: str | None = None  # how the INT8 model was made, in words
    simplified: bool | None = None  # ONNX only: did onnxsim simplify the graph
    machine: str = ""
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    # An auto --int8 run (no --format): every candidate built, the chosen one is ``candidate``; empty otherwise.
    candidates: list[CandidateReport] = field(default_factory=list)
    choice: str | None = None  # why ``model_path`` is the one to deploy (or why none is)

    @property
    def failed(self) -> bool:
        return not self.deployable

    @property
    def exit_code(self) -> int:
        """0 when the export may be deployed, 1 when the accuracy gate rejected it."""
        return 0 if self.deployable else 1

    @property
    def speedup(self) -> float | None:
        """Reference median latency over the candidate's (2.0: twice as fast), same-run (``timing.speedup``)."""
        if not self.candidate.latency.median_ms:
            return None
        return same_run_speedup(self.reference.latency, self.candidate.latency)

    def headline(self) -> str:
        """One line: what was made, how fast, how accurate, deployable or not."""
        verdict = "DEPLOYABLE" if self.deployable else "REJECTED (not deployable)"
        return (f"{self.model_path.name}: {self.candidate.label}, imgsz {self.imgsz}, "
                f"{_speedup(self.speedup)} than {self.reference.label}, "
                f"mAP50 {0.0 - self.gate.map50_drop:+.2f} points - {verdict}")  # 0.0 -: no "-0.00"

    def table(self) -> tuple[list[str], list[list[str]]]:
        """Header and rows comparing reference and candidate, ready for a console table."""
        ref, cand = self.reference, self.candidate
        header = ["", ref.label, cand.label, "change"]
        rows = [
            ["mAP50", _pct(ref.metrics.map50), _pct(cand.metrics.map50),
             _delta_points(ref.metrics.map50, cand.metrics.map50)],
            ["mAP50-95", _pct(ref.metrics.map50_95), _pct(cand.metrics.map50_95),
             _delta_points(ref.metrics.map50_95, cand.metrics.map50_95)],
        ]
        theirs = {c.name: c.ap50 for c in cand.metrics.per_class}
        for c in ref.metrics.per_class:
            rows.append([f"  AP50 {c.name}", _pct(c.ap50), _pct(theirs.get(c.name)), _delta_points(c.ap50, theirs.get(c.name))])
        ref_d, cand_d = ref.metrics.decisions, cand.metrics.decisions
        rows += [
            ["escape rate %", _pct(ref_d.escape_rate), _pct(cand_d.escape_rate),
             _delta_points(ref_d.escape_rate, cand_d.escape_rate)],
            ["false-reject rate %", _pct(ref_d.false_reject_rate), _pct(cand_d.false_reject_rate),
             _delta_points(ref_d.false_reject_rate, cand_d.false_reject_rate)],
            ["latency median ms", f"{ref.latency.median_ms:.2f}", f"{cand.latency.median_ms:.2f}",
             _speedup(self.speedup)],
            ["latency p95 ms", f"{ref.latency.p95_ms:.2f}", f"{cand.latency.p95_ms:.2f}", ""],
            ["file MB", f"{ref.size_bytes / 1e6:.1f}", f"{cand.size_bytes / 1e6:.1f}",
             f"{cand.size_bytes / ref.size_bytes:.2f}x" if ref.size_bytes else "-"],
        ]
        return header, rows

    def candidate_table(self) -> tuple[list[str], list[list[str]]]:
        """Header and one row per candidate of an auto run (no rows otherwise), for a console table."""
        header = ["candidate", "precision", "mAP50", "drop", "ms", "speed-up", "gate", "chosen"]
        rows = [[c.name, c.inference_precision, _pct(c.report.metrics.map50), f"{c.gate.map50_drop:.2f}",
                 f"{c.report.latency.median_ms:.2f}", "-" if c.speedup is None else f"{c.speedup:.2f}x",
                 "passed" if c.passed else "FAILED", "CHOSEN" if c.chosen else ""] for c in self.candidates]
        return header, rows

    def files(self) -> dict[str, Path]:
        files = {"model": self.model_path, "card": self.card_json, "card_md": self.card_md}
        if self.fp32_path is not None:
            files["fp32_model"] = self.fp32_path
        for candidate in self.candidates:
            if candidate.report.path != self.model_path:
                files[f"candidate {candidate.name}"] = candidate.report.path
        return files

    def to_dict(self) -> dict:
        return {
            "source": str(self.source),
            "source_sha256": self.source_sha256,
            "architecture": self.architecture,
            "format": self.format.value,
            "precision": self.precision.value,
            "imgsz": self.imgsz,
            "dynamic": self.dynamic,
            "data": str(self.data),
            "split": self.split,
            "threshold_source": self.threshold_source,
            "deployable": self.deployable,
            "exit_code": self.exit_code,
            "gate": self.gate.to_dict(),
            "speedup": None if self.speedup is None else round(self.speedup, 3),
            "reference": self.reference.to_dict(),
            "candidate": self.candidate.to_dict(),
            "calibration": self.calibration.to_dict() if self.calibration else None,
            "quantization": self.quantization,
            "simplified": self.simplified,
            "files": {name: str(path) for name, path in self.files().items()},
            "machine": self.machine,
            "seconds": round(self.seconds, 1),
            "notes": list(self.notes),
            "candidates": [candidate.to_dict() for candidate in self.candidates],
            "choice": self.choice,
        }
