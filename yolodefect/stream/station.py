"""One camera's frame pipeline in the station behind ``yolodefect watch`` (see :mod:`yolodefect.stream.watch`).

Per frame, on the camera's thread: detect (the anomaly stage beside the detector), find and follow the parts
(track mode) or take the frame as the part, decide, draw only when something needs the picture, save the
evidence and hand the event to the durable outbox; hand the frame to the web page by reference (``--serve``).
:func:`~yolodefect.stream.watch.watch` builds one per camera and runs it.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from yolodefect.detections import Detections
from yolodefect.errors import UsageError
from yolodefect.inference.eigencam import EigenCam, cam_overlay
from yolodefect.inference.names import class_name
from yolodefect.inference.rules import RejectRules
from yolodefect.stream.anomaly_stage import AnomalyStage, appended
from yolodefect.stream.camera_faults import CameraFaultMonitor
from yolodefect.stream.delivery import Dispatcher
from yolodefect.stream.detector import Detector
from yolodefect.stream.drawing import Overlay, draw_frame
from yolodefect.stream.drift import DriftMonitor, crop_observation, image_observation
from yolodefect.stream.events import Alarm, Decision, Defect, Event, ModelIdentity, new_event, utc_now_iso
from yolodefect.stream.evidence import EvidenceWriter, VideoSink
from yolodefect.stream.live import LiveView
from yolodefect.stream.options import WatchOptions
from yolodefect.stream.line import LineFrame, LinePartDecider, class_maxima
from yolodefect.stream.part_finder import BeltModel, class_part_boxes
from yolodefect.stream.parts import ImagePartDecider, PartDecision, PartNotInspectedError
from yolodefect.stream.reload import Swap, SwapSlot
from yolodefect.stream.review import ReviewCase, ReviewQueue
from yolodefect.stream.sources import Frame, FrameSource, UnreadableImageError
from yolodefect.stream.stats import StatsBoard, WatchStats

logger = logging.getLogger(__name__)

_WINDOW = "yolodefect watch"


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


class Station:
    """The per-run state of :func:`watch`; one instance per call."""

    def __init__(self, options: WatchOptions, detector: Detector, class_names: Mapping[int, str], model: ModelIdentity,
                 rules: RejectRules, source: FrameSource, dispatcher: Dispatcher, track_mode: bool,
                 stop: threading.Event, board: StatsBoard, *, min_frames: int = 3, belt: BeltModel | None = None,
                 keep_scores: bool = False, on_part: Callable[[PartDecision], None] | None = None,
                 anomaly: AnomalyStage | None = None, cam: EigenCam | None = None, camera: str = "",
                 camera_is_source: bool = False, sink_names: tuple[str, ...] | None = None,
                 live: LiveView | None = None, drift: DriftMonitor | None = None,
                 review: ReviewQueue | None = None):
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
        self.review = review  # watch --review: the station's queue of frames for a person to look at
        self.review_log = _RateLimitedLog(60.0)
        self._review_rules: tuple[RejectRules, np.ndarray, list[int]] | None = None
        self.image_decider = ImagePartDecider(emit_pass=options.emit_pass)
        self.line: LinePartDecider | None = None
        self.belt: BeltModel | None = belt
        self._belt_images: list[np.ndarray] = []
        self._previous_belt: np.ndarray | None = None
        self._shrunk_frame: tuple[Frame, np.ndarray] | None = None  # the last frame and its working-scale copy
        self.last_frame: Frame | None = None
        if track_mode:
            self.line = LinePartDecider(self._find_parts, self.names, rules, min_frames=min_frames,
                                        min_part_frames=options.min_part_frames, decide_at=options.decide_at,
                                        emit_pass=options.emit_pass, keep_scores=keep_scores or review is not None,
                                        keep_peak=review is not None)
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
        self.swaps = SwapSlot()  # watch --reload-on-change: a new model or thresholds, taken before the next frame
        # Issue #17: the drift monitor (options.drift "warn" or "alarm") and the camera fault alarms of this camera.
        self.drift = drift
        # In image mode two photos of an empty belt may be identical: frozen is judged on video and cameras only.
        self.faults = (CameraFaultMonitor(check_frozen=not source.per_part, frozen_s=options.frozen_s)
                       if options.camera_faults else None)
        self._alarm_ids: dict[tuple[str, str], str] = {}  # (decision, kind): the event that raised it

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
        boxes, self._previous_belt = self.belt.find(frame.image, self._previous_belt, self._shrunk(frame))
        return boxes, np.ones(len(detections), dtype=bool)

    def _shrunk(self, frame: Frame) -> np.ndarray | None:
        """The part finder's working-scale copy of this frame, made once and shared with the camera check; None
        before the belt is learned, when parts come from the model, or when the frame does not fit the belt model
        (the part finder says so)."""
        if self.belt is None or self.part_class_id is not None or frame.error is not None:
            return None
        if self._shrunk_frame is not None and self._shrunk_frame[0] is frame:
            return self._shrunk_frame[1]
        if frame.size_wh != self.belt.frame_size_wh:
            return None
        self._shrunk_frame = (frame, self.belt.shrink(frame.image))
        return self._shrunk_frame[1]

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
        swap = self.swaps.take()
        if swap is not None:
            self._swap(swap)
        if self.faults is not None and frame.error is None:
            self._check_camera(frame)
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
        emitted: dict[str | int | None, tuple[Decision, str]] = {}  # part: its event's decision and id
        for outcome in outcomes:
            # An anomaly reject's evidence is its own drawing, over the anomaly heatmap of the part.
            heated = self.anomaly is not None and self.anomaly.shows(outcome.defects)
            evidence = annotated if outcome.frame is frame and not heated else None
            if evidence is None and self.evidence is not None and outcome.decision != "pass":
                evidence = self._evidence_drawing(outcome)
            emitted[outcome.part_id] = (outcome.decision, self._emit(frame, outcome, evidence))
        if count_frame:
            self.board.frame_done((time.monotonic() - frame.captured_monotonic) * 1000.0)
        if self.review is not None:
            self._review(frame, result, emitted)
        if annotated is not None and count_frame:
            self._output(annotated)
        if self.live is not None and count_frame:
            # By reference: the web server draws it (once, when a page asks), never this thread.
            self.live.publish_frame(self.camera, (lambda: annotated) if annotated is not None
                                    else (lambda: self._annotated(frame, result)))
        if self.drift is not None:
            self._observe_drift(frame, result)

    # -- station alarms (issue #17): drift and camera faults ------------------------------------------

    def _check_camera(self, frame: Frame) -> None:
        fps = self.source.nominal_fps if self.source.kind == "video" else None
        # A video file's own clock (its position), not how fast this station happens to read it.
        time_s = frame.index / fps if fps else frame.captured_monotonic
        for change in self.faults.update(frame.image, time_s, self._shrunk(frame)):
            self._alarm("camera_fault", change.kind, change.state, change.kind, {change.kind: change.measures},
                        change.describe(), frame, send=True)

    def _observe_drift(self, frame: Frame, result: _FrameResult) -> None:
        """One observation per inspected part: image mode the frame with its detections, a line each part's crop."""
        if self.line is None:
            if result.error is not None or frame.error is not None:
                return
            found = result.detections
            top = float(found.confidence.max()) if len(found) else 0.0
            observations = [image_observation(frame.image, top, int(np.count_nonzero(result.counted)))]
        else:
            observations = [crop_observation(d.frame.image, d.part_box) for d in result.decisions
                            if d.decision != "error" and d.part_box is not None]
        for observation in observations:
            change = self.drift.update(observation) if observation is not None else None
            if change is None:
                continue
            window = f"the last {self.drift.window} parts"
            message = (f"drift: {window} differ from the reference profile: {change.reason()}"
                       if change.state == "raised" else
                       f"drift cleared: {window} look like the reference profile again ({change.reason()})")
            self._alarm("drift", "drift", change.state, change.reason(), change.feature_dicts(), message, frame,
                        send=self.options.drift == "alarm")

    def _alarm(self, decision: Decision, kind: str, state: str, reason: str, features: dict[str, dict[str, float]],
               message: str, frame: Frame, *, send: bool) -> None:
        """Log, show and count a station alarm raised or cleared; with ``send``, an event through the outbox and
        this camera's sinks (a cleared one carrying the raising event's id)."""
        raised = state == "raised"
        where = f"camera {self.camera}: " if self.event_source else ""
        (logger.warning if raised else logger.info)("%s%s (frame %d)", where, message, frame.index)
        live_kind = decision if decision == "drift" else f"{decision}:{kind}"
        self.board.set_alarm(live_kind, message if raised else None)
        if raised:
            self.board.add("drift_alarms" if decision == "drift" else "camera_faults")
        if self.live is not None:
            if raised:
                self.live.set_alarm(live_kind, self.camera, message)
            else:
                self.live.clear_alarm(live_kind, self.camera)
        if not send:
            return
        raised_by = None if raised else self._alarm_ids.pop((decision, kind), None)
        event = new_event(
            decision=decision, source=self.event_source or frame.source, frame_index=frame.index,
            captured_at=frame.captured_at, latency_ms=(time.monotonic() - frame.captured_monotonic) * 1000.0,
            image_size_wh=frame.size_wh, model=self.model, part_id=None, message=message,
            alarm=Alarm(state=state, reason=reason, features=features, alarm_id=raised_by),  # type: ignore[arg-type]
        )
        if raised:
            self._alarm_ids[(decision, kind)] = event.event_id
        self._submit(event.to_dict())

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

    def _emit(self, frame: Frame, outcome: _Outcome, annotated: np.ndarray | None) -> str:
        """Emit one event decided on ``frame`` (latency runs from its capture), shown by ``outcome.frame``;
        returns its event id."""
        decision, part_id, defects, shown = outcome.decision, outcome.part_id, outcome.defects, outcome.frame
        part_box = None if outcome.part_box is None else tuple(round(float(v), 1) for v in outcome.part_box)
        event = new_event(
            decision=decision, source=self.event_source or shown.source, frame_index=shown.index, captured_at=shown.captured_at,
            latency_ms=0.0, image_size_wh=shown.size_wh, model=self.model, part_id=part_id, message=outcome.message,
            part_bbox_xyxy=part_box, anomaly_model=self.anomaly.identity if self.anomaly is not None else None,
            thresholds={name: self.rules.threshold(name) for name in self.names.values()},
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
        data = event.to_dict()  # once: the outbox stores it, the web page's store keeps it
        self._submit(data)
        counter = {"reject": "rejects", "pass": "passes", "error": "errors"}[decision]
        self.board.add(counter)
        if decision == "reject":
            self.board.add_classes({d.class_name for d in event.defects})
        if decision != "error":
            self.board.add("parts")
        if self.live is not None:
            self.live.observe("event", self.camera, latency_ms)
            self.live.event_added(data)
        logger.debug("event %s: %s part %s (%d defects)", event.event_id, decision, part_id, len(defects))
        if self.dispatcher.outbox_failure is not None and not outbox_was_failing:
            self._outbox_alarm(frame)
        return event.event_id

    def _review(self, frame: Frame, result: _FrameResult, emitted: Mapping[str | int | None, tuple[Decision, str]]) -> None:
        """Offer this frame's decided parts to the review queue (see :mod:`yolodefect.stream.review`); a failure
        here is logged, never the line's problem."""
        try:
            for case in self._review_cases(frame, result, emitted):
                self.review.consider(case, self.board.add)
        except Exception as exc:
            self.board.add("review_failures")
            self.review_log(logger.error, "review queue: %s: %s", type(exc).__name__, exc)

    def _review_cases(self, frame: Frame, result: _FrameResult,
                      emitted: Mapping[str | int | None, tuple[Decision, str]]) -> Iterator[ReviewCase]:
        if self._review_rules is None or self._review_rules[0] is not self.rules:  # once per rules object
            classes = max(self.names) + 1 if self.names else 0
            thresholds = np.array([self.rules.threshold(class_name(self.names, c)) for c in range(classes)],
                                  dtype=np.float32)
            self._review_rules = (self.rules, thresholds, self.rules.reject_ids(self.names))
        _, thresholds, reject_ids = self._review_rules
        anomaly_id = self.anomaly.class_id if self.anomaly is not None else None
        common = dict(thresholds=thresholds, reject_ids=reject_ids, names=self.names, model=self.model,
                      model_class_ids=[c for c in self.names if c != anomaly_id], anomaly_id=anomaly_id)
        if self.line is None:  # one frame, one part: also the passes nobody asked to hear of
            if result.error is not None or frame.error is not None:
                return
            part_id = frame.part_hint if frame.part_hint is not None else frame.index
            rejected = any(d.decision == "reject" for d in result.decisions)
            decision, event_id = emitted.get(part_id, ("reject" if rejected else "pass", None))
            scores = class_maxima(result.detections, self.rules.eligible_mask(result.detections), len(thresholds))
            yield ReviewCase(decision=decision, part_id=part_id, event_id=event_id, frame=frame,
                             detections=result.detections, part_box=None, scores=scores[None, :], min_frames=1,
                             source=self.event_source or frame.source, **common)
            return
        for decided in result.decisions:
            if decided.scores is None:
                continue
            shown, detections, box = decided.peak if decided.peak is not None else (
                decided.frame, result.detections if decided.frame is frame else decided.defects, decided.part_box)
            decision, event_id = emitted.get(decided.part_id, (decided.decision, None))
            yield ReviewCase(decision=decision, part_id=decided.part_id, event_id=event_id, frame=shown,
                             detections=detections, part_box=box, scores=decided.scores,
                             min_frames=self.line.min_frames, source=self.event_source or shown.source, **common)

    def _swap(self, swap: Swap) -> None:
        """Between frames: run the new model and/or thresholds staged by the reload watcher (stream/reload.py)."""
        self.detector = swap.detector if swap.detector is not None else self.detector
        self.model = swap.model if swap.model is not None else self.model
        if swap.rules is not None:
            self.rules = swap.rules
            if self.line is not None:
                self.line.set_rules(swap.rules)
        thresholds = {name: self.rules.threshold(name) for name in self.names.values()}
        changes: dict[str, Any] = {"model": self.model.to_dict()}
        if swap.card is not None:
            changes["model_card"] = dict(swap.card)
        self.board.rebase(**changes)
        self.board.add("model_reloads")
        if self.live is not None:
            self.live.model_changed(self.camera, self.model.to_dict(), swap.card, thresholds)
        where = f"camera {self.camera}: " if self.event_source else ""
        logger.info("%sreloaded (%s): deciding with %s [%s] sha256 %s..., thresholds %s", where, swap.why,
                    self.model.name, self.model.precision, self.model.sha256[:12],
                    ", ".join(f"{name} {value:.3g}" for name, value in thresholds.items()))

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

    def _submit(self, event: Mapping[str, Any] | Event) -> None:
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
        sinks = self.sink_stats()
        return self.board.snapshot(
            running=running, **source_extras(self.source), sink_backlog={k: int(v["backlog"]) for k, v in sinks.items()},
            sink_errors={k: v["last_error"] for k, v in sinks.items()},
            evidence_failures=self.evidence.failures if self.evidence else 0,
        )

    def sink_stats(self) -> dict[str, dict[str, Any]]:
        try:
            stats = self.dispatcher.stats()
            return stats if self.sink_names is None else {k: v for k, v in stats.items() if k in self.sink_names}
        except Exception as exc:  # closed outbox at shutdown: the panel shows nothing rather than failing
            logger.debug("sink stats unavailable: %s", exc)
            return {}



def _part_class_id(options: WatchOptions, names: Mapping[int, str]) -> int:
    for class_id, name in names.items():
        if name == options.part_class:
            return class_id
    raise UsageError(f"parts=class needs a class {options.part_class!r} in the model (its classes: "
                     f"{', '.join(names.values())}); label whole parts as that class, or use parts=belt")



def source_extras(source: FrameSource) -> dict[str, Any]:
    """The source's counters under their WatchStats names."""
    counts = source.stats.snapshot()
    return dict(dropped_frames=counts["dropped"], skipped_frames=counts["skipped"], reconnects=counts["reconnects"],
                open_attempts=counts["open_attempts"], open_failures=counts["open_failures"],
                truncated=counts["truncated"] > 0, truncation=counts["truncation"])


