"""Batch-1 latency of one or more models on this machine, measured side by side: the one timing rule
``export``, ``compare`` and every benchmark quote.

A :class:`Runner` is one model ready to run one inference on a fixed (1, 3, S, S) input; :func:`measure`
times runners and returns one :class:`Latency` each, in one of two modes (``Latency.mode`` records which):

- ``"alone"``, deployment-true and the HEADLINE figure: what an inspection line sees, because a station runs
  one model continuously. Each runner runs ``runs`` consecutive inferences after its own ``warmup``, with
  nothing else in between; this is repeated in alternating ``rounds`` (A alone, B alone, A alone, B alone, ...)
  so that a machine whose load drifts hits every model in every round and a same-run ratio can still be formed:
  :func:`speedup` takes the ratio per round and reports the median over rounds. Runtimes with their own
  thread pools (OpenVINO's TBB workers, ORT's spinning, PyTorch's OpenMP) are timed warm, as on the line.
- ``"interleaved"`` (the default, kept as it was): models of the same runtime are interleaved in short blocks
  (5 runs of A, 5 of B, ...) and runtimes timed one after the other. Every block wakes a model after another
  one ran, which costs runtimes with their own thread pools a wake-up the line never pays, so its times are
  usually higher than ``"alone"`` (measured: ORT INT8 10.8 vs 6.1 ms at 256 px, bench/results/export_int8.json);
  its blocks are short, so it still gives a fair ratio on a machine whose load changes quickly.

ONNX Runtime sessions run with ``threads`` intra-op threads and spin-waiting off: spinning threads of one
session would steal the cores of the other.
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

from yolodefect.errors import YoloDefectError

logger = logging.getLogger(__name__)

BLOCK = 5  # runs of one model before the next model of its runtime gets its turn (interleaved mode)
INTERLEAVED = "interleaved"
ALONE = "alone"
MODES = (INTERLEAVED, ALONE)


@dataclass(frozen=True)
class Latency:
    """Milliseconds per batch-1 inference (model only: no decoding, letterbox or NMS)."""

    runtime: str  # e.g. "onnxruntime 1.20.1 CPU", "torch 2.5.1 CPU": the engine first, then its version
    median_ms: float
    p95_ms: float
    mean_ms: float
    min_ms: float
    runs: int
    warmup: int
    threads: int
    precision: str | None = None  # what the runtime really computed in, when it decides (OpenVINO's hint)
    settings: str = ""  # session settings that matter for the figure
    input_shape: tuple[int, ...] | None = None  # the tensor timed, e.g. (1, 3, 640, 640)
    mode: str = INTERLEAVED  # how it was timed: "alone" (deployment-true) or "interleaved" (see the module doc)
    rounds: int = 1  # alone: alternating rounds of ``runs / rounds`` consecutive runs each
    round_medians_ms: tuple[float, ...] = ()  # median of each round (one entry when interleaved)

    @property
    def engine(self) -> str:
        """The runtime's name without version: "torch", "onnxruntime", "openvino", ..."""
        return self.runtime.split()[0] if self.runtime else ""

    def to_dict(self) -> dict:
        data = asdict(self)
        data["input_shape"] = list(self.input_shape) if self.input_shape is not None else None
        data["round_medians_ms"] = list(self.round_medians_ms)
        return data


def speedup(reference: Latency, other: Latency) -> float:
    """How many times faster ``other`` is than ``reference``, measured in the same run.

    Alone: the ratio of the two medians in each round, then the median over rounds (a load change between
    rounds moves both models of a round alike). Interleaved: the ratio of the medians.
    """
    if reference.mode != other.mode or len(reference.round_medians_ms) != len(other.round_medians_ms):
        raise YoloDefectError(f"a same-run speed-up needs two latencies of one measure() call, got "
                              f"{reference.mode} x{reference.rounds} and {other.mode} x{other.rounds}")
    pairs = list(zip(reference.round_medians_ms, other.round_medians_ms)) or [(reference.median_ms, other.median_ms)]
    return statistics.median(ref / max(value, 1e-9) for ref, value in pairs)


