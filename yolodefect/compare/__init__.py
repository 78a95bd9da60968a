"""``yolodefect compare``: YOLO versus a torchvision SSD on the same data, evaluator and machine.

``CompareOptions`` is light; ``compare`` and the result records load the pipeline (and torch) on
first use, so reading the options' defaults (the CLI does at start-up) does not import torch.
"""

from yolodefect.compare.options import CompareOptions

__all__ = ["CompareOptions", "CompareResult", "SideResult", "SpeedResult", "compare"]


def __getattr__(name: str):
    if name == "compare":
        from yolodefect.compare.pipeline import compare

        return compare
    if name in ("CompareResult", "SideResult", "SpeedResult"):
        from yolodefect.compare import result

        return getattr(result, name)
    raise AttributeError(f"module 'yolodefect.compare' has no attribute {name!r}")
