"""The comparison's verdict line and its files: compare.json, compare.md and compare.png."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from yolodefect.compare.result import CompareResult, SideResult
from yolodefect.evaluation.plots import new_figure, save_figure

logger = logging.getLogger(__name__)

ACCURACY_TIE = 0.005  # mAP50 points below which neither model is said to win
SPEED_TIE = 1.05  # latency ratio below which neither model is said to win


def verdict(sides: list[SideResult]) -> str:
    """One line: which model wins on accuracy (mAP50), which on speed (batch-1 median), and by how much."""
    first, second = sides
    if first.map50 is None or second.map50 is None:
        accuracy = "accuracy: cannot be compared (no ground-truth boxes in the split)"
    else:
        better, worse = (first, second) if first.map50 >= second.map50 else (second, first)
        gap = better.map50 - worse.map50
        accuracy = (f"accuracy: a tie, mAP50 {first.map50:.3f} vs {second.map50:.3f}" if gap < ACCURACY_TIE else
                    f"accuracy: {better.label} wins by {gap:+.3f} mAP50 ({better.map50:.3f} vs {worse.map50:.3f})")
    a, b = first.fastest(), second.fastest()
    runtime = "ONNX Runtime" if a.engine == b.engine == "onnxruntime" else "PyTorch"
    if a.engine != b.engine:
        a, b = first.speed.latency["pytorch"], second.speed.latency["pytorch"]
    faster, slower, fast, slow = (first, second, a, b) if a.median_ms <= b.median_ms else (second, first, b, a)
    ratio = slow.median_ms / max(fast.median_ms, 1e-9)
    speed = (f"speed: a tie, {a.median_ms:.1f} vs {b.median_ms:.1f} ms" if ratio < SPEED_TIE else
             f"speed: {faster.label} wins, {ratio:.1f}x faster ({fast.median_ms:.1f} vs {slow.median_ms:.1f} ms)")
    return f"{accuracy}; {speed} ({runtime}, batch 1, median)."


def write_json(result: CompareResult, path: Path) -> Path:
    path.write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")
    return path


def write_markdown(result: CompareResult, path: Path) -> Path:
    header, rows = result.table()
    lines = [
        f"# YOLO vs SSD on {result.data}",
        "",
        f"**{result.verdict}**",
        "",
        f"- split: {result.split}; budget: {result.budget}; device: {result.device}",
        f"- machine: {result.machine}",
        f"- evaluator: yolodefect.evaluate ({result.evaluator}) for both models; escape and false-reject rates "
        "at each model's best-F1 confidence threshold (one image = one part)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
    ]
    if result.notes:
        lines += ["## Notes", "", *(f"- {note}" for note in result.notes), ""]
    if result.files.get("plot"):
        lines += [f"![mAP50 vs latency and per-class AP50]({Path(result.files['plot']).name})", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def plot_comparison(sides: list[SideResult], path: Path) -> Path:
    """Left: mAP50 against batch-1 median latency, one point per model and runtime. Right: AP50 per class."""
    figure = new_figure((12, 5))
    speed_axes, class_axes = figure.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.4]})
    colours = ["tab:blue", "tab:orange"]
    markers = {"pytorch": "o", "onnxruntime": "s"}
    for side, colour in zip(sides, colours):
        for runtime, stats in side.speed.latency.items():
            y = side.map50 if side.map50 is not None else np.nan
            speed_axes.scatter(stats.median_ms, y, color=colour, marker=markers.get(runtime, "x"), s=60,
                               label=f"{side.label} ({runtime})")
    speed_axes.set(xlabel="batch-1 latency, median (ms)", ylabel="mAP50", title="Accuracy vs speed (this machine)")
    speed_axes.set_xlim(left=0)
    speed_axes.set_ylim(0, 1)
    speed_axes.grid(alpha=0.3)
    speed_axes.legend(fontsize="small", loc="lower right")

    names = sides[0].evaluation.metrics.class_names
    x = np.arange(len(names))
    width = 0.8 / len(sides)
    for index, (side, colour) in enumerate(zip(sides, colours)):
        values = [np.nan if c.ap50 is None else c.ap50 for c in side.evaluation.metrics.per_class]
        class_axes.bar(x + (index - (len(sides) - 1) / 2) * width, values, width, color=colour, label=side.label)
    class_axes.set_xticks(x, names, rotation=30, ha="right", fontsize="small")
    class_axes.set(ylabel="AP50", ylim=(0, 1), title="AP50 per class")
    class_axes.grid(axis="y", alpha=0.3)
    class_axes.legend(fontsize="small")
    return save_figure(figure, path)