@dataclass
class Runner:
    """One model ready to run: ``run()`` does one inference on a fixed input."""

    label: str
    runtime: str
    run: Callable[[], Any]
    precision: str | None = None
    settings: str = ""
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext  # held while it is timed
    input_shape: tuple[int, ...] | None = None


def model_input(image: np.ndarray | None, imgsz: int) -> np.ndarray:
    """The tensor a runner feeds: ``image`` (already letterboxed, NCHW float) or fixed noise of (1, 3, S, S)."""
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
    data = model_input(image, imgsz)
    feed = {session.get_inputs()[0].name: data}
    settings = f"CPUExecutionProvider, ORT_ENABLE_ALL, {threads} intra-op threads, spin-wait off"
    return Runner(label, f"onnxruntime {ort.__version__} CPU", lambda: session.run(None, feed), settings=settings,
                  input_shape=tuple(data.shape))


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
    data = model_input(image, imgsz)
    precision = _openvino_property(compiled, "INFERENCE_PRECISION_HINT")
    # What the LATENCY hint resolved to on this CPU (streams, pinning): part of the figure, so recorded with it.
    resolved = ", ".join(f"{name} {value}" for name in ("NUM_STREAMS", "ENABLE_CPU_PINNING", "ENABLE_HYPER_THREADING")
                         if (value := _openvino_property(compiled, name)) is not None)
    requested = f"CPU, PERFORMANCE_HINT LATENCY, {threads} threads, INFERENCE_PRECISION_HINT {precision}"
    settings = ", ".join(filter(None, [requested, resolved]))
    return Runner(label, f"openvino {ov.__version__} CPU", lambda: request.infer({0: data}), precision=precision,
                  settings=settings, input_shape=tuple(data.shape))


def _openvino_property(compiled: Any, name: str) -> str | None:
    """A compiled model's property as text; None where this OpenVINO or device does not report it."""
    try:
        value = compiled.get_property(name)
    except Exception:  # noqa: BLE001 - older OpenVINO or another device: unknown rather than guessed
        return None
    return value.to_string() if hasattr(value, "to_string") else str(value)


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def torch_module_runner(label: str, module: Any, imgsz: int, threads: int, image: np.ndarray | None = None,
                        settings: str = "") -> Runner:
    """Any ``torch.nn.Module`` (in eval mode) on CPU under ``inference_mode`` with ``threads`` threads."""
    import torch

    tensor = torch.from_numpy(model_input(image, imgsz))
    module = module.eval()

    def run() -> Any:
        with torch.inference_mode():
            return module(tensor)

    # torch.set_num_threads is process-wide and slow to change: set it once around the timing, not per call.
    return Runner(label, f"torch {torch.__version__} CPU", run,
                  settings=", ".join(filter(None, [settings, f"inference_mode, {threads} threads"])),
                  context=lambda: torch_threads(threads), input_shape=tuple(tensor.shape))


def torch_runner(label: str, checkpoint: Path, imgsz: int, threads: int, image: np.ndarray | None = None) -> Runner:
    """The PyTorch checkpoint on CPU exactly as Ultralytics runs it (AutoBackend: fused, channels_last on x86)."""
    import torch
    from ultralytics.nn.autobackend import AutoBackend

    backend = AutoBackend(str(checkpoint), device=torch.device("cpu"), fuse=True, verbose=False)
    return torch_module_runner(label, backend, imgsz, threads, image,
                               settings="Ultralytics AutoBackend (fused, channels_last)")


def ultralytics_runner(label: str, path: Path, imgsz: int, device: str, image: np.ndarray | None = None) -> Runner:
    """Any export through Ultralytics' AutoBackend (used for TensorRT engines, on the GPU)."""
    import torch
    from ultralytics.nn.autobackend import AutoBackend

    backend = AutoBackend(str(path), device=torch.device(f"cuda:{device}" if device.isdigit() else device),
                          verbose=False)
    tensor = torch.from_numpy(model_input(image, imgsz)).to(backend.device)
    if getattr(backend, "fp16", False):
        tensor = tensor.half()
    synchronize = torch.cuda.synchronize if tensor.is_cuda else (lambda: None)

    def run() -> Any:
        out = backend(tensor)
        synchronize()
        return out

    return Runner(label, f"{type(backend).__name__} on {backend.device}", run, input_shape=tuple(tensor.shape))


