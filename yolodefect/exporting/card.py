"""The model card written next to an exported model: what it is, how it was made, how well and fast it runs.

The inspection station shows it when it loads the model (``yolodefect.inference.identity.load_model_card``
finds ``best_int8.onnx`` -> ``best_int8.card.json``), so it must answer on its own: which checkpoint, which
classes, what precision, validated how, deployable or not.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from yolodefect.evaluation.metrics import jsonable
from yolodefect.exporting.result import ExportResult
from yolodefect.inference.identity import card_path, file_sha256
from yolodefect.machine import machine_info, machine_line

SCHEMA = "yolodefect.model-card/1"

CARD_FIELDS = (
    "schema", "model", "sha256", "deployable", "precision", "format", "imgsz", "dynamic", "input", "class_names",
    "source_checkpoint", "backend", "calibration", "validation", "latency", "sizes", "machine", "created", "notes",
    "candidates", "choice",
)


def card_paths(model_path: Path) -> tuple[Path, Path]:
    """The station's naming rule (``best_int8.onnx`` -> ``best_int8.card.json``) and its Markdown twin."""
    json_path = card_path(model_path)
    return json_path, json_path.with_suffix("").with_suffix(".card.md")


def build_card(result: ExportResult) -> dict:
    info = machine_info()
    cand, ref = result.candidate, result.reference
    card = {
        "schema": SCHEMA,
        "model": result.model_path.name,
        "sha256": file_sha256(result.model_path),
        "deployable": result.deployable,
        "precision": result.precision.value,
        "format": result.format.value,
        "imgsz": result.imgsz,
        "dynamic": result.dynamic,
        "input": f"images: 1x3x{result.imgsz}x{result.imgsz} float32 RGB /255, letterboxed (gray 114), "
                 + ("any batch and size" if result.dynamic else "fixed shape"),
        "class_names": list(cand.metrics.class_names),
        "source_checkpoint": {"file": str(result.source), "sha256": result.source_sha256,
                              "architecture": result.architecture},
        "backend": {
            "runtime": cand.latency.runtime,
            "quantization": result.quantization,
            "inference_precision": cand.latency.precision,
            "versions": info["versions"],
        },
        "calibration": result.calibration.to_dict() if result.calibration else None,
        "validation": {
            "data": str(result.data),
            "split": result.split,
            "images": cand.metrics.images,
            "instances": cand.metrics.instances,
            "thresholds": result.threshold_source,
            "reference": ref.to_dict(),
            "exported": cand.to_dict(),
            "gate": result.gate.to_dict(),
        },
        "latency": {
            "batch": 1,
            "threads": cand.latency.threads,
            "settings": cand.latency.settings,
            "reference_median_ms": ref.latency.median_ms,
            "reference_p95_ms": ref.latency.p95_ms,
            "median_ms": cand.latency.median_ms,
            "p95_ms": cand.latency.p95_ms,
            "speedup": None if result.speedup is None else round(result.speedup, 3),
        },
        "sizes": {"model_bytes": cand.size_bytes, "reference_bytes": ref.size_bytes},
        "machine": {"line": machine_line(info), **info},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "notes": list(result.notes),
        # An auto --int8 run: every candidate built (latency, mAP50, gate) and why the deployable one was chosen.
        "candidates": [candidate.to_dict() for candidate in result.candidates],
        "choice": result.choice,
    }
    return jsonable(card)  # type: ignore[return-value]


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f} %"


def card_markdown(card: dict) -> str:
    validation, latency = card["validation"], card["latency"]
    ref, exp = validation["reference"], validation["exported"]

    def points(value: float | None) -> str:
        return "-" if value is None else f"{value * 100:.2f}"

    lines = [
        f"# {card['model']}",
        "",
        f"**{'DEPLOYABLE' if card['deployable'] else 'NOT DEPLOYABLE'}** - {validation['gate']['message']}",
        "",
        f"- precision: {card['precision']} ({card['format']}, {card['backend']['runtime']})",
        f"- classes: {', '.join(card['class_names'])}",
        f"- input: {card['input']}",
        f"- source checkpoint: {card['source_checkpoint']['file']} (sha256 {card['source_checkpoint']['sha256'][:12]}...)",
        f"- sha256: {card['sha256']}",
    ]
    if card["backend"].get("quantization"):
        lines.append(f"- quantization: {card['backend']['quantization']}")
    if card["calibration"]:
        cal = card["calibration"]
        lines.append(f"- calibration: {cal['images']} {cal['split']} images (of {cal['available']}), seed {cal['seed']}")
    lines += [
        "",
        f"Validated on {validation['data']} ({validation['split']}, {validation['images']} images) at {validation['thresholds']}:",
        "",
        f"| | {ref['label']} | {exp['label']} |",
        "|---|---|---|",
        f"| mAP50 | {points(ref['map50'])} | {points(exp['map50'])} |",
        f"| mAP50-95 | {points(ref['map50_95'])} | {points(exp['map50_95'])} |",
    ]
    for name, value in ref["per_class_ap50"].items():
        lines.append(f"| AP50 {name} | {points(value)} | {points(exp['per_class_ap50'].get(name))} |")
    lines += [
        f"| escape rate | {_rate(ref['escape_rate'])} | {_rate(exp['escape_rate'])} |",
        f"| false-reject rate | {_rate(ref['false_reject_rate'])} | {_rate(exp['false_reject_rate'])} |",
        f"| latency median / p95 (ms) | {ref['latency']['median_ms']:.2f} / {ref['latency']['p95_ms']:.2f} | "
        f"{exp['latency']['median_ms']:.2f} / {exp['latency']['p95_ms']:.2f} |",
        f"| file size (MB) | {ref['size_bytes'] / 1e6:.1f} | {exp['size_bytes'] / 1e6:.1f} |",
        "",
        f"Speed-up {latency['speedup']:.2f}x at batch 1 ({latency['settings']}), on {card['machine']['line']}"
        if latency["speedup"] else f"Latency at batch 1 on {card['machine']['line']}",
    ]
    if card.get("candidates"):
        lines += ["", "Candidates (each gated against the FP32 reference, timed alone at batch 1 in one run):", "",
                  "| candidate | precision | mAP50 | drop | median / p95 (ms) | speed-up | gate | chosen |",
                  "|---|---|---|---|---|---|---|---|"]
        for c in card["candidates"]:
            lines.append(f"| {c['name']} | {c['inference_precision']} | {points(c['map50'])} | {c['map50_drop']:.2f} | "
                         f"{c['median_ms']:.2f} / {c['p95_ms']:.2f} | "
                         f"{'-' if c['speedup'] is None else format(c['speedup'], '.2f') + 'x'} | "
                         f"{'passed' if c['passed'] else 'FAILED'} | {'CHOSEN' if c['chosen'] else ''} |")
    if card.get("choice"):
        lines += ["", f"Choice: {card['choice']}"]
    if card["notes"]:
        lines += ["", "Notes:", *(f"- {note}" for note in card["notes"])]
    return "\n".join(lines) + "\n"


def write_card(result: ExportResult) -> dict:
    """Write ``result.card_json`` and ``result.card_md``; returns the card."""
    card = build_card(result)
    result.card_json.write_text(json.dumps(card, indent=2), encoding="utf-8")
    result.card_md.write_text(card_markdown(card), encoding="utf-8")
    return card
