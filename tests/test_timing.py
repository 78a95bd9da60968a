"""One timing rule and one machine description for export, compare and the benchmarks."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from yolodefect.errors import YoloDefectError
from yolodefect.inference.timing import Runner, measure, model_runner, torch_module_runner
from yolodefect.machine import machine_description, machine_info, machine_line

BENCH_MACHINE = Path(__file__).resolve().parents[1] / "bench" / "machine.py"


def test_measure_times_each_run_after_the_warm_up() -> None:
    calls: list[float] = []

    def call() -> None:
        calls.append(time.perf_counter())
        time.sleep(0.004 if len(calls) > 2 else 0.2)  # slow warm-up calls must not count

    runner = Runner("pytorch", "torch 2 CPU", call, input_shape=(1, 3, 32, 32))
    latency = measure([runner], runs=7, warmup=2, threads=1)["pytorch"]
    assert len(calls) == 9 and latency.runs == 7 and latency.warmup == 2 and latency.threads == 1
    assert 4.0 <= latency.min_ms <= latency.median_ms <= latency.p95_ms < 150.0
    assert latency.engine == "torch"
    assert latency.to_dict()["input_shape"] == [1, 3, 32, 32]
    with pytest.raises(YoloDefectError, match="at least 1 run"):
        measure([runner], runs=0, warmup=0, threads=1)


def test_models_of_one_runtime_are_interleaved_and_runtimes_timed_one_after_the_other() -> None:
    order: list[str] = []
    runners = [Runner(label, runtime, lambda label=label: order.append(label))
               for label, runtime in (("a", "onnxruntime 1.2 CPU"), ("b", "onnxruntime 1.2 CPU"), ("t", "torch 2 CPU"))]
    measure(runners, runs=12, warmup=1, threads=1)
    blocks = ["a"] * 5 + ["b"] * 5 + ["a"] * 5 + ["b"] * 5 + ["a"] * 2 + ["b"] * 2
    assert order == ["a", "b", *blocks, "t", *["t"] * 12]


def test_model_runner_times_an_onnx_file_in_onnx_runtime_like_a_module_in_torch(tmp_path: Path) -> None:
    from yolodefect.compare.latency import export_onnx

    network = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()
    onnx_path = export_onnx(network, tmp_path / "tiny.onnx", (1, 3, 32, 32))
    runners = [model_runner("onnx", onnx_path, imgsz=32, threads=1), torch_module_runner("torch", network, 32, 1)]
    threads_before = torch.get_num_threads()
    latency = measure(runners, runs=3, warmup=1, threads=1)
    assert torch.get_num_threads() == threads_before  # timing with 1 thread leaves the process as it was
    assert latency["onnx"].engine == "onnxruntime" and latency["torch"].engine == "torch"
    assert latency["onnx"].input_shape == latency["torch"].input_shape == (1, 3, 32, 32)
    assert "spin-wait off" in latency["onnx"].settings and "1 threads" in latency["torch"].settings


def test_one_machine_description_names_cpu_features_load_gpu_and_versions() -> None:
    info = {"cpu": "Test CPU 9000", "cores": 2, "cpu_features": ["avx2", "avx512_vnni"], "load_average_1min": 1.5,
            "gpu": None, "versions": {"python": "3.11.7", "torch": "2.5.1", "onnxruntime": "1.20.1"}}
    expected = "Test CPU 9000, 2 cores (avx2, avx512_vnni), load 1.5, no GPU; python 3.11.7, torch 2.5.1, onnxruntime 1.20.1"
    assert machine_description(info) == expected
    assert machine_line(info) == f"machine: {expected}"
    live = machine_info()
    assert {"cpu", "cores", "cpu_features", "load_average_1min", "gpu", "versions"} <= set(live)


def test_benchmarks_record_the_library_machine_description_plus_the_commit() -> None:
    spec = importlib.util.spec_from_file_location("bench_machine", BENCH_MACHINE)
    assert spec is not None and spec.loader is not None
    bench_machine = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_machine)
    info = bench_machine.machine_info()
    library = machine_info()
    assert set(info) == set(library) | {"commit"}
    assert {key: info[key] for key in ("cpu", "cores", "cpu_features", "gpu")} == \
        {key: library[key] for key in ("cpu", "cores", "cpu_features", "gpu")}
    assert bench_machine.machine_line is machine_line
