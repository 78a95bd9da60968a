"""Live numbers of a station run (for the CLI's panel) and the summary it returns at the end."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

import numpy as np

StopReason = Literal["end", "stop", "signal", "max_frames", "window"]


@dataclass(frozen=True)
class WatchStats:
    """A snapshot of a running station; the CLI renders it (frames, fps, latency, drops, rejects, sink backlog)."""

    source: str
    mode: str  # "part" or "track"
    model: dict[str, str]  # name, sha256, precision
    camera: str | None = None  # the camera's name (a station of several cameras; else the source's stem)
    running: bool = True
    elapsed_s: float = 0.0
    frames: int = 0  # processed
    # processed frames per second: over the last few seconds while running; in the final summary,
    # over the frames' own time (first frame taken to last frame done, the shutdown flush excluded)
    fps: float = 0.0
    latency_p50_ms: float | None = None  # capture to decision, last 500 frames
    latency_p95_ms: float | None = None
    # watch --anomaly: frames on which the anomaly model scored parts, and its time on such a frame (last 500)
    anomaly_frames: int = 0
    anomaly_p50_ms: float | None = None
    dropped_frames: int = 0  # live source frames replaced by newer ones (we were slower than the camera)
    skipped_frames: int = 0  # video frames that could not be decoded (the file went on after them)
    unreadable_parts: int = 0  # part images that could not be read or decoded: each got an 'error' event
    truncated: bool = False  # the video file ended before the frame count its container promised
    truncation: str | None = None  # that ending in words: "video X ended early at frame N of M (truncated file?)"
    reconnects: int = 0  # live: successful reopens after an outage
    open_attempts: int = 0  # live: times the capture was opened, the first included
    open_failures: int = 0  # live: opens that failed, raised or stalled
    late_frames: int = 0  # over max_latency_ms
    failed_frames: int = 0  # processing raised
    parts: int = 0  # part decisions (reject + pass)
    belt_frames: int = 0  # track mode: frames taken to learn the empty belt (not inspected)
    open_parts: int = 0  # track mode: parts in view, not decided yet
    off_part_detections: int = 0  # track mode: defect detections outside every part (belt): counted, never emitted
    discarded_regions: int = 0  # track mode: regions that came and went without reaching the line (not parts)
    rejects: int = 0
    rejects_by_class: dict[str, int] = field(default_factory=dict)  # reject events naming the class
    passes: int = 0
    errors: int = 0  # 'error' events
    events: int = 0  # events handed to the outbox
    not_persisted_events: int = 0  # of those, the ones the outbox could not store (sent to the sinks directly)
    sink_backlog: dict[str, int] = field(default_factory=dict)  # undelivered events per sink
    sink_errors: dict[str, str | None] = field(default_factory=dict)  # last delivery error per sink
    evidence_failures: int = 0
    # watch --evidence-cam: heatmaps saved with reject evidence, their cost (heatmap + overlay, last 500) and failures
    evidence_cams: int = 0
    evidence_cam_p50_ms: float | None = None
    evidence_cam_failures: int = 0
    # watch --review: items saved to the review queue; not saved because over review_max_per_min, because the
    # writer was behind (its queue full), because the disk refused them; and the oldest removed at review_max_items
    review_saved: int = 0
    review_rate_limited: int = 0
    review_dropped: int = 0
    review_failures: int = 0
    review_removed: int = 0
    # Station alarms (issue #17): drift alarms and camera faults raised, and the alarms active now (kind: message;
    # "drift", "camera_fault:black|saturated|frozen"; several cameras: "camera/kind")
    drift_alarms: int = 0
    camera_faults: int = 0
    active_alarms: dict[str, str] = field(default_factory=dict)
    # watch --reload-on-change: new models or thresholds this camera switched to, and changed files refused
    # (incomplete or invalid: the running ones stayed)
    model_reloads: int = 0
    reload_failures: int = 0
    model_card: dict[str, Any] | None = None
    seconds_since_frame: float | None = None  # since the last frame was finished; None before the first

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class WatchSummary:
    """What a finished run did. ``undelivered`` is what stays in the outbox for the next run."""

    stats: WatchStats
    stopped_by: StopReason
    flushed: bool
    undelivered: dict[str, int]
    # Events the outbox could not store (disk full): sent to the sinks directly and written to stderr,
    # but not durable. Non-empty means the CLI exits 1.
    not_persisted_event_ids: tuple[str, ...] = ()
    # A station of several cameras: each camera's own summary (``stats`` then sums them); empty for one camera.
    cameras: tuple[WatchSummary, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {**self.stats.to_dict(), "stopped_by": self.stopped_by, "flushed": self.flushed,
                "undelivered": dict(self.undelivered), "not_persisted_event_ids": list(self.not_persisted_event_ids),
                **({"cameras": {c.stats.camera or c.stats.source: c.to_dict() for c in self.cameras}}
                   if self.cameras else {})}


class StatsBoard:
    """Counters written by the frame loop and read by the stats ticker, behind one lock."""

    def __init__(self, base: WatchStats, *, latency_window: int = 500, fps_window_s: float = 3.0):
        self._lock = threading.Lock()
        self._base = base
        self._counts: dict[str, int] = {}
        self._by_class: dict[str, int] = {}
        self._alarms: dict[str, str] = {}
        self._latencies: deque[float] = deque(maxlen=latency_window)
        self._frame_times: deque[float] = deque(maxlen=1000)
        self._latency_window = latency_window
        self._stage_ms: dict[str, deque[float]] = {}  # per-frame time of an optional stage (e.g. anomaly)
        self._fps_window_s = fps_window_s
        self._started = time.monotonic()
        # The frames' own time span, for the final fps: a long flush at shutdown must not dilute it.
        self._first_frame_start: float | None = None
        self._last_frame_done: float | None = None

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + amount

    def rebase(self, **changes: Any) -> None:
        """Change what the snapshots say beside the counters (e.g. ``model`` after a reload)."""
        with self._lock:
            self._base = replace(self._base, **changes)

    def add_classes(self, names: set[str]) -> None:
        """One reject event naming each of ``names`` (a part rejected for two classes counts once in each)."""
        with self._lock:
            for name in names:
                self._by_class[name] = self._by_class.get(name, 0) + 1

    def frame_done(self, latency_ms: float) -> None:
        """Count a processed frame; ``latency_ms`` runs from its capture (for files: when it was taken) to now."""
        now = time.monotonic()
        with self._lock:
            self._counts["frames"] = self._counts.get("frames", 0) + 1
            self._latencies.append(latency_ms)
            self._frame_times.append(now)
            if self._first_frame_start is None:
                self._first_frame_start = now - latency_ms / 1000.0
            self._last_frame_done = now

    def stage_done(self, name: str, elapsed_ms: float) -> None:
        """One frame's time in stage ``name``; the snapshot gives its median as ``{name}_p50_ms``."""
        with self._lock:
            self._stage_ms.setdefault(name, deque(maxlen=self._latency_window)).append(elapsed_ms)

    def set_alarm(self, kind: str, message: str | None) -> None:
        """An alarm active now (``message``), or cleared (None)."""
        with self._lock:
            if message is None:
                self._alarms.pop(kind, None)
            else:
                self._alarms[kind] = message

    def set(self, name: str, value: int) -> None:
        with self._lock:
            self._counts[name] = value

    def count(self, name: str) -> int:
        with self._lock:
            return self._counts.get(name, 0)

    def fps(self) -> float:
        with self._lock:
            return self._fps_locked(time.monotonic())

    def _fps_locked(self, now: float) -> float:
        recent = [t for t in self._frame_times if now - t <= self._fps_window_s]
        if len(recent) < 2:
            return 0.0
        span = max(now - recent[0], 1e-6)
        return len(recent) / span

    def _run_fps_locked(self) -> float:
        if self._first_frame_start is None or self._last_frame_done is None:
            return 0.0
        return self._counts.get("frames", 0) / max(self._last_frame_done - self._first_frame_start, 1e-6)

    def snapshot(self, *, running: bool = True, **extra: Any) -> WatchStats:
        """The stats now; ``running=False`` (the final summary) gives the fps of the whole run instead of the recent one."""
        now = time.monotonic()
        with self._lock:
            latencies = np.asarray(self._latencies, dtype=np.float64)
            counts = dict(self._counts)
            fps = self._fps_locked(now) if running else self._run_fps_locked()
            stages = {f"{name}_p50_ms": float(np.median(times)) for name, times in self._stage_ms.items() if times}
            by_class = dict(self._by_class)
            alarms = dict(self._alarms)
            since_frame = None if self._last_frame_done is None else now - self._last_frame_done
        p50, p95 = (float(v) for v in np.percentile(latencies, [50, 95])) if latencies.size else (None, None)
        return replace(self._base, running=running, elapsed_s=now - self._started, fps=fps,
                       latency_p50_ms=p50, latency_p95_ms=p95, rejects_by_class=by_class, active_alarms=alarms,
                       seconds_since_frame=since_frame, **stages, **counts, **extra)


