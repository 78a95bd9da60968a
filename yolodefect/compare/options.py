"""``CompareOptions``: what ``yolodefect compare`` was asked for.

Kept apart from the pipeline (which imports torch) so the CLI can read its defaults at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from yolodefect.progress import ProgressCallback


@dataclass(frozen=True)
class CompareOptions:
    """Everything ``compare`` needs besides the dataset; the CLI maps its flags onto these fields."""

    out: Path = Path("runs/compare")
    yolo: str = "yolo11n.yaml"  # a .yaml trains from scratch, a .pt starts from its weights
    ssd: str = "ssdlite320"  # or "ssd300"
    epochs: int = 30
    time_budget_min: float | None = None  # wall clock per model instead of epochs
    yolo_imgsz: int | None = None  # None: what `yolodefect train` chooses (check's suggestion)
    ssd_imgsz: int | None = None  # None: the SSD's native size (320 or 300)
    ssd_backbone_weights: Path | None = None  # torchvision ImageNet backbone .pth; None: SSD from scratch
    ssd_lr: float | None = None  # None: torchvision's recipe scaled to the batch
    batch: int = 16
    workers: int | None = None  # None: 0 on CPU (as Ultralytics does), else up to 8
    device: str = "cpu"
    split: str | None = None  # None: test when the dataset has one, else val
    seed: int = 0
    latency_runs: int = 100
    latency_warmup: int = 10
    threads: int | None = None  # None: torch's current intra-op thread count
    onnx: bool = True
    plots: bool = True  # evaluation and Ultralytics training plots; compare.png is always drawn
    progress: ProgressCallback | None = field(default=None, compare=False, repr=False)  # told (stage, done, total)
