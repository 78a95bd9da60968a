"""Speed and size of a network on this machine: batch-1 latency in PyTorch and ONNX Runtime, parameters,
GFLOPs, file sizes.

Both detectors are timed by :mod:`yolodefect.inference.timing`, the rule ``export`` uses: one fixed
(1, 3, S, S) float tensor at the model's own input size, through the network only (no image decoding,
resizing, box decoding or NMS), the same number of threads for both runtimes, warm-up calls first,
then the median and 95th percentile of timed runs.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from yolodefect.inference.timing import onnxruntime_session

logger = logging.getLogger(__name__)

ONNX_OPSET = 17


def example_input(input_shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.rand(input_shape, generator=torch.Generator().manual_seed(seed))


def export_onnx(network: nn.Module, path: Path, input_shape: tuple[int, ...]) -> Path:
    """Export ``network`` with a fixed batch-1 input named ``images`` (TorchScript-based exporter)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    network = network.eval()
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        # The TorchScript-based exporter (the one Ultralytics uses too) is deprecated in favour of the
        # torch.export one, which needs onnxscript, not a dependency; its tracer warnings concern the
        # input shape, which is fixed here anyway.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(network, (example_input(input_shape),), str(path), dynamo=False, opset_version=ONNX_OPSET,
                          input_names=["images"], do_constant_folding=True)
    return path


def onnx_max_abs_diff(network: nn.Module, onnx_path: Path, input_shape: tuple[int, ...], *, threads: int) -> float:
    """Largest absolute difference between the PyTorch and ONNX Runtime outputs on one input."""
    example = example_input(input_shape, seed=1)
    with torch.inference_mode():
        expected = network.eval()(example)
    tensors = [expected] if isinstance(expected, torch.Tensor) else [t for t in _flatten(expected)]
    session = onnxruntime_session(onnx_path, threads)
    outputs = session.run(None, {session.get_inputs()[0].name: example.numpy()})
    diffs = [float(np.abs(out - ref.numpy()).max())
             for out, ref in zip(outputs, tensors) if out.shape == tuple(ref.shape)]
    return max(diffs) if diffs else float("nan")


def _flatten(value: object) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _flatten(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _flatten(item)


def count_parameters(module: nn.Module) -> int:
    return int(sum(parameter.numel() for parameter in module.parameters()))


def count_gflops(network: nn.Module, input_shape: tuple[int, ...]) -> float:
    """Floating-point operations of one forward pass (2 per multiply-add), in billions.

    Counted by ``torch.utils.flop_counter`` for both models, so the two figures use one rule.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        network.eval()(example_input(input_shape))
    return round(counter.get_total_flops() / 1e9, 3)


def file_size_mb(path: Path | None) -> float | None:
    return round(path.stat().st_size / 1e6, 3) if path is not None and path.is_file() else None
