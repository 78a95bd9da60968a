"""The station's numbers for Prometheus (``GET /metrics``).

Counters and gauges are read from :meth:`LiveView.status` when Prometheus scrapes, so the detection path
pays nothing for them. Only the two latency histograms are fed as things happen (``LiveView.observe``),
because a distribution cannot be rebuilt from a snapshot; one observation is a few additions.

Each :class:`StationMetrics` has its own registry: nothing goes into prometheus_client's global one, so
two stations (or tests) in one process never collide.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from yolodefect.stream.live import LiveView

# 1 ms .. 5 s: a model call on a GPU takes a few ms, on a CPU tens to hundreds; an event's capture-to-outbox
# time adds tracking and evidence writing. Anything beyond 5 s is a stall, counted in +Inf.
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# (metric name, WatchStats/status field, help) of the per-camera counters.
_CAMERA_COUNTERS = (
    ("yolodefect_frames_total", "frames", "Frames processed."),
    ("yolodefect_parts_total", "parts", "Part decisions (reject + pass)."),
    ("yolodefect_rejects_total", "rejects", "Reject events."),
    ("yolodefect_passes_total", "passes", "Pass events."),
    ("yolodefect_errors_total", "errors", "Error events (the station could not inspect)."),
    ("yolodefect_events_total", "events", "Events handed to the outbox."),
    ("yolodefect_dropped_frames_total", "dropped_frames",
     "Live frames replaced by newer ones because the station was slower than the camera."),
)


class StationMetrics:
    """Prometheus metrics of one station's :class:`LiveView`: ``render()`` is the body of ``GET /metrics``."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, view: LiveView):
        self.registry = CollectorRegistry()
        self.registry.register(_StatusCollector(view))
        self.model_latency = Histogram(
            "yolodefect_model_latency_seconds", "Time of one model call.", ["camera"],
            buckets=LATENCY_BUCKETS_S, registry=self.registry)
        self.event_latency = Histogram(
            "yolodefect_event_latency_seconds", "Time from a part's frame capture to its event in the outbox.",
            ["camera"], buckets=LATENCY_BUCKETS_S, registry=self.registry)
        view.add_observer(self._observe)

    def _observe(self, kind: str, camera: str, milliseconds: float) -> None:
        histogram = {"model": self.model_latency, "event": self.event_latency}.get(kind)
        if histogram is not None:  # a kind this version does not chart is not an error on the detection path
            histogram.labels(camera=camera).observe(milliseconds / 1000.0)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StatusCollector(Collector):
    """Counters and gauges from one ``view.status()`` per scrape."""

    def __init__(self, view: LiveView):
        self._view = view

    def describe(self) -> list[Metric]:
        return []  # registering must not read the station; names cannot clash in a registry of our own

    def collect(self) -> Iterator[Metric]:
        status = self._view.status()
        cameras: list[dict[str, Any]] = status["cameras"]
        for name, field, help_text in _CAMERA_COUNTERS:
            family = CounterMetricFamily(name, help_text, labels=["camera"])
            for camera in cameras:
                family.add_metric([camera["name"]], camera[field])
            yield family

        by_class = CounterMetricFamily("yolodefect_rejected_class_total",
                                       "Reject events naming the class (a reject naming two classes counts in each).",
                                       labels=["camera", "class"])
        for camera in cameras:
            for class_name, count in sorted(camera["rejects_by_class"].items()):
                by_class.add_metric([camera["name"], class_name], count)
        yield by_class

        fps = GaugeMetricFamily("yolodefect_fps", "Frames processed per second, over the last few seconds.",
                                labels=["camera"])
        for camera in cameras:
            fps.add_metric([camera["name"]], camera["fps"])
        yield fps

        sinks: list[dict[str, Any]] = status["sinks"]
        failures = CounterMetricFamily("yolodefect_sink_failures_total", "Failed delivery attempts.",
                                       labels=["sink"])
        backlog = GaugeMetricFamily("yolodefect_outbox_backlog", "Events in the outbox not yet delivered to the sink.",
                                    labels=["sink"])
        up = GaugeMetricFamily("yolodefect_sink_up", "1 while the sink takes events, 0 while it is down.",
                               labels=["sink"])
        for sink in sinks:
            labels = [sink["name"]]  # a sink several cameras send to is one queue: one series
            failures.add_metric(labels, sink["failed_attempts"])
            backlog.add_metric(labels, sink["backlog"])
            up.add_metric(labels, 1 if sink["state"] == "connected" else 0)
        yield from (failures, backlog, up)

        yield GaugeMetricFamily("yolodefect_healthy", "1 while /healthz says ok, else 0.",
                                value=1 if status["health"]["ok"] else 0)
