"""GET /metrics: the station's counters as Prometheus reads them, checked value by value after parsing."""

from __future__ import annotations

from typing import Any

import prometheus_client
from prometheus_client.parser import text_string_to_metric_families

from yolodefect.stream.live import LiveView
from yolodefect.stream.metrics import LATENCY_BUCKETS_S, StationMetrics
from yolodefect.stream.stats import StatsBoard, WatchStats

MODEL = {"name": "best.pt", "sha256": "0" * 64, "precision": "fp16"}
DOWN_SINCE = "2024-05-01T12:00:00.000Z"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def board(source: str) -> StatsBoard:
    return StatsBoard(WatchStats(source=source, mode="part", model=MODEL))


def samples(metrics: StationMetrics) -> Samples:
    """Every sample of a scrape, keyed by (sample name, labels); fails on text Prometheus could not parse."""
    found: Samples = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in found, f"{key} twice"
            found[key] = sample.value
    return found


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def station() -> tuple[LiveView, StatsBoard, StatsBoard, dict[str, dict[str, Any]]]:
    """Camera a (one 50 ms frame, rejects naming classes, two sinks, one down) and camera b (no frame, no sinks)."""
    view = LiveView(station="line 1", model=MODEL, stall_s=3600.0)
    a, b = board("a.avi"), board("b.avi")
    a.frame_done(50.0)  # one frame that took 50 ms: the run's fps is exactly 20
    a.add("parts", 3)
    a.add("rejects", 2)
    a.add_classes({"scratch", "dent"})  # one reject naming two classes
    a.add_classes({"scratch"})
    a.add("passes", 1)
    a.add("errors", 1)
    a.add("events", 4)
    a.add("dropped_frames", 5)
    b.add("parts", 2)
    b.add("passes", 2)
    b.add("events", 2)
    sinks_a = {
        "mqtt": {"backlog": 7, "delivered": 3, "failed_attempts": 4, "last_error": "connection refused",
                 "down_since": DOWN_SINCE},
        "file": {"backlog": 0, "delivered": 10, "failed_attempts": 0, "last_error": None, "down_since": None},
    }
    view.add_camera("a", "a.avi", lambda: a.snapshot(running=False), sinks=lambda: sinks_a)
    view.add_camera("b", "b.avi", lambda: b.snapshot(running=False))
    return view, a, b, sinks_a


def test_counters_and_gauges_are_the_stations_numbers() -> None:
    view, _, _, _ = station()
    found = samples(StationMetrics(view))

    expected_counters = {
        "frames": (1, 0), "parts": (3, 2), "rejects": (2, 0), "passes": (1, 2), "errors": (1, 0),
        "events": (4, 2), "dropped_frames": (5, 0),
    }
    for field, (in_a, in_b) in expected_counters.items():
        assert value(found, f"yolodefect_{field}_total", camera="a") == in_a, field
        assert value(found, f"yolodefect_{field}_total", camera="b") == in_b, field
    # A reject naming two classes counts once in each; a camera without rejects has no class series.
    class_series = {dict(labels)["class"]: v for (name, labels), v in found.items()
                    if name == "yolodefect_rejected_class_total"}
    assert class_series == {"scratch": 2, "dent": 1}
    assert value(found, "yolodefect_rejected_class_total", camera="a", **{"class": "scratch"}) == 2

    assert value(found, "yolodefect_sink_failures_total", sink="mqtt") == 4
    assert value(found, "yolodefect_sink_failures_total", sink="file") == 0
    assert value(found, "yolodefect_outbox_backlog", sink="mqtt") == 7
    assert value(found, "yolodefect_outbox_backlog", sink="file") == 0
    assert value(found, "yolodefect_sink_up", sink="mqtt") == 0
    assert value(found, "yolodefect_sink_up", sink="file") == 1
    # One series per sink (camera b sends nowhere; a sink is one queue however many cameras feed it).
    assert sorted(dict(labels)["sink"] for (name, labels) in found if name == "yolodefect_sink_up") == ["file", "mqtt"]

    assert value(found, "yolodefect_fps", camera="a") == 20.0
    assert value(found, "yolodefect_fps", camera="b") == 0.0
    assert value(found, "yolodefect_healthy") == 1


def test_numbers_are_read_when_scraped() -> None:
    view, a, _, sinks_a = station()
    metrics = StationMetrics(view)
    samples(metrics)
    a.add("rejects", 3)
    a.add_classes({"dent"})
    sinks_a["mqtt"].update(backlog=0, last_error=None, down_since=None)
    view.stopped()
    found = samples(metrics)
    assert value(found, "yolodefect_rejects_total", camera="a") == 5
    assert value(found, "yolodefect_rejected_class_total", camera="a", **{"class": "dent"}) == 2
    assert value(found, "yolodefect_outbox_backlog", sink="mqtt") == 0
    assert value(found, "yolodefect_sink_up", sink="mqtt") == 1
    assert value(found, "yolodefect_healthy") == 0  # the station has stopped


def test_latency_histograms_take_milliseconds_as_seconds() -> None:
    view, _, _, _ = station()
    metrics = StationMetrics(view)
    view.observe("model", "a", 3.0)
    view.observe("model", "a", 30.0)
    view.observe("event", "b", 1500.0)
    view.observe("event", "b", 9000.0)  # beyond the last bucket: only in +Inf
    view.observe("anomaly", "a", 1.0)  # a kind not charted: ignored
    found = samples(metrics)

    def buckets(name: str, camera: str) -> dict[str, float]:
        return {dict(labels)["le"]: v for (sample, labels), v in found.items()
                if sample == f"{name}_bucket" and dict(labels)["camera"] == camera}

    model_a = buckets("yolodefect_model_latency_seconds", "a")
    assert list(model_a) == [*(prometheus_client.utils.floatToGoString(b) for b in LATENCY_BUCKETS_S), "+Inf"]
    assert model_a["0.0025"] == 0 and model_a["0.005"] == 1 and model_a["0.025"] == 1 and model_a["0.05"] == 2
    assert model_a["+Inf"] == 2
    assert value(found, "yolodefect_model_latency_seconds_count", camera="a") == 2
    assert abs(value(found, "yolodefect_model_latency_seconds_sum", camera="a") - 0.033) < 1e-12

    event_b = buckets("yolodefect_event_latency_seconds", "b")
    assert event_b["1.0"] == 0 and event_b["2.5"] == 1 and event_b["5.0"] == 1 and event_b["+Inf"] == 2
    assert value(found, "yolodefect_event_latency_seconds_sum", camera="b") == 10.5
    assert buckets("yolodefect_event_latency_seconds", "a") == {}
    assert buckets("yolodefect_model_latency_seconds", "b") == {}


def test_each_station_has_its_own_registry() -> None:
    first, second = StationMetrics(station()[0]), StationMetrics(station()[0])  # no "duplicated timeseries"
    assert first.registry is not second.registry
    assert b"yolodefect_" not in prometheus_client.generate_latest(prometheus_client.REGISTRY)
    assert first.content_type == prometheus_client.CONTENT_TYPE_LATEST


def test_a_station_without_cameras_is_unhealthy_and_still_scrapes() -> None:
    found = samples(StationMetrics(LiveView()))
    assert value(found, "yolodefect_healthy") == 0
    assert not any(name == "yolodefect_frames_total" for name, _ in found)
