"""Batch-1 latency of one or more models on this machine, measured side by side.

Models of the same runtime are interleaved in short blocks (5 runs of A, 5 of B, ...) so that a machine
whose load changes during the measurement (shared CI runners, a training job next door) slows every
model alike and the speed-up stays meaningful. ONNX Runtime sessions run with ``threads`` intra-op
threads and spin-waiting off: spinning threads of one session would steal the cores of the other.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

BLOCK = 5


@dataclass(frozen=True)
class Latency:
    """Milliseconds per batch-1 inference (model only: no decoding, letterbox or NMS)."""

    runtime: str
    median_ms: float
    p95_ms: float
    mean_ms: float
    min_ms: float
    runs: int
    warmup: int
    threads: int
    precision: str | None = None  # what the runtime really computed in, when it decides (OpenVINO's hint)
    settings: str = ""  # session settings that matter for the figure

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Runner:
    """One model ready to run: ``run()`` does one inference on a fixed input."""

    label: str
    runtime: str
    run: Callable[[], Any]
    precision: str | None = None
    settings: str = ""
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext  # held while it is timed


def _input(image: np.ndarray | None, imgsz: int) -> np.ndarray:
    if image is not None:
        return np.ascontiguousarray(image, dtype=np.float32)
    return np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)


def onnxruntime_session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnxruntime_runner(label: str, path: Path, imgsz: int, threads: int, image: np.ndarray | None = None) -> Runner:
    import onnxruntime as ort

    session = onnxruntime_session(path, threads)
    feed = {session.get_inputs()[0].name: _input(image, imgsz)}
    settings = f"CPUExecutionProvider, ORT_ENABLE_ALL, {threads} intra-op threads, spin-wait off"
    return Runner(label, f"onnxruntime {ort.__version__} CPU", lambda: session.run(None, feed), settings=settings)


def openvino_runner(label: str, folder: Path, imgsz: int, threads: int, image: np.ndarray | None = None,
                    precision_hint: str | None = None) -> Runner:
    """OpenVINO on CPU in LATENCY mode; ``precision`` reports the INFERENCE_PRECISION_HINT it compiled with."""
    import openvino as ov

    xml = folder if folder.suffix == ".xml" else next(folder.glob("*.xml"))
    core = ov.Core()
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    if precision_hint:
        config["INFERENCE_PRECISION_HINT"] = precision_hint
    compiled = core.compile_model(core.read_model(str(xml)), "CPU", config)
    request = compiled.create_infer_request()
    data = _input(image, imgsz)
    try:
        hint = compiled.get_property("INFERENCE_PRECISION_HINT")
        precision = hint.to_string() if hasattr(hint, "to_string") else str(hint)
    except Exception:  # older OpenVINO or another device: unknown rather than guessed
        precision = None
    settings = f"CPU, PERFORMANCE_HINT LATENCY, {threads} threads, INFERENCE_PRECISION_HINT {precision}"
    return Runner(label, f"openvino {ov.__version__} CPU", lambda: request.infer({0: data}), precision=precision,
                  settings=settings)


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def torch_runner(label: str, checkpoint: Path, imgsz: int, threads: int, image: np.ndarray | None = None) -> Runner:
    """The PyTorch checkpoint on CPU exactly as Ultralytics runs it (AutoBackend: fused, channels_last on x86)."""
    import torch
    from ultralytics.nn.autobackend import AutoBackend

    backend = AutoBackend(str(checkpoint), device=torch.device("cpu"), fuse=True, verbose=False)
    tensor = torch.from_numpy(_input(image, imgsz))

    def run() -> Any:
        with torch.inference_mode():
            return backend(tensor)

    # torch.set_num_threads is process-wide and slow to change: set it once around the timing, not per call.
    return Runner(label, f"torch {torch.__version__} CPU", run,
                  settings=f"Ultralytics AutoBackend (fused, channels_last), inference_mode, {threads} threads",
                  context=lambda: torch_threads(threads))


def ultralytics_runner(label: str, path: Path, imgsz: int, device: str, image: np.ndarray | None = None) -> Runner:
    """Any export through Ultralytics' AutoBackend (used for TensorRT engines, on the GPU)."""
    import torch
    from ultralytics.nn.autobackend import AutoBackend

    backend = AutoBackend(str(path), device=torch.device(f"cuda:{device}" if device.isdigit() else device),
                          verbose=False)
    tensor = torch.from_numpy(_input(image, imgsz)).to(backend.device)
    if getattr(backend, "fp16", False):
        tensor = tensor.half()
    synchronize = torch.cuda.synchronize if tensor.is_cuda else (lambda: None)

    def run() -> Any:
        out = backend(tensor)
        synchronize()
        return out

    return Runner(label, f"{type(backend).__name__} on {backend.device}", run)


def _time_interleaved(runners: list[Runner], runs: int, warmup: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {runner.label: [] for runner in runners}
    with contextlib.ExitStack() as stack:
        for runner in runners:
            stack.enter_context(runner.context())
        for runner in runners:
            for _ in range(warmup):
                runner.run()
        while any(len(values) < runs for values in times.values()):
            for runner in runners:
                for _ in range(min(BLOCK, runs - len(times[runner.label]))):
                    started = time.perf_counter()
                    runner.run()
                    times[runner.label].append((time.perf_counter() - started) * 1000.0)
    return times


def measure(runners: list[Runner], *, runs: int, warmup: int, threads: int) -> dict[str, Latency]:
    """Warm every runner up, then time ``runs`` inferences of each.

    Runners of the same runtime are interleaved in blocks; different runtimes are timed one after the
    other, because their thread pools (PyTorch's OpenMP, OpenVINO's TBB) keep spinning after a call and
    would slow whichever runtime runs next.
    """
    groups: dict[str, list[Runner]] = {}
    for runner in runners:
        groups.setdefault(runner.runtime.split()[0], []).append(runner)
    times: dict[str, list[float]] = {}
    for group in groups.values():
        times.update(_time_interleaved(group, runs, warmup))
    result = {}
    for runner in runners:
        values = times[runner.label]
        result[runner.label] = Latency(
            runtime=runner.runtime,
            median_ms=round(statistics.median(values), 3),
            p95_ms=round(float(np.percentile(values, 95)), 3),
            mean_ms=round(statistics.fmean(values), 3),
            min_ms=round(min(values), 3),
            runs=len(values),
            warmup=warmup,
            threads=threads,
            precision=runner.precision,
            settings=runner.settings,
        )
        logger.info("latency %s: median %.2f ms, p95 %.2f ms (%d runs)", runner.label,
                    result[runner.label].median_ms, result[runner.label].p95_ms, len(values))
    return result
