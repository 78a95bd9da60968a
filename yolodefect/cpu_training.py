"""Faster training on a CPU: every core, and bfloat16 where the CPU has it (what Ultralytics does not do there).

- **Threads.** Ultralytics sets PyTorch to ``cpu_count - 1`` threads for CPU training (``select_device``), keeping
  a core for data-loader workers, but on a CPU it starts no workers (``workers=0``): on 2 cores it trains on one
  and the other idles. One YOLO11n training step (batch 16, 256 px, forward and backward) took 0.95 s on 1
  thread and 0.68 s on 2 (quiet 2-core Xeon).
- **bfloat16.** Ultralytics trains in mixed precision and channels_last only on CUDA: its ``autocast`` refuses
  bfloat16 off CUDA, ``check_amp`` turns AMP off on a CPU, and ``channels_last`` is ignored there. On a CPU with
  native bfloat16 (AVX512-BF16 or AMX, where oneDNN runs bf16 convolutions at full speed) the same step took
  0.44 s on 1 thread and 0.30 s on 2 in bf16 with channels_last (3.2x Ultralytics' own 0.95 s). Without native
  bf16 oneDNN emulates it, slower than fp32, so :func:`native_bf16` decides.

:func:`cpu_trainer` builds Ultralytics' detection trainer with those settings; :func:`cpu_bf16_autocast` lets the
trainer's ``amp="bf16"`` open ``torch.autocast("cpu", bfloat16)`` (Ultralytics' ``autocast`` helper raises for bf16
off CUDA) for the length of the ``with`` block. Weights, optimizer state, EMA and checkpoints stay fp32 (autocast
only lowers the convolutions' and matmuls' arithmetic), and checkpoints are saved in NCHW, so ``best.pt`` is an
ordinary Ultralytics checkpoint. bench/train_time_to_map.py measures what it all does to a whole run.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
from ultralytics.models.yolo.detect import DetectionTrainer


def native_bf16() -> bool:
    """True when this CPU runs bfloat16 in hardware (AVX512-BF16 or AMX tiles), where bf16 training is faster."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # a torch without these probes: do not guess
        return False


def training_cores() -> int:
    """The physical cores this process may run on (hyper-threads do not speed up PyTorch's convolutions)."""
    import psutil

    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(psutil.cpu_count(logical=False) or available, available))


def cpu_trainer(threads: int | None, channels_last: bool) -> type[DetectionTrainer]:
    """Ultralytics' detection trainer training on ``threads`` PyTorch threads (None: Ultralytics' choice), with the
    model and its input batches in channels_last (NHWC) when asked (with bf16: 1.5x faster per step here)."""

    class CpuTrainer(DetectionTrainer):
        def _setup_train(self) -> None:
            super()._setup_train()
            if threads is not None:
                torch.set_num_threads(threads)  # after Ultralytics' select_device set cpu_count - 1
            if channels_last:
                # In place: the optimizer and EMA keep their parameter objects; only their data's layout changes.
                self.model.to(memory_format=torch.channels_last)

        def preprocess_batch(self, batch: dict) -> dict:
            batch = super().preprocess_batch(batch)
            if channels_last:
                batch["img"] = batch["img"].contiguous(memory_format=torch.channels_last)
            return batch

    CpuTrainer.__qualname__ = CpuTrainer.__name__ = f"CpuTrainer(threads={threads}, channels_last={channels_last})"
    return CpuTrainer


@contextlib.contextmanager
def cpu_bf16_autocast() -> Iterator[None]:
    """While open, Ultralytics' trainer opens ``torch.autocast("cpu", bfloat16)`` for ``amp="bf16"`` on a CPU."""
    from ultralytics.engine import trainer as trainer_module

    original = trainer_module.autocast

    def autocast(enabled, device: str = "cuda"):
        if device == "cpu" and enabled is torch.bfloat16:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return original(enabled, device=device)

    trainer_module.autocast = autocast
    try:
        yield
    finally:
        trainer_module.autocast = original


@contextlib.contextmanager
def torch_threads_restored() -> Iterator[None]:
    """PyTorch's thread count is per process: put back what it was once training is over."""
    before = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(before)
