"""``yolodefect compare``: YOLO versus a torchvision SSD on the same data, evaluator and machine."""

from yolodefect.compare.pipeline import CompareOptions, compare
from yolodefect.compare.result import CompareResult, SideResult, SpeedResult

__all__ = ["CompareOptions", "CompareResult", "SideResult", "SpeedResult", "compare"]
