"""The inspection station loop behind ``yolodefect watch``.

One frame at a time on the calling thread: read -> detect -> track (video) -> reject rules ->
part decision -> draw -> evidence -> event into the durable outbox. Reading happens on the source's
own thread (see :mod:`yolodefect.stream.sources`) and delivery on the dispatcher's threads, so a
slow camera or a down sink never stalls detection, and an event is on disk before any sink sees it.

Events (``decision``):

* ``reject``: a part with at least one defect that passes the rules (once per part).
* ``pass``: a good part, in part mode with ``emit_pass`` only.
* ``error``: under ``fail_safe="reject"``, a frame whose processing raised (one event for the
  frame; ``part_id`` is the part in part mode, else None), or whose decisions came later than
  ``max_latency_ms`` (each of its decisions becomes an error event carrying its defects; in part
  mode a late good part becomes one too, so every part still gets its one event when events are
  expected). A part image that cannot be read or decoded (missing, empty, truncated) gets an
  ``error`` event too, ``part_id`` being its file name and the message naming the file and why;
  under ``fail_safe="off"`` it stops the run instead. The line must treat ``error`` as "could not
  be inspected": reject the part. One more ``error`` event, with ``part_id`` None and a message
  starting "station alarm", goes out when the outbox stops storing events (full disk), once per outage.

``latency_ms`` is measured from capture (for files: when the pipeline took the frame) to the
moment the event is handed to the outbox, evidence writing included.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

from yolodefect.detections import Detections
from yolodefect.errors import UsageError
from yolodefect.inference.eigencam import EigenCam, cam_overlay, checkpoint_for_cam
from yolodefect.inference.model_file import read_model_file
from yolodefect.inference.names import ClassNames, class_name, names_dict
from yolodefect.inference.rules import RejectRules, build_reject_rules
from yolodefect.inference.thresholds_file import Thresholds, read_thresholds_yaml
from yolodefect.shipped import with_shipped_model
from yolodefect.stream.anomaly_stage import AnomalyStage, NoDetector, appended, open_anomaly_stage, with_anomaly_rule
from yolodefect.stream.delivery import NOT_PERSISTED_PREFIX, Dispatcher
from yolodefect.stream.detector import Detector, SharedDetector, TiledDetector, UltralyticsDetector
from yolodefect.stream.drawing import Overlay, draw_frame
from yolodefect.stream.events import Decision, Defect, Event, ModelIdentity, new_event, utc_now_iso
from yolodefect.stream.evidence import EvidenceWriter, VideoSink
from yolodefect.stream.live import LiveView
from yolodefect.stream.options import (DEFAULT_MIN_FRAMES, DEFAULT_OUTBOX, WatchOptions, camera_options,
                                      check_outputs_outside_source, load_station_config, merge_options, resolve_options)
from yolodefect.stream.line import LineFrame, LinePartDecider
from yolodefect.stream.part_finder import BeltModel, class_part_boxes
from yolodefect.stream.parts import ImagePartDecider, PartDecision, PartNotInspectedError
from yolodefect.stream.sinks import sink_from_url
from yolodefect.stream.sinks.base import Sink
from yolodefect.stream.sources import (
    CaptureFactory,
    Frame,
    FrameSource,
    SourceOptions,
    UnreadableImageError,
    default_capture_factory,
    open_source,
)
from yolodefect.stream.serving import check_serving, start_serving
from yolodefect.stream.stats import StatsBoard, StatsTicker, StopReason, WatchStats, WatchSummary, combine_stats

logger = logging.getLogger(__name__)

__all__ = [
    "WatchOptions",
    "WatchStats",
    "WatchSummary",
    "build_rules",
    "load_station_config",
    "merge_options",
    "resolve_options",
    "watch",
]

_WINDOW = "yolodefect watch"
# Several cameras: how long the model waits for the other cameras' frames to run them as one batch. Measured on
# 2 cores (bench/serve.py), two 640x360 videos at imgsz 320: 37 fps in all without waiting, 45 at 5 ms, 48 at 15 ms,
# with a lower p95 latency too (a camera's frame no longer queues behind the other's whole model call).
BATCH_WAIT_MS = 10.0


def build_rules(options: WatchOptions, thresholds: Thresholds | None = None) -> RejectRules:
    """Reject rules from the options, resolved as ``yolodefect eval`` resolves the same settings:
    thresholds file, then per-class overrides, then ``conf`` for the rest."""
    if thresholds is None and options.thresholds is not None:
        thresholds = read_thresholds_yaml(options.thresholds)
    return build_reject_rules(
        thresholds=thresholds,
        conf=options.conf,
        class_conf=options.class_conf,
        reject_classes=options.reject_classes,
        min_box_area_px=options.min_area,
        roi_polygon=options.roi,
    )


def _fallback_model_info(detector: Detector) -> ModelIdentity:
    # A custom detector has no weights file to hash; the hash of its type name keeps events valid and
    # still tells runs of different detectors apart.
    name = getattr(detector, "__qualname__", None) or type(detector).__qualname__
    return ModelIdentity(name=str(name), sha256=hashlib.sha256(str(name).encode()).hexdigest(), precision="unknown")


def _has_display() -> bool:
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


class _RateLimitedLog:
    """Logs the first occurrence and then at most once per ``period_s``, with the count in between."""

    def __init__(self, period_s: float = 10.0):
        self._period_s = period_s
        self._last = -float("inf")
        self._suppressed = 0

    def __call__(self, log: Callable[..., None], message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last < self._period_s:
            self._suppressed += 1
            return
        if self._suppressed:
            message += f" (and {self._suppressed} more since the last report)"
        self._suppressed = 0
        self._last = now
        log(message, *args)


@dataclass(frozen=True)
class _Outcome:
    """One event to emit: ``frame`` is its evidence frame (the defects' coordinates), ``part_box`` the part on it."""

    decision: Decision
    part_id: str | int | None
    defects: Detections
    message: str | None
    frame: Frame
    part_box: np.ndarray | None = None


@dataclass
class _FrameResult:
    detections: Detections
    counted: np.ndarray  # mask over detections: the defects that count
    decisions: list[PartDecision]
    error: str | None = None  # processing raised
    late_ms: float | None = None  # set when over max_latency_ms
    part_boxes: np.ndarray | None = None  # track mode: the parts in view


class _Station:
    """The per-run state of :func:`watch`; one instance per call."""

    def __init__(self, options: WatchOptions, detector: Detector, class_names: Mapping[int, str], model: ModelIdentity,
                 rules: RejectRules, source: FrameSource, dispatcher: Dispatcher, track_mode: bool,
                 stop: threading.Event, board: StatsBoard, *, min_frames: int = 3, belt: BeltModel | None = None,
                 keep_scores: bool = False, on_part: Callable[[PartDecision], None] | None = None,
                 anomaly: AnomalyStage | None = None, cam: EigenCam | None = None, camera: str = "",
                 camera_is_source: bool = False, sink_names: tuple[str, ...] | None = None,
                 live: LiveView | None = None):
        self.options = options
        self.camera = camera  # its name on the web page and in /metrics
        self.event_source = camera if camera_is_source else None  # several cameras: the events' source
        self.sink_names = sink_names  # this camera's sinks (None: all of the dispatcher's)
        self.live = live  # --serve: the web page's view of this station
        self.cam = cam  # --evidence-cam: run on reject evidence only, never on the detection path
        self.anomaly = anomaly
        self.detector = detector
        self.names = dict(class_names)
        self.model = model
        self.rules = rules
        self.source = source
        self.dispatcher = dispatcher
        self.track_mode = track_mode
        self.stop = stop
        self.board = board
        self.on_part = on_part
        self.image_decider = ImagePartDecider(emit_pass=options.emit_pass)
        self.line: LinePartDecider | None = None
        self.belt: BeltModel | None = belt
        self._belt_images: list[np.ndarray] = []
        self._previous_belt: np.ndarray | None = None
        self.last_frame: Frame | None = None
        if track_mode:
            self.line = LinePartDecider(self._find_parts, self.names, rules, min_frames=min_frames,
                                        min_part_frames=options.min_part_frames, decide_at=options.decide_at,
                                        emit_pass=options.emit_pass, keep_scores=keep_scores)
        self.part_class_id = _part_class_id(options, self.names) if track_mode and options.parts == "class" else None
        self.off_part_log = _RateLimitedLog(60.0)
        self.evidence = EvidenceWriter(options.evidence_dir) if options.evidence_dir is not None else None
        self.video: VideoSink | None = None
        self.show = options.show and self._display_ok()
        self.fail_log = _RateLimitedLog()
        self.late_log = _RateLimitedLog()
        self.nan_log = _RateLimitedLog()
        self.cam_log = _RateLimitedLog()
        self.window_closed = False

    # -- per frame ---------------------------------------------------------------------------

    def _detect(self, frame: Frame) -> _FrameResult:
        started = time.perf_counter()
        detections = self.detector(frame.image)
        if self.live is not None:
            self.live.observe("model", self.camera, (time.perf_counter() - started) * 1000.0)
        if not isinstance(detections, Detections):
            raise TypeError(f"the detector returned {type(detections).__name__}, expected Detections")
        finite = np.isfinite(detections.xyxy).all(axis=1) & np.isfinite(detections.confidence)
        if not finite.all():
            # A NaN box cannot be drawn, compared or put in an event; the rest of the frame still counts.
            self.nan_log(logger.warning, "the detector returned %d box(es) with NaN/inf values; ignored",
                         int((~finite).sum()))
            detections = detections.filter(finite)
        if self.line is None:
            if self.anomaly is not None:  # one frame, one part: the whole frame is scored
                detections = appended(detections, self._anomalies(frame, None))
            counted = self.rules.mask(detections, self.names)
            return _FrameResult(detections, counted, self.image_decider.update(frame, detections.filter(counted)))
        parts = None
        if self.anomaly is not None:  # the parts are scored before they are judged, so the rule sees both models
            boxes, maybe_defect = self._find_parts(frame, detections)
            # Parts past the decision line are decided: scoring them again would change nothing.
            found = self._anomalies(frame, boxes[self.line.before_line(boxes, frame.size_wh)])
            detections = appended(detections, found)
            parts = (boxes, np.concatenate([maybe_defect, np.ones(len(found), dtype=bool)]))
        seen = self.line.update(frame, detections, parts)
        self._count_line(seen)
        return _FrameResult(detections, seen.counted, seen.decisions, part_boxes=seen.part_boxes)

    def _anomalies(self, frame: Frame, part_boxes: np.ndarray | None) -> Detections:
        started = time.perf_counter()
        found = self.anomaly.detect(frame.image, part_boxes, self._motion_axis())
        if len(found):  # one detection per part scored; frames with no part all in view cost nothing
            self.board.stage_done("anomaly", (time.perf_counter() - started) * 1000.0)
            self.board.add("anomaly_frames")
        return found

    def _motion_axis(self) -> int | None:
        """The axis parts move along (0: x, 1: y), once the line has shown it."""
        return self.line.direction[0] if self.line is not None and self.line.direction is not None else None

    def _count_line(self, seen: LineFrame) -> None:
        if seen.off_part:
            self.board.add("off_part_detections", seen.off_part)
            self.off_part_log(logger.warning, "%d detection(s) on the belt, outside every part: not defects, not "
                              "emitted (counted in off_part_detections); if this keeps happening the model sees "
                              "defects in the belt: add empty-belt images to its training data as background",
                              seen.off_part)
        self.board.set("open_parts", self.line.open_parts if self.line is not None else 0)
        self.board.set("discarded_regions", self.line.discarded_regions if self.line is not None else 0)

    def _find_parts(self, frame: Frame, detections: Detections) -> tuple[np.ndarray, np.ndarray]:
        """The part finder of this run (see :mod:`yolodefect.stream.part_finder`)."""
        if self.part_class_id is not None:
            return class_part_boxes(detections, self.part_class_id, self.rules.threshold(self.options.part_class))
        if self.belt is None:
            raise RuntimeError("the belt model is not learned yet")  # process() learns it before detecting
        boxes, self._previous_belt = self.belt.find(frame.image, self._previous_belt)
        return boxes, np.ones(len(detections), dtype=bool)

    def _learning_belt(self, frame: Frame) -> bool:
        """Take the first ``belt_frames`` frames as the empty belt; True while they are being taken."""
        if self.line is None or self.part_class_id is not None or self.belt is not None or frame.error is not None:
            return False
        self._belt_images.append(frame.image)
        if len(self._belt_images) < self.options.belt_frames:
            return True
        self.belt = BeltModel.learn(self._belt_images, min_area_px=self.options.min_part_area)
        self._belt_images = []
        logger.info("learned the empty belt from frames %d-%d; inspecting from frame %d on",
                    frame.index - self.options.belt_frames + 1, frame.index, frame.index + 1)
        return True

    def _unreadable(self, frame: Frame) -> _FrameResult:
        """A part whose file could not be decoded: an 'error' decision, never a silent pass."""
        self.board.add("unreadable_parts")
        if self.options.fail_safe != "reject":
            raise UnreadableImageError(f"{frame.error}; fail_safe=off stops the run on a part that cannot be "
                                       "inspected (fail_safe=reject gives it an 'error' event and goes on)")
        return _FrameResult(Detections.empty(), np.zeros(0, dtype=bool), [], error=frame.error)

    def process(self, frame: Frame) -> None:
        self.last_frame = frame
        try:
            if self._learning_belt(frame):
                self.board.add("belt_frames")
                self.board.frame_done((time.monotonic() - frame.captured_monotonic) * 1000.0)
                if self.options.save is not None or self.show:  # the saved video keeps every frame of the source
                    self._output(draw_frame(frame.image, Detections.empty(), self.names,
                                            overlay=Overlay(text="learning the empty belt")))
                if self.live is not None:
                    self.live.publish_frame(self.camera, lambda: draw_frame(
                        frame.image, Detections.empty(), self.names, overlay=Overlay(text="learning the empty belt")))
                return
            result = self._detect(frame) if frame.error is None else self._unreadable(frame)
        except Exception as exc:
            if self.options.fail_safe != "reject":
                raise
            self.board.add("failed_frames")
            message = f"processing failed: {type(exc).__name__}: {exc}"
            self.fail_log(logger.error, "frame %d of %s: %s; emitting an error event", frame.index, frame.source, message)
            result = _FrameResult(Detections.empty(), np.zeros(0, dtype=bool), [], error=message)
        latency_ms = (time.monotonic() - frame.captured_monotonic) * 1000.0
        limit = self.options.max_latency_ms
        if result.error is None and limit is not None and latency_ms > limit:
            self.board.add("late_frames")
            if self.options.fail_safe == "reject":
                result.late_ms = latency_ms
                self.late_log(logger.warning, "frame %d took %.0f ms (> max_latency_ms %.0f); emitting error events",
                              frame.index, latency_ms, limit)
        self._finish_frame(frame, result)

    def finish(self, why: str) -> None:
        """At the end of the run: no part in the station leaves without a decision (see LinePartDecider.finish)."""
        if self.line is None or self.last_frame is None:
            return
        frame = self.last_frame
        result = _FrameResult(Detections.empty(), np.zeros(0, dtype=bool), self.line.finish(frame, why))
        self._finish_frame(frame, result, count_frame=False)

    def _finish_frame(self, frame: Frame, result: _FrameResult, *, count_frame: bool = True) -> None:
        for decision in result.decisions:
            if decision.decision == "error" and count_frame and self.options.fail_safe != "reject":
                raise PartNotInspectedError(f"{decision.message}; fail_safe=off stops the run on a part that cannot "
                                            "be inspected (fail_safe=reject gives it an 'error' event and goes on)")
            if self.on_part is not None:
                self.on_part(decision)
            if decision.decision == "pass" and not decision.emit and result.late_ms is None:
                self.board.add("passes")  # inspected and good; nobody asked for pass events
                self.board.add("parts")
        outcomes = list(self._outcomes(frame, result))
        annotated = None
        if self._needs_drawing(frame, outcomes):
            try:
                annotated = self._annotated(frame, result)
            except Exception as exc:  # a picture is not worth losing the event for
                logger.warning("drawing frame %d failed (%s); continuing without the annotated image", frame.index, exc)
        for outcome in outcomes:
            # An anomaly reject's evidence is its own drawing, over the anomaly heatmap of the part.
            heated = self.anomaly is not None and self.anomaly.shows(outcome.defects)
            evidence = annotated if outcome.frame is frame and not heated else None
            if evidence is None and self.evidence is not None and outcome.decision != "pass":
                evidence = self._evidence_drawing(outcome)
            self._emit(frame, outcome, evidence)
        if count_frame:
            self.board.frame_done((time.monotonic() - frame.captured_monotonic) * 1000.0)
        if annotated is not None and count_frame:
            self._output(annotated)
        if self.live is not None and count_frame:
            # By reference: the web server draws it (once, when a page asks), never this thread.
            self.live.publish_frame(self.camera, (lambda: annotated) if annotated is not None
                                    else (lambda: self._annotated(frame, result)))

    def _evidence_drawing(self, outcome: _Outcome) -> np.ndarray | None:
        """The annotated picture of a part decided on a later frame than the one that shows its defects, or of an
        anomaly reject (drawn over the anomaly heatmap of the part)."""
        try:
            overlay = Overlay(text=f"{outcome.decision.upper()} part {outcome.part_id}", alarm=True)
            boxes = outcome.part_box.reshape(1, 4) if outcome.part_box is not None else None
            image = outcome.frame.image
            if self.anomaly is not None and self.anomaly.shows(outcome.defects):
                image = self.anomaly.heatmap(image, outcome.part_box, self._motion_axis())
            return draw_frame(image, outcome.defects, self.names, roi_polygon=self.options.roi,
                              overlay=overlay, part_boxes=boxes)
        except Exception as exc:  # a picture is not worth losing the event for
            logger.warning("drawing evidence of part %s failed (%s)", outcome.part_id, exc)
            return None

    def _outcomes(self, frame: Frame, result: _FrameResult) -> Iterator[_Outcome]:
        """The events this frame produces."""
        part_hint: str | int | None = None if self.track_mode else (
            frame.part_hint if frame.part_hint is not None else frame.index)
        empty = Detections.empty()
        if result.error is not None:
            # An unreadable file is named in track mode too: the part is known, only its picture is not.
            yield _Outcome("error", frame.part_hint if frame.error is not None else part_hint, empty, result.error, frame)
            return
        if result.late_ms is not None:
            late = (f"decision too late: {result.late_ms:.0f} ms after capture "
                    f"(max_latency_ms {self.options.max_latency_ms:.0f}); treat the part as not inspected")
            for decision in result.decisions:
                yield _Outcome("error", decision.part_id, decision.defects,
                               f"{late} (would have been {decision.decision})", decision.frame, decision.part_box)
            if not result.decisions and not self.track_mode:
                yield _Outcome("error", part_hint, empty, f"{late} (would have been pass)", frame)
            return
        for decision in result.decisions:
            if decision.emit:
                yield _Outcome(decision.decision, decision.part_id, decision.defects, decision.message, decision.frame,
                               decision.part_box)

    def _needs_drawing(self, frame: Frame, outcomes: list[_Outcome]) -> bool:
        evidence = self.evidence is not None and any(o.decision != "pass" and o.frame is frame for o in outcomes)
        return self.options.save is not None or self.show or evidence

    def _annotated(self, frame: Frame, result: _FrameResult) -> np.ndarray:
        rejected = [d for d in result.decisions if d.decision == "reject"]
        text, alarm = None, False
        if result.error is not None or result.late_ms is not None:
            text, alarm = "ERROR", True
        elif rejected:
            text, alarm = "REJECT " + ", ".join(str(d.part_id) for d in rejected), True
        overlay = Overlay(fps=self.board.fps(), rejects=self.board.count("rejects") + len(rejected), text=text, alarm=alarm)
        return draw_frame(frame.image, result.detections, self.names, counted=result.counted,
                          roi_polygon=self.options.roi, overlay=overlay, part_boxes=result.part_boxes)

    def _emit(self, frame: Frame, outcome: _Outcome, annotated: np.ndarray | None) -> None:
        """Emit one event decided on ``frame`` (latency runs from its capture), shown by ``outcome.frame``."""
        decision, part_id, defects, shown = outcome.decision, outcome.part_id, outcome.defects, outcome.frame
        part_box = None if outcome.part_box is None else tuple(round(float(v), 1) for v in outcome.part_box)
        event = new_event(
            decision=decision, source=self.event_source or shown.source, frame_index=shown.index, captured_at=shown.captured_at,
            latency_ms=0.0, image_size_wh=shown.size_wh, model=self.model, part_id=part_id, message=outcome.message,
            part_bbox_xyxy=part_box, anomaly_model=self.anomaly.identity if self.anomaly is not None else None,
            defects=[
                # float32 noise (0.8999999761) says nothing to a reader of the event; round it away.
                Defect(class_name(self.names, int(c)), round(float(np.clip(s, 0.0, 1.0)), 4),
                       tuple(round(float(v), 2) for v in box), anomaly_score=self._anomaly_score(int(c), float(s)))
                for box, s, c in zip(defects.xyxy, defects.confidence, defects.class_id)
            ],
        )
        paths: dict[str, str] = {}
        if self.evidence is not None and decision != "pass":
            images = {"raw": shown.image}
            if annotated is not None:
                images["annotated"] = annotated
            if self.cam is not None and decision == "reject":
                heated = self._cam_image(shown)
                if heated is not None:
                    images["cam"] = heated
            paths = self.evidence.save(event.event_id, shown.captured_at, images)
        latency_ms = (time.monotonic() - frame.captured_monotonic) * 1000.0
        event = replace(event, latency_ms=latency_ms, emitted_at=utc_now_iso(), snapshot_paths=paths)
        outbox_was_failing = self.dispatcher.outbox_failure is not None
        self._submit(event)
        counter = {"reject": "rejects", "pass": "passes", "error": "errors"}[decision]
        self.board.add(counter)
        if decision == "reject":
            self.board.add_classes({d.class_name for d in event.defects})
        if decision != "error":
            self.board.add("parts")
        if self.live is not None:
            self.live.observe("event", self.camera, latency_ms)
            self.live.event_added(event.to_dict())
        logger.debug("event %s: %s part %s (%d defects)", event.event_id, decision, part_id, len(defects))
        if self.dispatcher.outbox_failure is not None and not outbox_was_failing:
            self._outbox_alarm(frame)

    def _cam_image(self, shown: Frame) -> np.ndarray | None:
        """The EigenCAM overlay of a reject's evidence frame; its cost goes to the stats (evidence_cam_p50_ms)."""
        started = time.perf_counter()
        try:
            heated = cam_overlay(shown.image, self.cam.heatmap(shown.image))
        except Exception as exc:  # a heatmap is not worth losing the event (or its other snapshots) for
            self.board.add("evidence_cam_failures")
            self.cam_log(logger.warning, "EigenCAM of frame %d failed (%s: %s); evidence saved without cam.jpg",
                         shown.index, type(exc).__name__, exc)
            return None
        self.board.stage_done("evidence_cam", (time.perf_counter() - started) * 1000.0)
        self.board.add("evidence_cams")
        return heated

    def _anomaly_score(self, class_id: int, confidence: float) -> float | None:
        if self.anomaly is None or class_id != self.anomaly.class_id:
            return None
        return round(self.anomaly.score_of(confidence), 4)

    def _submit(self, event: Event) -> None:
        # A full outbox does not stop the line: submit then sends the event to the sinks directly and
        # to stderr, and the run ends non-zero naming it (WatchSummary.not_persisted_event_ids).
        self.dispatcher.submit(event, self.sink_names)
        self.board.add("events")
        failure = self.dispatcher.outbox_failure
        if failure is not None:
            self.board.add("not_persisted_events")
        if self.live is not None:
            if failure is not None:
                self.live.set_alarm("outbox", None, f"events are not stored in the outbox: {failure}")
            else:
                self.live.clear_alarm("outbox", None)

    def _outbox_alarm(self, frame: Frame) -> None:
        """Tell the line, once per outage, that events are no longer durable (an 'error' event with no part)."""
        alarm = new_event(
            decision="error", source=self.event_source or frame.source, frame_index=frame.index, captured_at=frame.captured_at,
            latency_ms=(time.monotonic() - frame.captured_monotonic) * 1000.0, image_size_wh=frame.size_wh,
            model=self.model, part_id=None,
            message=f"station alarm: events are sent without durability until the outbox stores again "
                    f"({self.dispatcher.outbox_failure})",
        )
        self._submit(alarm)
        self.board.add("errors")

    def _output(self, annotated: np.ndarray) -> None:
        if self.options.save is not None:
            if self.video is None:
                fps = self.options.fps_cap or getattr(self.source, "nominal_fps", None) or 30.0
                self.video = VideoSink(self.options.save, fps=fps)
            self.video.write(annotated)
        if self.show:
            import cv2

            try:
                cv2.imshow(_WINDOW, annotated)
                key = cv2.waitKey(1) & 0xFF
            except cv2.error as exc:
                logger.warning("cannot show the window (%s); running headless", exc)
                self.show = False
                return
            if key in (ord("q"), 27):
                logger.info("window closed with '%s'; stopping", "q" if key == ord("q") else "Esc")
                self.stop.set()
                self.window_closed = True

    def _display_ok(self) -> bool:
        if _has_display():
            return True
        logger.warning("--show needs a display (DISPLAY is not set); running headless")
        return False

    def close_outputs(self) -> None:
        if self.video is not None:
            self.video.close()
        if self.show:
            import cv2

            try:
                cv2.destroyWindow(_WINDOW)
            except cv2.error:
                pass

    def snapshot(self, running: bool = True) -> WatchStats:
        sinks = self._sink_stats()
        return self.board.snapshot(
            running=running, **_source_extras(self.source), sink_backlog={k: int(v["backlog"]) for k, v in sinks.items()},
            sink_errors={k: v["last_error"] for k, v in sinks.items()},
            evidence_failures=self.evidence.failures if self.evidence else 0,
        )

    def _sink_stats(self) -> dict[str, dict[str, Any]]:
        try:
            stats = self.dispatcher.stats()
            return stats if self.sink_names is None else {k: v for k, v in stats.items() if k in self.sink_names}
        except Exception as exc:  # closed outbox at shutdown: the panel shows nothing rather than failing
            logger.debug("sink stats unavailable: %s", exc)
            return {}


class _SignalHandlers:
    """SIGINT/SIGTERM set the stop event (finish the frame, flush, close); restored on exit."""

    def __init__(self, stop: threading.Event):
        self.stop = stop
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.received is not None and signum == signal.SIGINT:
            # Ctrl-C twice: stop waiting for sinks. Undelivered events are safe in the outbox.
            logger.warning("interrupted again: exiting without waiting for sinks; undelivered events stay in the outbox")
            raise KeyboardInterrupt
        if self.received is None:
            logger.info("received %s: finishing the current frame and flushing events (Ctrl-C again to skip waiting)",
                        signal.Signals(signum).name)
        self.received = signum
        self.stop.set()

    def __enter__(self) -> _SignalHandlers:
        if threading.current_thread() is not threading.main_thread():
            logger.warning("signal handlers can only be installed from the main thread; not installed")
            return self
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


def make_detector(options: WatchOptions, rules: RejectRules, conf_floor: float | None = None) -> Detector:
    """The model stage exactly as ``watch`` builds it for ``options`` (benchmarks time this very object).
    The model keeps boxes down to the lowest threshold of the rules (``conf_floor`` lower: calibration)."""
    floor = rules.min_threshold() if conf_floor is None else min(conf_floor, rules.min_threshold())
    detector: Detector = UltralyticsDetector(options.model, imgsz=options.imgsz, device=options.device,
                                             conf_floor=floor, half=options.half)
    if options.tile is not None:
        detector = TiledDetector(detector, (options.tile, options.tile), overlap=options.tile_overlap)
    return detector


@dataclass
class _CameraRun:
    """One camera of a station: its options, source, part logic and counters (see :func:`watch`)."""

    name: str
    options: WatchOptions
    source: FrameSource
    sink_names: tuple[str, ...]
    thresholds: Thresholds | None
    rules: RejectRules
    board: StatsBoard | None = None
    station: _Station | None = None
    stopped_by: StopReason = "end"
    error: BaseException | None = None


def watch(
    options: WatchOptions,
    *,
    detector: Detector | None = None,
    class_names: ClassNames | None = None,
    model_info: ModelIdentity | None = None,
    stop_event: threading.Event | None = None,
    on_stats: Callable[[WatchStats], None] | None = None,
    install_signal_handlers: bool = False,
    capture_factory: CaptureFactory = default_capture_factory,
    on_part: Callable[[PartDecision], None] | None = None,
    conf_floor: float | None = None,
) -> WatchSummary:
    """Run the inspection station until the source ends, ``max_frames`` is reached or ``stop_event`` is set.

    ``detector`` replaces the model named in ``options`` (tests pass a fake); its ``class_names``
    and ``model_info`` attributes are used when present, else pass them here. ``on_stats`` gets a
    :class:`WatchStats` every ``stats_interval_s`` (from a helper thread) and once at the end.
    ``install_signal_handlers`` makes SIGINT/SIGTERM stop the run cleanly (the CLI sets it).
    ``on_part`` gets every part decision (on a line with the part's per-frame class scores) and
    ``conf_floor`` lowers the model's confidence floor: ``yolodefect calibrate`` uses both.
    On return every event is in the outbox, and delivered unless a sink stayed down for
    ``flush_timeout_s`` (see ``WatchSummary.undelivered``); events the outbox could not store (full
    disk) were sent to the sinks directly and are listed in ``WatchSummary.not_persisted_event_ids``.

    With ``cameras`` (or several ``--source``), each camera runs on its own thread with its own
    source, part logic, rules and counters; the model is loaded once and shared, and the events of
    every camera go through one outbox, each to its camera's sinks, with the camera's name as source.
    ``serve`` starts the web page / JSON API / metrics server for the run (see :mod:`yolodefect.stream.web`).
    """
    if options.source is None and not options.cameras:
        raise UsageError("no source: give --source (or 'source:' in the station config), e.g. a camera index, "
                         "rtsp:// URL, video file or image folder")
    if detector is None and options.model is None and not options.anomaly_only:
        options = with_shipped_model(options)
        logger.info("no model given: running the shipped demonstration model %s (trained on synthetic parts; "
                    "give --model for your own)", options.model)
    several = bool(options.cameras)
    cameras = camera_options(options)
    for _, camera_opts in cameras:
        check_outputs_outside_source(camera_opts)  # before any sink, outbox, evidence or video file is opened
    cam_checkpoint = _cam_checkpoint(options)  # before opening anything: an export without its .pt is a usage error
    if options.serve is not None:
        check_serving(options)  # a non-loopback address without a token is refused before anything opens
    stop = stop_event if stop_event is not None else threading.Event()
    runs: list[_CameraRun] = []
    for name, camera_opts in cameras:
        thresholds = read_thresholds_yaml(camera_opts.thresholds) if camera_opts.thresholds is not None else None
        runs.append(_CameraRun(name, camera_opts, None, (), thresholds, build_rules(camera_opts, thresholds)))  # type: ignore[arg-type]
    anomaly = open_anomaly_stage(options, runs[0].thresholds) if options.anomaly is not None else None
    tile_per_camera = False  # several cameras share one model; each runs it on its own tiles
    if detector is None and options.anomaly_only:
        detector = NoDetector()
    elif detector is None and several:
        # The model keeps boxes down to the lowest threshold of every camera's rules.
        floor = min(run.rules.min_threshold() for run in runs)
        floor = floor if conf_floor is None else min(floor, conf_floor)
        detector = SharedDetector(make_detector(replace(options, tile=None), runs[0].rules, floor),
                                  batch_wait_ms=BATCH_WAIT_MS)
        tile_per_camera = True
    elif detector is None:
        detector = make_detector(runs[0].options, runs[0].rules, conf_floor)
    elif several:
        if model_info is None and getattr(detector, "model_info", None) is None:
            model_info = _fallback_model_info(detector)  # the caller's detector's name, not the wrapper's
        detector = SharedDetector(detector)
    names = class_names if class_names is not None else getattr(detector, "class_names", None)
    if names is None:
        raise UsageError("the detector has no class_names; pass class_names= to watch()")
    names = names_dict(names)
    if anomaly is not None:  # the anomaly model's rejects: one more class, judged by the same rule
        anomaly = anomaly.for_classes(names)
        names = {**names, anomaly.class_id: anomaly.class_name}
        runs[0].rules = with_anomaly_rule(runs[0].rules, anomaly)
    for run in runs:
        run.rules.check_classes(names)
    if model_info is None:
        model_info = getattr(detector, "model_info", None)
    if model_info is None and anomaly is not None and isinstance(detector, NoDetector):
        model_info = anomaly.identity
    if model_info is None:
        model_info = (ModelIdentity.of(read_model_file(options.model)) if options.model is not None
                      else _fallback_model_info(detector))
    cam = _open_cam(cam_checkpoint, options, names) if cam_checkpoint is not None else None

    sinks = _station_sinks(runs)
    opened: list[_CameraRun] = []
    try:
        for run in runs:
            run.source = _open_camera_source(run.options, stop, capture_factory)
            opened.append(run)
        dispatcher = Dispatcher.open(options.outbox, sinks)
    except BaseException:
        for run in opened:
            _close_trigger(run.source)
        raise
    live = server = event_store = None
    warned: set[Path | None] = set()
    try:
        for run in runs:
            track_mode = _track_mode(run.options, run.source)
            # on_part: a calibration or verification run, the remedy itself. Once per thresholds file.
            if track_mode and on_part is None and run.options.thresholds not in warned:
                warned.add(run.options.thresholds)
                _warn_unless_calibrated(run.options, run.thresholds)
            run.board = StatsBoard(WatchStats(source=run.source.name, camera=run.name,
                                              mode="track" if track_mode else "part",
                                              model=model_info.to_dict(), model_card=getattr(detector, "card", None)))
        if options.serve is not None:
            live, server, event_store = start_serving(options, [run.rules for run in runs], [run.name for run in runs],
                                                      model_info, getattr(detector, "card", None), names)
        for run in runs:
            track_mode = run.board.snapshot().mode == "track"
            belt = (learn_belt(run.options.belt, run.options, stop)
                    if track_mode and run.options.belt is not None else None)
            camera_detector = detector
            if tile_per_camera and run.options.tile is not None:
                camera_detector = TiledDetector(detector, (run.options.tile, run.options.tile),
                                                overlap=run.options.tile_overlap)
            run.station = _Station(run.options, camera_detector, names, model_info,
                                   run.rules, run.source, dispatcher, track_mode, stop, run.board,
                                   min_frames=line_min_frames(run.options, run.thresholds), belt=belt,
                                   keep_scores=on_part is not None, on_part=on_part, anomaly=anomaly, cam=cam,
                                   camera=run.name, camera_is_source=several or options.camera is not None,
                                   sink_names=run.sink_names if several else None, live=live)
            if live is not None:
                live.add_camera(run.name, run.source.name, run.station.snapshot, sinks=run.station._sink_stats,
                                outbox_failure=lambda: dispatcher.outbox_failure)
    except BaseException:
        if server is not None:
            server.stop()
        if event_store is not None:
            event_store.close()
        dispatcher.close(timeout_s=0.0)  # releases the outbox lock: a retry in this process must not find it taken
        for run in runs:
            _close_trigger(run.source)
        raise
    for run in runs:
        logger.info("watching %s%s (%s mode) with %s [%s]; events to %s; outbox %s", run.source.name,
                    f" as camera {run.name}" if several else "", run.board.snapshot().mode, model_info.name,
                    model_info.precision, ", ".join(run.sink_names), _outbox_words(options.outbox))
    if server is not None:
        logger.info("web page, API, /metrics and /healthz at %s", server.url)

    snapshot = runs[0].station.snapshot if not several else lambda: combine_stats([r.station.snapshot() for r in runs])
    ticker = StatsTicker(options.stats_interval_s, snapshot, on_stats,
                         lambda exc: logger.warning("stats callback failed: %s", exc)) if on_stats else None
    signals = _SignalHandlers(stop)
    with signals if install_signal_handlers else contextlib.nullcontext():
        if ticker is not None:
            ticker.start()
        try:
            if several:
                _run_cameras(runs, stop, options.max_frames)
            else:
                _run_camera(runs[0], stop, options.max_frames)
            for run in runs:
                if run.stopped_by == "stop":
                    run.stopped_by = ("signal" if signals.received is not None
                                      else "window" if run.station.window_closed else "stop")
        finally:
            if ticker is not None:
                ticker.stop()
            for run in runs:
                run.station.close_outputs()
            # Also on an exception: what is already in the outbox still gets its chance to go out.
            flushed, undelivered = _shutdown_delivery(dispatcher, options.flush_timeout_s)
            if live is not None:
                live.stopped()
            if server is not None:
                server.stop()
            if event_store is not None:
                event_store.close()
    not_persisted = dispatcher.not_persisted_event_ids()
    per_camera = [WatchSummary(stats=run.station.board.snapshot(running=False, **_final_extras(
                      run.station, {k: v for k, v in undelivered.items() if k in run.sink_names})),
                  stopped_by=run.stopped_by, flushed=flushed, undelivered=undelivered,
                  not_persisted_event_ids=not_persisted) for run in runs]
    if several:
        stopped_by = next((s.stopped_by for s in per_camera if s.stopped_by != "end"), "end")
        summary = WatchSummary(stats=combine_stats([s.stats for s in per_camera], running=False),
                               stopped_by=stopped_by, flushed=flushed, undelivered=undelivered,
                               not_persisted_event_ids=not_persisted, cameras=tuple(per_camera))
    else:
        summary = replace(per_camera[0], stats=replace(per_camera[0].stats, sink_backlog=dict(undelivered)))
    final = summary.stats
    logger.info("stopped (%s): %d frames, %d rejects, %d passes, %d errors; %s", summary.stopped_by, final.frames,
                final.rejects, final.passes, final.errors,
                "all events delivered" if flushed else f"undelivered events kept in {options.outbox}: {undelivered}")
    if summary.not_persisted_event_ids:
        logger.error("%d event(s) NOT stored in the outbox %s (sent to the sinks directly, and written to stderr "
                     "as lines starting %r): %s", len(summary.not_persisted_event_ids), options.outbox,
                     NOT_PERSISTED_PREFIX.strip(), ", ".join(summary.not_persisted_event_ids))
    if final.evidence_failures:
        logger.warning("%d evidence snapshot(s) could not be saved in %s", final.evidence_failures, options.evidence_dir)
    if on_stats is not None:
        try:
            on_stats(final)
        except Exception as exc:
            logger.warning("stats callback failed: %s", exc)
    return summary


def _track_mode(options: WatchOptions, source: FrameSource) -> bool:
    """Whether a camera tracks parts on a moving line (else each frame or trigger is one part)."""
    if options.trigger is not None:  # one part per trigger: the trigger is the part finder
        return False
    return options.mode == "track" or (options.mode == "auto" and not source.per_part)


def _open_camera_source(options: WatchOptions, stop: threading.Event, capture_factory: CaptureFactory) -> FrameSource:
    source_options = SourceOptions(fps_cap=options.fps_cap, loop=options.loop, follow=options.follow,
                                   stall_timeout_s=options.stall_timeout_s)
    source = open_source(options.source, source_options, stop_event=stop, capture_factory=capture_factory)
    if options.trigger is not None:
        from yolodefect.stream.trigger import open_triggered_source

        source = open_triggered_source(options.trigger, source, stop)
    return source


def _station_sinks(runs: list[_CameraRun]) -> list[Sink]:
    """One sink per distinct spec over the cameras (two cameras naming the same file share its one writer);
    each run gets the names of its own."""
    by_spec: dict[str, Sink] = {}
    for run in runs:
        for spec in run.options.sinks:
            if spec not in by_spec:
                by_spec[spec] = sink_from_url(spec)
        run.sink_names = tuple(dict.fromkeys(by_spec[spec].name for spec in run.options.sinks))
    unique: dict[str, Sink] = {}
    for sink in by_spec.values():
        unique.setdefault(sink.name, sink)
    return list(unique.values())


def _run_camera(run: _CameraRun, stop: threading.Event, max_frames: int | None) -> None:
    """One camera's frame loop, to the end of its source (or max_frames, or stop); its parts all decided."""
    station = run.station
    frames: Iterator[Frame] = iter(run.source)
    try:
        for frame in frames:
            station.process(frame)
            if max_frames is not None and station.board.count("frames") >= max_frames:
                run.stopped_by = "max_frames"
                break
            if stop.is_set():
                break
        if stop.is_set() and run.stopped_by == "end":
            run.stopped_by = "stop"
        station.finish("the source ended" if run.stopped_by == "end" else f"the station stopped ({run.stopped_by})")
    finally:
        close = getattr(frames, "close", None)
        if close is not None:
            close()  # runs the source's finally, which joins its reader thread


def _run_cameras(runs: list[_CameraRun], stop: threading.Event, max_frames: int | None) -> None:
    """Every camera on its own thread; this (main) thread waits, so signals still reach the station.
    A camera that fails stops the others, and its error is raised here once they have finished."""
    def run_one(run: _CameraRun) -> None:
        try:
            _run_camera(run, stop, max_frames)
        except BaseException as exc:
            run.error = exc
            logger.error("camera %s failed: %s; stopping the station", run.name, exc)
            stop.set()

    threads = [threading.Thread(target=run_one, args=(run,), name=f"camera-{run.name}", daemon=True) for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(timeout=0.2)
    for run in runs:
        if run.error is not None:
            raise run.error


def _cam_checkpoint(options: WatchOptions) -> Path | None:
    """The .pt that --evidence-cam computes heatmaps with (see checkpoint_for_cam); None when it is off."""
    if not options.evidence_cam:
        if options.evidence_cam_model is not None:
            logger.warning("evidence_cam_model %s is ignored: evidence_cam is off", options.evidence_cam_model)
        return None
    return checkpoint_for_cam(options.model, options.evidence_cam_model)


def _open_cam(checkpoint: Path, options: WatchOptions, names: Mapping[int, str]) -> EigenCam:
    cam = EigenCam(checkpoint, imgsz=options.imgsz, device=options.device, tile=options.tile,
                   overlap=options.tile_overlap)
    cam.check_classes(names)
    logger.info("evidence: an EigenCAM heatmap of each reject from %s, %s", checkpoint.name, cam.layer.describe())
    return cam


def _close_trigger(source: FrameSource) -> None:
    trigger = getattr(source, "trigger", None)
    if trigger is not None:
        trigger.close()


def _part_class_id(options: WatchOptions, names: Mapping[int, str]) -> int:
    for class_id, name in names.items():
        if name == options.part_class:
            return class_id
    raise UsageError(f"parts=class needs a class {options.part_class!r} in the model (its classes: "
                     f"{', '.join(names.values())}); label whole parts as that class, or use parts=belt")


def line_min_frames(options: WatchOptions, thresholds: Thresholds | None) -> int:
    """k of the line rule: the option when given, else the calibrated thresholds file's, else the default."""
    if options.min_frames is not None:
        return options.min_frames
    if thresholds is not None and thresholds.min_frames is not None:
        return thresholds.min_frames
    return DEFAULT_MIN_FRAMES


def _warn_unless_calibrated(options: WatchOptions, thresholds: Thresholds | None) -> None:
    if thresholds is not None and thresholds.calibrated_on is None:
        logger.warning("the thresholds in %s were chosen on still images (one look per part); on a moving line "
                       "each part is seen on many frames, so more good parts will be rejected than eval promised. "
                       "Calibrate the line with a run of known parts: yolodefect calibrate VIDEO --truth parts.csv",
                       options.thresholds)


def learn_belt(belt: Path, options: WatchOptions, stop: threading.Event) -> BeltModel:
    """The empty-belt model from ``belt`` (a video or image folder of the empty belt): its first ``belt_frames`` frames."""
    images = []
    source = open_source(str(belt), SourceOptions(), stop_event=stop)
    frames = iter(source)
    try:
        for frame in frames:
            if frame.error is None:
                images.append(frame.image)
            if len(images) >= options.belt_frames:
                break
    finally:
        close = getattr(frames, "close", None)
        if close is not None:
            close()
    if len(images) < 2:
        raise UsageError(f"the empty belt {belt} gave {len(images)} readable frame(s); at least 2 are needed")
    logger.info("learned the empty belt from %d frame(s) of %s", len(images), belt)
    return BeltModel.learn(images, min_area_px=options.min_part_area)


def _source_extras(source: FrameSource) -> dict[str, Any]:
    """The source's counters under their WatchStats names."""
    counts = source.stats.snapshot()
    return dict(dropped_frames=counts["dropped"], skipped_frames=counts["skipped"], reconnects=counts["reconnects"],
                open_attempts=counts["open_attempts"], open_failures=counts["open_failures"],
                truncated=counts["truncated"] > 0, truncation=counts["truncation"])


def _outbox_words(path: Path) -> str:
    """The outbox for the startup log; a relative one is named with its folder, which a restart must share."""
    if path.is_absolute():
        return str(path)
    default = "the default, " if path == DEFAULT_OUTBOX else ""
    return f"{path} ({default}in the working folder {Path.cwd()})"


def _final_extras(station: _Station, undelivered: dict[str, int]) -> dict[str, Any]:
    return dict(**_source_extras(station.source), sink_backlog=dict(undelivered),
                evidence_failures=station.evidence.failures if station.evidence else 0)


def _shutdown_delivery(dispatcher: Dispatcher, timeout_s: float) -> tuple[bool, dict[str, int]]:
    """Flush, record what is left, close. Events not delivered stay in the outbox for the next run."""
    try:
        flushed = dispatcher.flush(timeout_s)
        undelivered = {name: int(s["backlog"]) for name, s in dispatcher.stats().items() if s["backlog"]}
    finally:
        dispatcher.close(timeout_s=1.0)
    return flushed, undelivered
