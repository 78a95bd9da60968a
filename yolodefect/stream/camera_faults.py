"""Camera faults: frames that say the camera, not the parts, went wrong; judged per frame, with no window.

:class:`CameraFaultMonitor` looks at every frame on a small grey copy (at most ``FAULT_SIDE_PX`` pixels on its
longer side, a fraction of a millisecond; on a moving line the part finder's working-scale copy, which the station
makes anyway) for three faults, each its own alarm:

* ``black``: mean grey below ``black_grey`` (8): lens cap, dead light, lost video signal;
* ``saturated``: more than ``saturated_share`` (0.9) of the pixels at 250 or above: a blinding light,
  exposure stuck at its maximum;
* ``frozen``: the picture has not changed (mean absolute difference from the frame that started the still
  run below ``frozen_diff`` grey levels, 0.5) for ``frozen_s`` seconds (2): a stream or driver that keeps
  handing out its last frame. Time is the frames' own: a video file's position (frame index over its frame
  rate), a live camera's capture time. Only for video and camera sources (``check_frozen``): in image mode two
  photos of an empty belt, or two identical parts, are not a fault. A black or saturated frame is not
  judged for frozen (it is already its own alarm). A line that stops in front of a noiseless camera looks
  frozen too: raise ``frozen_s`` above the line's longest stop, or turn camera faults off.

A fault is raised on the first frame that shows it and cleared after ``clear_after`` (5) consecutive frames
that do not (a flickering fault does not raise and clear on every frame).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np

FAULT_SIDE_PX = 128
DEFAULT_BLACK_GREY = 8.0
DEFAULT_SATURATED_SHARE = 0.9
SATURATED_GREY = 250
DEFAULT_FROZEN_DIFF = 0.5
DEFAULT_FROZEN_S = 2.0
DEFAULT_CLEAR_AFTER = 5

FaultKind = Literal["black", "saturated", "frozen"]
FAULT_KINDS: tuple[FaultKind, ...] = ("black", "saturated", "frozen")


@dataclass(frozen=True)
class FaultTransition:
    """A camera fault raised or cleared; ``measures`` are the numbers that tripped it (or the good frame's)."""

    kind: FaultKind
    state: Literal["raised", "cleared"]
    measures: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        m = self.measures
        if self.state == "cleared":
            return f"camera fault {self.kind} cleared: good frames again"
        if self.kind == "black":
            return f"camera fault: black frame (mean grey {m['mean_grey']:.1f} < {m['limit']:.0f})"
        if self.kind == "saturated":
            return (f"camera fault: saturated frame ({m['saturated_share']:.0%} of the pixels >= {SATURATED_GREY}, "
                    f"limit {m['limit']:.0%})")
        return (f"camera fault: frozen picture for {m['seconds']:.1f} s (mean change {m['mean_abs_diff']:.2f} grey "
                f"levels < {m['limit']}); the camera or stream is stuck")


class CameraFaultMonitor:
    """Per-frame camera fault alarms (see the module docstring); one per camera."""

    def __init__(self, *, check_frozen: bool = True, black_grey: float = DEFAULT_BLACK_GREY,
                 saturated_share: float = DEFAULT_SATURATED_SHARE, frozen_diff: float = DEFAULT_FROZEN_DIFF,
                 frozen_s: float = DEFAULT_FROZEN_S, clear_after: int = DEFAULT_CLEAR_AFTER):
        if frozen_s <= 0 or clear_after < 1:
            raise ValueError(f"need frozen_s > 0 ({frozen_s}) and clear_after >= 1 ({clear_after})")
        self.check_frozen = check_frozen
        self.black_grey, self.saturated_share = black_grey, saturated_share
        self.frozen_diff, self.frozen_s, self.clear_after = frozen_diff, frozen_s, clear_after
        self.active: dict[FaultKind, bool] = {kind: False for kind in FAULT_KINDS}
        self._good: dict[FaultKind, int] = {kind: 0 for kind in FAULT_KINDS}
        self._still_anchor: np.ndarray | None = None  # the frame that started the current still run
        self._still_since: float | None = None

    def update(self, image_bgr: np.ndarray, time_s: float, small_bgr: np.ndarray | None = None) -> list[FaultTransition]:
        """Judge one frame captured at ``time_s`` (seconds on any steady clock); the faults raised or cleared.
        ``small_bgr``: a shrunken copy of the frame the caller already has (the part finder's), judged as it is
        instead of shrinking the frame again."""
        grey = _small_grey(image_bgr) if small_bgr is None else _grey(small_bgr)
        mean_grey = float(grey.mean())
        share = float(np.count_nonzero(grey >= SATURATED_GREY)) / grey.size
        found: dict[FaultKind, dict[str, float] | None] = {
            "black": {"mean_grey": round(mean_grey, 2), "limit": self.black_grey} if mean_grey < self.black_grey else None,
            "saturated": ({"saturated_share": round(share, 4), "limit": self.saturated_share}
                          if share > self.saturated_share else None),
        }
        found["frozen"] = (self._frozen(grey, time_s) if self.check_frozen and not any(found.values()) else None)
        if found["black"] or found["saturated"]:
            self._still_anchor = None  # a still run starts again after the fault
        transitions = []
        for kind in FAULT_KINDS:
            measures = found[kind]
            if measures is not None:
                self._good[kind] = 0
                if not self.active[kind]:
                    self.active[kind] = True
                    transitions.append(FaultTransition(kind, "raised", measures))
            elif self.active[kind]:
                self._good[kind] += 1
                if self._good[kind] >= self.clear_after:
                    self.active[kind], self._good[kind] = False, 0
                    transitions.append(FaultTransition(kind, "cleared", {"mean_grey": round(mean_grey, 2)}))
        return transitions

    def _frozen(self, grey: np.ndarray, time_s: float) -> dict[str, float] | None:
        if self._still_anchor is None or self._still_anchor.shape != grey.shape:
            self._still_anchor, self._still_since = grey, time_s
            return None
        diff = float(np.mean(cv2.absdiff(grey, self._still_anchor)))
        if diff >= self.frozen_diff:
            self._still_anchor, self._still_since = grey, time_s
            return None
        still_s = time_s - (self._still_since if self._still_since is not None else time_s)
        if still_s < self.frozen_s:
            return None
        return {"seconds": round(still_s, 3), "mean_abs_diff": round(diff, 3), "limit": self.frozen_diff,
                "limit_s": self.frozen_s}


def _small_grey(image_bgr: np.ndarray) -> np.ndarray:
    # Grey first, then shrink one channel; bilinear (each small pixel averages the 2x2 frame pixels at its centre), not
    # area averaging: a third of the time per frame (the station does this on every frame), the same mean and
    # saturated share to sampling, and a frozen stream repeats its pixels exactly either way. A still picture from a
    # camera with sensor noise differs more between frames at this sampling, so a stopped line is less often
    # taken for a frozen stream.
    grey = _grey(image_bgr)
    height, width = grey.shape[:2]
    scale = FAULT_SIDE_PX / max(height, width)
    if scale < 1.0:
        grey = cv2.resize(grey, (max(1, round(width * scale)), max(1, round(height * scale))),
                          interpolation=cv2.INTER_LINEAR)
    return grey


def _grey(image_bgr: np.ndarray) -> np.ndarray:
    return image_bgr if image_bgr.ndim == 2 else cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
