"""Which models an auto ``export --int8`` builds on a CPU, and which of them is deployed.

Without ``--format``, ``--int8`` on a CPU builds every candidate this machine can run: INT8 ONNX (ONNX Runtime
static quantization, always), and with the openvino extra INT8 OpenVINO (NNCF) and the plain OpenVINO IR, which
OpenVINO's CPU plugin runs at its default precision (bf16 on CPUs with AVX-512 BF16 or AMX: reduced precision
without calibration). Each is gated against the FP32 ONNX reference; the fastest that passes is deployed.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from yolodefect.exporting.formats import ExportFormat, FormatSpec, Precision, format_spec
from yolodefect.exporting.result import CandidateReport


@dataclass(frozen=True)
class CandidatePlan:
    """One candidate to build: a format and the precision its file holds."""

    format: ExportFormat
    precision: Precision

    @property
    def spec(self) -> FormatSpec:
        return format_spec(self.format)

    def label(self, inference_precision: str | None = None) -> str:
        """"INT8 ONNX", "INT8 OpenVINO"; the FP32 IR is named by what OpenVINO computes in: "OpenVINO (bf16)"."""
        if self.precision is Precision.INT8:
            return f"INT8 {self.spec.name}"
        return f"{self.spec.name} ({inference_precision or 'f32'})"


def openvino_installed() -> bool:
    """OpenVINO's runtime, all the FP32 IR candidate needs."""
    return importlib.util.find_spec(format_spec(ExportFormat.OPENVINO).runtime) is not None


def nncf_installed() -> bool:
    """Everything the OpenVINO format table row lists (the runtime and NNCF, its quantizer): the INT8 candidate."""
    return not format_spec(ExportFormat.OPENVINO).missing_modules()


def cpu_candidates() -> list[CandidatePlan]:
    """The candidates this machine can build, ONNX Runtime's first (it is always there)."""
    plans = [CandidatePlan(ExportFormat.ONNX, Precision.INT8)]
    if openvino_installed():
        if nncf_installed():
            plans.append(CandidatePlan(ExportFormat.OPENVINO, Precision.INT8))
        plans.append(CandidatePlan(ExportFormat.OPENVINO, Precision.FP32))
    return plans


def choose(candidates: list[CandidateReport]) -> CandidateReport | None:
    """The fastest (median batch-1 latency, timed alone) of those that passed the gate; None when none passed.

    A tie goes to the earlier candidate (ONNX Runtime first: the runtime every station has)."""
    passed = [candidate for candidate in candidates if candidate.passed]
    return min(passed, key=lambda candidate: candidate.report.latency.median_ms) if passed else None


def closest_to_passing(candidates: list[CandidateReport]) -> CandidateReport:
    """When none passed: the one that lost the least mAP50 (its gate message says what to try)."""
    return min(candidates, key=lambda candidate: candidate.gate.map50_drop)


def choice_text(candidates: list[CandidateReport], chosen: CandidateReport | None, max_drop: float) -> str:
    """Why the deployable model is the one it is, in one sentence naming every candidate's latency."""
    passed = [candidate for candidate in candidates if candidate.passed]
    failed = [candidate for candidate in candidates if not candidate.passed]
    timings = ", ".join(f"{c.name} {c.report.latency.median_ms:.2f} ms" for c in passed if c is not chosen)
    dropped = ", ".join(f"{c.name} (mAP50 {-c.gate.map50_drop:+.2f} points)" for c in failed)
    if chosen is None:
        return (f"none of the {len(candidates)} candidates kept mAP50 within {max_drop:g} points of FP32: {dropped}; "
                "nothing is deployable")
    text = (f"{chosen.name} chosen: fastest of the {len(passed)} candidate(s) that passed the gate, "
            f"{chosen.report.latency.median_ms:.2f} ms median at batch 1")
    if timings:
        text += f" vs {timings}"
    if dropped:
        text += f"; failed the gate (max drop {max_drop:g}): {dropped}"
    return text
