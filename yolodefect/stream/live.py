"""What a running station shows to the outside: the web page, ``/api/status``, ``/metrics`` and ``/healthz``.

The station's detection threads hand things over by reference and never wait for a reader: a frame
is published as a closure that draws it (``publish_frame`` costs one assignment under a lock), and
the web server's threads draw and JPEG-encode the latest frame of a camera only when a client asks,
at most once per published frame whatever the number of clients. Counters are read from each
camera's :class:`~yolodefect.stream.stats.StatsBoard` snapshot when someone asks for them.

One :class:`LiveView` per station run; several cameras share it (each adds itself with
:meth:`LiveView.add_camera`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from yolodefect.stream.events import utc_now_iso
from yolodefect.stream.stats import WatchStats, combine_stats

_TOTALS = ("frames", "parts", "rejects", "passes", "errors", "dropped_frames", "events")

# A camera that has not finished a frame for this long is stalled: /healthz says 503 and names it.
DEFAULT_STALL_S = 10.0

ModelObserver = Callable[[str, str, float], None]  # (kind "model" | "event", camera, milliseconds)


class EventStoreLike(Protocol):
    def add(self, event: Mapping[str, Any]) -> None: ...

    def get(self, event_id: str) -> dict[str, Any] | None: ...


@dataclass
class _Camera:
    name: str
    source: str
    stats: Callable[[], WatchStats]
    sinks: Callable[[], dict[str, dict[str, Any]]] | None = None
    outbox_failure: Callable[[], str | None] | None = None
    thresholds: dict[str, float] | None = None
    draw: Callable[[], np.ndarray] | None = None
    sequence: int = 0  # of the latest published frame
    jpeg: tuple[int, bytes] | None = None  # (sequence, bytes) of the latest encoded frame
    encode_lock: threading.Lock = field(default_factory=threading.Lock)


class LiveView:
    """The hand-over point between a running station and whoever watches it (thread-safe)."""

    def __init__(self, *, station: str = "yolodefect", model: Mapping[str, Any] | None = None,
                 thresholds: Mapping[str, float] | None = None, model_card: Mapping[str, Any] | None = None,
                 evidence_dir: Path | None = None, events: EventStoreLike | None = None,
                 stall_s: float = DEFAULT_STALL_S, jpeg_quality: int = 80):
        self.station = station
        self.model = dict(model or {})
        self.thresholds = dict(thresholds or {})
        self.model_card = dict(model_card) if model_card else None
        self.evidence_dir = evidence_dir
        self.events = events
        self.stall_s = stall_s
        self.jpeg_quality = jpeg_quality
        self.started_at = utc_now_iso()
        self._started = time.monotonic()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._cameras: dict[str, _Camera] = {}
        self._version = 0  # bumped by every event and alarm change: what live pages wait on
        self._alarms: dict[tuple[str, str | None], dict[str, Any]] = {}
        self._observers: list[ModelObserver] = []
        self._running = True

    # -- the station's side (detection threads) -------------------------------------------------

    def add_camera(self, name: str, source: str, stats: Callable[[], WatchStats], *,
                   sinks: Callable[[], dict[str, dict[str, Any]]] | None = None,
                   outbox_failure: Callable[[], str | None] | None = None,
                   thresholds: Mapping[str, float] | None = None) -> None:
        """A camera of the station; ``thresholds`` are its own (cameras may have their own thresholds file)."""
        with self._lock:
            if name in self._cameras:
                raise ValueError(f"camera {name!r} is already in this station; camera names must differ")
            self._cameras[name] = _Camera(name, source, stats, sinks, outbox_failure,
                                          thresholds=dict(thresholds) if thresholds is not None else None)
            self._version += 1
            self._changed.notify_all()

    def model_changed(self, camera: str, model: Mapping[str, Any], card: Mapping[str, Any] | None,
                      thresholds: Mapping[str, float]) -> None:
        """A camera reloaded its model and/or thresholds (watch --reload-on-change): the status shows the new ones."""
        with self._lock:
            self.model = dict(model)
            if card is not None:
                self.model_card = dict(card)
            if camera in self._cameras:
                self._cameras[camera].thresholds = dict(thresholds)
            if len(self._cameras) <= 1:
                self.thresholds = dict(thresholds)
            self._version += 1
            self._changed.notify_all()

    def publish_frame(self, camera: str, draw: Callable[[], np.ndarray]) -> None:
        """The latest frame of ``camera``, as a closure that returns its annotated BGR image (called lazily,
        on a reader's thread). O(1): this is on the detection path."""
        with self._lock:
            feed = self._cameras[camera]
            feed.draw = draw
            feed.sequence += 1

    def observe(self, kind: str, camera: str, milliseconds: float) -> None:
        """One model call (``kind="model"``) or one event's capture-to-outbox latency (``"event"``)."""
        for observer in self._observers:
            observer(kind, camera, milliseconds)

    def event_added(self, event: Mapping[str, Any]) -> None:
        """An event the station handed to its outbox: kept in the event store and announced to live pages."""
        if self.events is not None:
            self.events.add(event)
        with self._lock:
            self._version += 1
            self._changed.notify_all()

    def set_alarm(self, kind: str, camera: str | None, message: str) -> None:
        """Raise (or update) an alarm shown on the page and in /api/status until :meth:`clear_alarm`."""
        with self._lock:
            key = (kind, camera)
            since = self._alarms[key]["since"] if key in self._alarms else utc_now_iso()
            self._alarms[key] = {"kind": kind, "camera": camera, "message": message, "since": since}
            self._version += 1
            self._changed.notify_all()

    def clear_alarm(self, kind: str, camera: str | None) -> None:
        with self._lock:
            if self._alarms.pop((kind, camera), None) is not None:
                self._version += 1
                self._changed.notify_all()

    def stopped(self) -> None:
        with self._lock:
            self._running = False
            self._version += 1
            self._changed.notify_all()

    # -- the readers' side (web server threads) ------------------------------------------------

    def add_observer(self, observer: ModelObserver) -> None:
        """``observer(kind, camera, milliseconds)`` for each :meth:`observe` (Prometheus histograms)."""
        self._observers.append(observer)

    @property
    def version(self) -> int:
        with self._lock:
            return self._version

    def wait_change(self, version: int, timeout_s: float) -> int:
        """Block until the version differs from ``version`` or ``timeout_s`` passed; returns the version now."""
        with self._changed:
            self._changed.wait_for(lambda: self._version != version, timeout=timeout_s)
            return self._version

    def cameras(self) -> list[str]:
        with self._lock:
            return list(self._cameras)

    def latest_jpeg(self, camera: str) -> tuple[int, bytes] | None:
        """(sequence, JPEG bytes) of ``camera``'s latest frame; None before its first frame or for an unknown camera.
        Drawn and encoded at most once per published frame, whatever the number of readers."""
        with self._lock:
            feed = self._cameras.get(camera)
            if feed is None or feed.draw is None:
                return None
            sequence, draw = feed.sequence, feed.draw
        with feed.encode_lock:  # readers of the same frame wait for one encoding instead of each doing it
            if feed.jpeg is not None and feed.jpeg[0] == sequence:
                return feed.jpeg
            ok, buffer = cv2.imencode(".jpg", draw(), [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
            if not ok:
                return feed.jpeg
            feed.jpeg = (sequence, buffer.tobytes())
            return feed.jpeg

    def alarms(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(a) for a in self._alarms.values()]

    def camera_stats(self) -> dict[str, WatchStats]:
        with self._lock:
            cameras = list(self._cameras.values())
        return {c.name: c.stats() for c in cameras}

    def sink_states(self) -> list[dict[str, Any]]:
        """Per sink (once, however many cameras send to it): the cameras sending to it, state ("connected" |
        "down"), down_since, backlog, delivered, failed_attempts, last_error."""
        with self._lock:
            cameras = list(self._cameras.values())
        states: dict[str, dict[str, Any]] = {}
        for camera in cameras:
            if camera.sinks is None:
                continue
            for name, sink in camera.sinks().items():
                if name in states:
                    states[name]["cameras"].append(camera.name)
                    continue
                problem = sink.get("last_error") or sink.get("connection_error")
                states[name] = {"name": name, "cameras": [camera.name], "state": "down" if problem else "connected",
                                "down_since": sink.get("down_since"), "backlog": int(sink.get("backlog", 0)),
                                "delivered": int(sink.get("delivered", 0)),
                                "failed_attempts": int(sink.get("failed_attempts", 0)), "last_error": problem}
        return list(states.values())

    def health(self, camera_stats: Mapping[str, WatchStats] | None = None) -> tuple[bool, str | None]:
        """(ok, reason): ok while every camera finishes frames (within ``stall_s``) and every outbox stores events.
        ``camera_stats``: the cameras' stats when the caller has just taken them (a snapshot is not free)."""
        reasons = []
        with self._lock:
            cameras = list(self._cameras.values())
            running = self._running
        if not running:
            reasons.append("the station has stopped")
        for camera in cameras:
            stats = (camera_stats or {}).get(camera.name) or camera.stats()
            age = stats.seconds_since_frame
            if age is None:
                age = time.monotonic() - self._started
            if running and age > self.stall_s:
                reasons.append(f"camera {camera.name}: no frame for {age:.0f} s (source {camera.source})")
            failure = camera.outbox_failure() if camera.outbox_failure is not None else None
            if failure:
                reasons.append(f"camera {camera.name}: the outbox does not store events: {failure}")
        if not cameras:
            reasons.append("no camera")
        return (not reasons, "; ".join(reasons) or None)

    def status(self) -> dict[str, Any]:
        """The JSON of ``GET /api/status`` (see the README for its fields)."""
        per_camera = self.camera_stats()
        with self._lock:
            sources = {name: c.source for name, c in self._cameras.items()}
            thresholds = {name: c.thresholds for name, c in self._cameras.items()}
            running, version = self._running, self._version
        cameras = [{**_camera_status(name, sources[name], stats), "thresholds": thresholds[name]}
                   for name, stats in per_camera.items()]
        # The station's numbers are the cameras' summed, as the watch summary sums them.
        combined = combine_stats(list(per_camera.values())) if per_camera else None
        totals: dict[str, Any] = {key: getattr(combined, key) if combined else 0 for key in _TOTALS}
        totals["rejects_by_class"] = dict(combined.rejects_by_class) if combined else {}
        ok, reason = self.health(per_camera)
        return {
            "station": {"name": self.station, "started_at": self.started_at, "running": running,
                        "uptime_s": round(time.monotonic() - self._started, 1)},
            "model": {**self.model, "thresholds": dict(self.thresholds), "card": self.model_card},
            "cameras": cameras,
            "totals": totals,
            "sinks": self.sink_states(),
            "alarms": self.alarms(),
            "health": {"ok": ok, "reason": reason},
            "version": version,
        }

    def evidence_file(self, event_id: str, kind: str) -> Path | None:
        """The evidence image ``kind`` of a stored event, only if it lies inside the station's evidence folder.
        Nothing from a request becomes a path: the event id is looked up and its recorded path checked."""
        if self.events is None or self.evidence_dir is None or kind not in ("raw", "annotated", "cam"):
            return None
        event = self.events.get(event_id)
        if event is None:
            return None
        recorded = (event.get("snapshot_paths") or {}).get(kind)
        if not recorded:
            return None
        root = self.evidence_dir.resolve()
        path = Path(recorded).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            return None
        return path


def _camera_status(name: str, source: str, stats: WatchStats) -> dict[str, Any]:
    return {"name": name, "source": source, "mode": stats.mode, "running": stats.running,
            "frames": stats.frames, "fps": round(stats.fps, 2), "latency_p50_ms": stats.latency_p50_ms,
            "latency_p95_ms": stats.latency_p95_ms, "dropped_frames": stats.dropped_frames,
            "seconds_since_frame": stats.seconds_since_frame, "parts": stats.parts, "rejects": stats.rejects,
            "passes": stats.passes, "errors": stats.errors, "events": stats.events,
            "rejects_by_class": dict(stats.rejects_by_class), "open_parts": stats.open_parts}
