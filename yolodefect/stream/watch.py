"""The inspection station loop behind ``yolodefect watch``.

One frame at a time per camera (on the calling thread, or one thread per camera in a station of
several; the per-frame pipeline is :class:`yolodefect.stream.station.Station`): read -> detect ->
track (video) -> reject rules -> part decision -> draw -> evidence -> event into the durable outbox.
Reading happens on the source's own thread (see :mod:`yolodefect.stream.sources`) and delivery on
the dispatcher's threads, so a slow camera or a down sink never stalls detection, and an event is
on disk before any sink sees it.

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
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any


from yolodefect.errors import UsageError
from yolodefect.inference.eigencam import EigenCam, checkpoint_for_cam
from yolodefect.inference.model_file import read_model_file
from yolodefect.inference.names import ClassNames, names_dict
from yolodefect.inference.rules import RejectRules, build_reject_rules
from yolodefect.inference.thresholds_file import Thresholds, read_thresholds_yaml
from yolodefect.shipped import with_shipped_model
from yolodefect.stream.anomaly_stage import NoDetector, open_anomaly_stage, with_anomaly_rule
from yolodefect.stream.delivery import NOT_PERSISTED_PREFIX, Dispatcher
from yolodefect.stream.detector import Detector, SharedDetector, TiledDetector, UltralyticsDetector
from yolodefect.inference.profile_file import PROFILE_NAME
from yolodefect.stream.drift import DriftMonitor, ReferenceProfile, drift_monitor, resolve_drift
from yolodefect.stream.events import ModelIdentity
from yolodefect.stream.options import (DEFAULT_MIN_FRAMES, DEFAULT_OUTBOX, WatchOptions, camera_options,
                                      check_outputs_outside_source, load_station_config, merge_options, resolve_options)
from yolodefect.stream.part_finder import BeltModel
from yolodefect.stream.reload import CameraReload, StationReloader
from yolodefect.stream.review import ReviewQueue
from yolodefect.stream.parts import PartDecision
from yolodefect.stream.sinks import sink_from_url
from yolodefect.stream.sinks.base import Sink
from yolodefect.stream.station import Station, source_extras
from yolodefect.stream.sources import (
    CaptureFactory,
    Frame,
    FrameSource,
    SourceOptions,
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

# Several cameras: how long the model waits for the other cameras' frames to run them as one batch. Measured on
# 2 cores (bench/serve.py), two 640x360 videos at imgsz 320: 37 fps in all without waiting, 45 at 5 ms, 48 at 15 ms,
# with a lower p95 latency too (a camera's frame no longer queues behind the other's whole model call).
BATCH_WAIT_MS = 10.0
# watch --review with review_band 1 would ask the model for every box down to confidence 0 (hundreds per frame).
REVIEW_MIN_FLOOR = 0.01


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
    station: Station | None = None
    profile: ReferenceProfile | None = None  # the drift monitor's reference (options.drift warn or alarm)
    drift_implicit: bool = False  # the profile was found beside the thresholds; drift was not asked for
    stopped_by: StopReason = "end"
    error: BaseException | None = None


def _drift_for(run: _CameraRun, track_mode: bool) -> DriftMonitor | None:
    """The camera's drift monitor, or None.

    eval's profile describes still images, one per part. On a moving line the monitor compares part crops as
    this camera sees them, and measured against a still-image profile they differ in sharpness and framing
    (bench/drift.py: a stable line alarmed at part 52); so a profile only found beside the thresholds is not
    used there unless drift or profile is asked for explicitly.
    """
    if run.profile is None:
        return None
    if track_mode and run.drift_implicit:
        logger.info("drift monitor off on this moving line: %s is a profile of still images (one per part), not of "
                    "parts as this camera sees them; pass --drift alarm --profile PATH to use one anyway",
                    run.options.thresholds.with_name(PROFILE_NAME) if run.options.thresholds else "the profile")
        return None
    return drift_monitor(run.profile, run.options, track_mode=track_mode, confidence_floor=run.rules.min_threshold())


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
    if options.serve is not None:
        check_serving(options)  # a non-loopback address without a token is refused before anything opens
    if detector is None and options.model is None and not options.anomaly_only:
        options = with_shipped_model(options)
        logger.info("no model given: running the shipped demonstration model %s (trained on synthetic parts; "
                    "give --model for your own)", options.model)
    several = bool(options.cameras)
    cameras = camera_options(options)
    for _, camera_opts in cameras:
        check_outputs_outside_source(camera_opts)  # before any sink, outbox, evidence or video file is opened
    cam_checkpoint = _cam_checkpoint(options)  # before opening anything: an export without its .pt is a usage error
    stop = stop_event if stop_event is not None else threading.Event()
    runs: list[_CameraRun] = []
    for name, camera_opts in cameras:
        drift_mode, profile = resolve_drift(camera_opts)  # a missing profile is a usage error before anything opens
        # Found beside the thresholds, not asked for: on a moving line it is not used (see _drift_for).
        drift_implicit = camera_opts.drift is None and camera_opts.profile is None
        camera_opts = replace(camera_opts, drift=drift_mode)
        thresholds = read_thresholds_yaml(camera_opts.thresholds) if camera_opts.thresholds is not None else None
        runs.append(_CameraRun(name, camera_opts, None, (), thresholds, build_rules(camera_opts, thresholds),  # type: ignore[arg-type]
                               profile=profile, drift_implicit=drift_implicit))
    if options.review is not None:  # the review queue shows near-misses: the model keeps boxes down to the band's floor
        floor = max(REVIEW_MIN_FLOOR, min(run.rules.min_threshold() for run in runs) * (1.0 - options.review_band))
        conf_floor = floor if conf_floor is None else min(floor, conf_floor)
    anomaly = open_anomaly_stage(options, runs[0].thresholds) if options.anomaly is not None else None
    tile_per_camera = False  # several cameras share one model; each runs it on its own tiles
    model_from_file = detector is None and not options.anomaly_only  # what --reload-on-change can load again
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
    model_names = dict(names)  # the model's own classes (the anomaly stage may add one below)
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
    review: ReviewQueue | None = None
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
        if options.review is not None:
            review = ReviewQueue(options.review, band_fraction=options.review_band, sample=options.review_sample,
                                 max_per_min=options.review_max_per_min, max_items=options.review_max_items)
        for run in runs:
            track_mode = run.board.snapshot().mode == "track"
            belt = (learn_belt(run.options.belt, run.options, stop)
                    if track_mode and run.options.belt is not None else None)
            camera_detector = detector
            if tile_per_camera and run.options.tile is not None:
                camera_detector = TiledDetector(detector, (run.options.tile, run.options.tile),
                                                overlap=run.options.tile_overlap)
            run.station = Station(run.options, camera_detector, names, model_info,
                                   run.rules, run.source, dispatcher, track_mode, stop, run.board,
                                   min_frames=line_min_frames(run.options, run.thresholds), belt=belt,
                                   keep_scores=on_part is not None, on_part=on_part, anomaly=anomaly, cam=cam,
                                   camera=run.name, camera_is_source=several or options.camera is not None,
                                   sink_names=run.sink_names if several else None, live=live,
                                   drift=_drift_for(run, track_mode),
                                   review=review)
            if live is not None:
                live.add_camera(run.name, run.source.name, run.station.snapshot, sinks=run.station.sink_stats,
                                outbox_failure=lambda: dispatcher.outbox_failure,
                                thresholds={name: run.rules.threshold(name) for name in names.values()})
    except BaseException:
        if server is not None:
            server.stop()
        if event_store is not None:
            event_store.close()
        dispatcher.close(timeout_s=0.0)  # releases the outbox lock: a retry in this process must not find it taken
        if review is not None:
            review.close(timeout_s=1.0)
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
    reloader = (_reloader(options, runs, names, model_names, anomaly, conf_floor, several, model_from_file)
                if options.reload_on_change else None)
    with signals if install_signal_handlers else contextlib.nullcontext():
        if ticker is not None:
            ticker.start()
        if reloader is not None:
            reloader.start()
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
            if reloader is not None:
                reloader.stop()
            if ticker is not None:
                ticker.stop()
            for run in runs:
                run.station.close_outputs()
            if review is not None:
                review.close()
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
    if review is not None:
        logger.info("review queue %s: %d item(s) saved this run, %d over review_max_per_min, %d dropped, %d failed; "
                    "%d in the folder", options.review, final.review_saved, final.review_rate_limited,
                    final.review_dropped, final.review_failures, review.state()["items"])
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


def _outbox_words(path: Path) -> str:
    """The outbox for the startup log; a relative one is named with its folder, which a restart must share."""
    if path.is_absolute():
        return str(path)
    default = "the default, " if path == DEFAULT_OUTBOX else ""
    return f"{path} ({default}in the working folder {Path.cwd()})"


def _final_extras(station: Station, undelivered: dict[str, int]) -> dict[str, Any]:
    return dict(**source_extras(station.source), sink_backlog=dict(undelivered),
                evidence_failures=station.evidence.failures if station.evidence else 0)


def _shutdown_delivery(dispatcher: Dispatcher, timeout_s: float) -> tuple[bool, dict[str, int]]:
    """Flush, record what is left, close. Events not delivered stay in the outbox for the next run."""
    try:
        flushed = dispatcher.flush(timeout_s)
        undelivered = {name: int(s["backlog"]) for name, s in dispatcher.stats().items() if s["backlog"]}
    finally:
        dispatcher.close(timeout_s=1.0)
    return flushed, undelivered


def _reloader(options: WatchOptions, runs: list[_CameraRun], names: Mapping[int, str], model_names: Mapping[int, str],
              anomaly: Any, conf_floor: float | None, several: bool, model_from_file: bool) -> StationReloader:
    """watch --reload-on-change: the model and thresholds files rebuilt exactly as this function built them."""
    def build_detectors(rules: list[RejectRules]) -> list[Detector]:
        if not several:
            return [make_detector(runs[0].options, rules[0], conf_floor)]
        floor = min(r.min_threshold() for r in rules)
        shared = SharedDetector(make_detector(replace(options, tile=None), rules[0],
                                              floor if conf_floor is None else min(floor, conf_floor)),
                                batch_wait_ms=BATCH_WAIT_MS)
        return [shared if run.options.tile is None else
                TiledDetector(shared, (run.options.tile, run.options.tile), overlap=run.options.tile_overlap)
                for run in runs]

    def rules_maker(index: int, run: _CameraRun) -> Callable[[Path], RejectRules]:
        def make(path: Path) -> RejectRules:
            rules = build_rules(run.options, read_thresholds_yaml(path))
            if anomaly is not None and index == 0:
                rules = with_anomaly_rule(rules, anomaly)
            rules.check_classes(names)
            return rules
        return make

    def count_failure() -> None:
        for run in runs:
            run.station.board.add("reload_failures")

    cameras = [CameraReload(run.name, run.station.swaps, run.options.thresholds, run.rules, rules_maker(i, run))
               for i, run in enumerate(runs)]
    return StationReloader(cameras, model=options.model, model_names=model_names,
                           build_detectors=build_detectors if model_from_file and options.model is not None else None,
                           on_failure=count_failure)
