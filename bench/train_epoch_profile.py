"""Issue 20 item 4, first step: where the time of one CPU training epoch goes.

    python bench/train_epoch_profile.py --data neu-yolo/data.yaml [--imgsz 256] [--batch 16]

One epoch of YOLO11n from scratch with plain Ultralytics (workers=0, as Ultralytics forces on a CPU), split
by Ultralytics' own trainer callbacks into: waiting for the next batch (data loading and augmentation on the
main process: from one batch's end to the next batch's start), the training step (from batch start to end:
preprocess, forward, loss, backward, optimizer), and validation (on_val_start to on_val_end). Run twice in
the same process, without and with ``cache="ram"`` (decoded images kept in memory), so the ratio is a
same-run one. Writes bench/results/train_epoch_profile.json (or --output) with the machine line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from machine import machine_info, machine_line, median, write_result


class EpochClock:
    """Ultralytics trainer callbacks that split one epoch's wall time into loading, stepping and validating."""

    def __init__(self) -> None:
        self.load_s: list[float] = []
        self.step_s: list[float] = []
        self.val_s = 0.0
        self._mark = 0.0
        self._val_started = 0.0

    def epoch_start(self, trainer) -> None:
        self._mark = time.perf_counter()

    def batch_start(self, trainer) -> None:
        now = time.perf_counter()
        self.load_s.append(now - self._mark)
        self._mark = now

    def batch_end(self, trainer) -> None:
        now = time.perf_counter()
        self.step_s.append(now - self._mark)
        self._mark = now

    def val_start(self, validator) -> None:
        self._val_started = time.perf_counter()

    def val_end(self, validator) -> None:
        self.val_s += time.perf_counter() - self._val_started

    def attach(self, model) -> None:
        model.add_callback("on_train_epoch_start", self.epoch_start)
        model.add_callback("on_train_batch_start", self.batch_start)
        model.add_callback("on_train_batch_end", self.batch_end)
        model.add_callback("on_val_start", self.val_start)
        model.add_callback("on_val_end", self.val_end)


def profile_epoch(data: Path, imgsz: int, batch: int, cache: bool | str, seed: int) -> dict:
    from ultralytics import YOLO

    model = YOLO("yolo11n.yaml")
    clock = EpochClock()
    clock.attach(model)
    with tempfile.TemporaryDirectory(prefix="epoch-profile-") as work:
        started = time.perf_counter()
        model.train(data=str(data), imgsz=imgsz, epochs=1, batch=batch, workers=0, device="cpu", cache=cache,
                    plots=False, seed=seed, project=work, name="run", exist_ok=True, verbose=False, amp=False)
        total = time.perf_counter() - started
    load, step = sum(clock.load_s), sum(clock.step_s)
    return {"cache": cache or "none", "batches": len(clock.step_s), "total_s": round(total, 1),
            "loading_s": round(load, 1), "step_s": round(step, 1), "validation_s": round(clock.val_s, 1),
            "other_s": round(total - load - step - clock.val_s, 1),
            "loading_ms_per_batch_median": round(1000 * median(clock.load_s), 1),
            "step_ms_per_batch_median": round(1000 * median(clock.step_s), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--imgsz", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    print(machine_line(), flush=True)
    rows = [profile_epoch(args.data, args.imgsz, args.batch, cache, args.seed) for cache in (False, "ram")]
    for row in rows:
        print(f"cache {row['cache']:>4}: {row['total_s']} s = loading {row['loading_s']} + step {row['step_s']} "
              f"+ validation {row['validation_s']} + other {row['other_s']} ({row['batches']} batches; per batch "
              f"loading {row['loading_ms_per_batch_median']} ms, step {row['step_ms_per_batch_median']} ms)")
    payload = {"benchmark": "train_epoch_profile", "protocol": "CPU", "machine": machine_info(),
               "data": str(args.data), "model": "yolo11n.yaml", "imgsz": args.imgsz, "batch": args.batch,
               "workers": 0, "epochs": 1, "runs": rows,
               "epoch_ratio_ram_cache": round(rows[0]["total_s"] / rows[1]["total_s"], 3)}
    path = write_result("train_epoch_profile", payload, args.output)
    print(f"RESULT train_epoch_profile {json.dumps({'ratio_ram_cache': payload['epoch_ratio_ram_cache']})}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