class StatsTicker:
    """Calls ``callback(snapshot())`` every ``interval_s`` on its own thread, so the panel moves during outages too."""

    def __init__(self, interval_s: float, snapshot: Callable[[], WatchStats], callback: Callable[[WatchStats], None],
                 on_error: Callable[[Exception], None]):
        self._interval_s = interval_s
        self._snapshot = snapshot
        self._callback = callback
        self._on_error = on_error
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watch-stats", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._callback(self._snapshot())
            except Exception as exc:  # a rendering bug must not stop inspection
                self._on_error(exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)


def combine_stats(stats: list[WatchStats], running: bool = True) -> WatchStats:
    """The station's numbers over its cameras: counters summed, latencies the worst camera's."""
    first = stats[0]
    summed: dict[str, Any] = {}
    for f in fields(WatchStats):
        values = [getattr(s, f.name) for s in stats]
        if f.type in ("int", "float") and f.name not in ("elapsed_s",):
            summed[f.name] = sum(values)
    by_class: dict[str, int] = {}
    for s in stats:
        for name, count in s.rejects_by_class.items():
            by_class[name] = by_class.get(name, 0) + count
    worst = {name: max((getattr(s, name) for s in stats if getattr(s, name) is not None), default=None)
             for name in ("latency_p50_ms", "latency_p95_ms", "anomaly_p50_ms", "evidence_cam_p50_ms")}
    since = [s.seconds_since_frame for s in stats if s.seconds_since_frame is not None]
    backlog: dict[str, int] = {}
    errors: dict[str, str | None] = {}
    for s in stats:
        backlog.update(s.sink_backlog)
        errors.update(s.sink_errors)
    alarms = {f"{s.camera or s.source}/{kind}": message for s in stats for kind, message in s.active_alarms.items()}
    return replace(first, **summed, **worst, source=", ".join(s.source for s in stats), camera=None, running=running,
                   active_alarms=alarms,
                   elapsed_s=max(s.elapsed_s for s in stats), rejects_by_class=by_class,
                   truncated=any(s.truncated for s in stats),
                   truncation="; ".join(s.truncation for s in stats if s.truncation) or None,
                   seconds_since_frame=max(since) if since else None, sink_backlog=backlog, sink_errors=errors)
