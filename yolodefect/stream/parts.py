"""From per-frame defects to one decision per part: the record, and image mode.

* **Image mode** (one image is one part, e.g. a triggered camera or a folder of part photos):
  each frame is decided on its own: reject when any defect counts, else pass.
* **Track mode** (a video of a moving line): parts are found, tracked and decided once each by
  :class:`yolodefect.stream.line.LinePartDecider`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from yolodefect.detections import Detections
from yolodefect.errors import YoloDefectError
from yolodefect.stream.sources import Frame

PartOutcome = Literal["reject", "pass", "error"]


class PartNotInspectedError(YoloDefectError):
    """A part left the view without enough frames to judge it, under fail_safe=off; the message names the part."""


@dataclass(frozen=True)
class PartDecision:
    """One part's verdict. ``defects`` are the detections that count, in pixels of ``frame`` (the evidence frame).

    On a line: ``part_box`` is the part on ``frame``; ``decided_frame`` is the frame on which the
    decision was made (latency runs from its capture) when it is not ``frame`` itself; ``message``
    says why an ``error`` part was not inspected; ``scores`` (frames, classes) are the per-frame
    class maxima the rule judged, kept for calibration and the review queue; ``emit`` is False for a pass
    nobody asked to hear; ``peak`` (the review queue, on a line) is the frame where a reject class came
    closest to or furthest over its threshold, with all of that frame's detections and the part box on it.
    """

    decision: PartOutcome
    part_id: str | int
    defects: Detections
    frame: Frame
    part_box: np.ndarray | None = None
    decided_frame: Frame | None = None
    message: str | None = None
    scores: np.ndarray | None = None
    emit: bool = True
    peak: tuple[Frame, Detections, np.ndarray] | None = None


@dataclass
class ImagePartDecider:
    """One frame, one part."""

    emit_pass: bool = False

    def update(self, frame: Frame, defects: Detections) -> list[PartDecision]:
        part_id: str | int = frame.part_hint if frame.part_hint is not None else frame.index
        if len(defects):
            return [PartDecision("reject", part_id, defects, frame)]
        # A pass nobody asked to hear of is still a decision: counted in the stats, never emitted.
        return [PartDecision("pass", part_id, defects, frame, emit=self.emit_pass)]