def model_runner(label: str, path: Path, *, imgsz: int, threads: int, device: str = "cpu",
                 image: np.ndarray | None = None, precision_hint: str | None = None) -> Runner:
    """The runner for a model file as ``export`` times it: a .pt checkpoint in PyTorch (AutoBackend), an .onnx
    file in ONNX Runtime, an OpenVINO folder (or .xml) in OpenVINO (``precision_hint``: force e.g. "f32"), and
    anything else (TensorRT .engine) through Ultralytics' AutoBackend on ``device``."""
    path = Path(path)
    if path.is_dir() or path.suffix == ".xml":
        return openvino_runner(label, path, imgsz, threads, image, precision_hint=precision_hint)
    if path.suffix == ".onnx":
        return onnxruntime_runner(label, path, imgsz, threads, image)
    if path.suffix == ".pt":
        return torch_runner(label, path, imgsz, threads, image)
    return ultralytics_runner(label, path, imgsz, device, image)


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


def _time_alone(runners: list[Runner], runs: int, warmup: int, rounds: int) -> dict[str, list[list[float]]]:
    """Round after round, each runner warms up then runs ``runs`` times in a row with nothing in between."""
    times: dict[str, list[list[float]]] = {runner.label: [] for runner in runners}
    for _ in range(rounds):
        for runner in runners:
            values: list[float] = []
            with runner.context():
                for _ in range(warmup):
                    runner.run()
                for _ in range(runs):
                    started = time.perf_counter()
                    runner.run()
                    values.append((time.perf_counter() - started) * 1000.0)
            times[runner.label].append(values)
    return times


def measure(runners: list[Runner], *, runs: int, warmup: int, threads: int, mode: str = INTERLEAVED,
            rounds: int = 3) -> dict[str, Latency]:
    """Time batch-1 inferences of every runner after ``warmup`` untimed calls; one :class:`Latency` by label.

    ``mode="alone"`` (deployment-true, the headline): ``rounds`` alternating rounds, each runner in turn warming
    up (``warmup`` calls, every round) and then running ``runs`` consecutive timed inferences, so each runner is
    timed ``runs * rounds`` times. ``mode="interleaved"``: ``runs`` timed inferences each, runners of the same
    runtime interleaved in blocks of :data:`BLOCK`; different runtimes are timed one after the other, because
    their thread pools (PyTorch's OpenMP, OpenVINO's TBB) keep spinning after a call and would slow whichever
    runtime runs next. ``rounds`` applies to the alone mode only.
    """
    if mode not in MODES:
        raise YoloDefectError(f"latency mode {mode!r}: choose one of {', '.join(MODES)}")
    if runs < 1 or warmup < 0:
        raise YoloDefectError(f"latency runs {runs}, warm-up {warmup}: time at least 1 run after >= 0 warm-up runs")
    if mode == ALONE and rounds < 1:
        raise YoloDefectError(f"latency rounds {rounds}: time at least 1 round")
    labels = [runner.label for runner in runners]
    if len(set(labels)) != len(labels):
        raise YoloDefectError(f"latency runners need distinct labels, got {labels}")
    per_round: dict[str, list[list[float]]] = {}
    if mode == ALONE:
        per_round = _time_alone(runners, runs, warmup, rounds)
    else:
        groups: dict[str, list[Runner]] = {}
        for runner in runners:
            groups.setdefault(runner.runtime.split()[0], []).append(runner)
        for group in groups.values():
            per_round.update({label: [values] for label, values in _time_interleaved(group, runs, warmup).items()})
    result = {}
    for runner in runners:
        values = [value for round_values in per_round[runner.label] for value in round_values]
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
            input_shape=runner.input_shape,
            mode=mode,
            rounds=len(per_round[runner.label]),
            round_medians_ms=tuple(round(statistics.median(v), 3) for v in per_round[runner.label]),
        )
        logger.info("latency %s (%s): median %.2f ms, p95 %.2f ms (%d runs)", runner.label, mode,
                    result[runner.label].median_ms, result[runner.label].p95_ms, len(values))
    return result
