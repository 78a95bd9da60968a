"""``watch --reload-on-change``: a running station switches to a changed model or thresholds file between frames,
records in every event which model and thresholds decided, and ignores a file that cannot be loaded."""

from __future__ import annotations

import json
import logging
import shutil
import threading
from pathlib import Path

import numpy as np
import yaml

from tests.builders import detections, write_video
from tests.conftest import DEMO_MODEL
from tests.helpers import wait_until
from yolodefect.inference.model_file import read_model_file
from yolodefect.stream.live import LiveView
from yolodefect.stream.options import WatchOptions, load_station_config
from yolodefect.stream.reload import FileWatcher
from yolodefect.stream.stats import WatchStats, WatchSummary
from yolodefect.stream.watch import watch

NAMES = {0: "scratch", 1: "dent"}
RELOAD_WAIT_S = 15.0  # one look a second, one more for the file to hold still, then the load: a few seconds


class ScratchEverywhere:
    """Sees a scratch at confidence 0.6 on every frame: threshold 0.5 rejects each part, 0.7 passes it."""

    class_names = NAMES

    def __call__(self, image: np.ndarray):
        return detections([[4, 4, 20, 20]], [0.6], [0])


def read_events(path: Path) -> list[dict]:
    """The events written so far (a line the sink is still writing is left for the next look)."""
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            break
        if event["decision"] in ("reject", "pass", "error"):  # part events (not the station's alarms)
            events.append(event)
    return events


def write_thresholds(path: Path, scratch: float, dent: float = 0.9) -> Path:
    path.write_text(yaml.safe_dump({"conf": {"scratch": scratch, "dent": dent}}))
    return path


class RunningStation:
    """``watch`` on an endless video (looped, 20 fps) in a thread, one pass or reject event per frame."""

    def __init__(self, tmp_path: Path, **options):
        self.events_path = tmp_path / "events.jsonl"
        video = write_video(tmp_path / "line.mp4", 10, size_wh=(96, 64),
                            draw=lambda i: np.full((64, 96, 3), 100 + 8 * i, np.uint8))
        self.options = WatchOptions(source=str(video), loop=True, fps_cap=20.0, mode="part", emit_pass=True,
                                    sinks=(str(self.events_path),), outbox=tmp_path / "outbox.sqlite",
                                    reload_on_change=True, **options)
        self.stop = threading.Event()
        self.summary: list[WatchSummary] = []
        self.stats: list[WatchStats] = []
        self.thread: threading.Thread | None = None

    def start(self, **kwargs) -> RunningStation:
        def run() -> None:
            self.summary.append(watch(self.options, stop_event=self.stop, on_stats=self.stats.append, **kwargs))

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        return self

    def events(self) -> list[dict]:
        return read_events(self.events_path)

    def wait_for(self, predicate, what: str, timeout_s: float = RELOAD_WAIT_S) -> None:
        assert wait_until(lambda: predicate(self.events()), timeout_s=timeout_s), f"no event {what} in {timeout_s} s"

    def finish(self) -> WatchSummary:
        self.stop.set()
        self.thread.join(timeout=30)
        assert self.summary, "watch did not return"
        return self.summary[0]


def test_a_running_station_picks_up_changed_thresholds_and_records_them(tmp_path: Path) -> None:
    thresholds = write_thresholds(tmp_path / "thresholds.yaml", 0.5)
    station = RunningStation(tmp_path, thresholds=thresholds).start(detector=ScratchEverywhere())
    try:
        station.wait_for(lambda events: len(events) >= 3, "at the start", timeout_s=10)
        write_thresholds(thresholds, 0.7, 0.8)  # edited in place while the station runs
        station.wait_for(lambda events: events[-1]["thresholds"]["scratch"] == 0.7, "with the new thresholds")
    finally:
        summary = station.finish()
    events = station.events()
    old = {"scratch": 0.5, "dent": 0.9}
    new = {"scratch": 0.7, "dent": 0.8}
    switch = next(i for i, e in enumerate(events) if e["thresholds"] == new)
    assert switch >= 3 and all(e["thresholds"] == old for e in events[:switch])
    assert all(e["thresholds"] == new for e in events[switch:])
    # The part's decision follows the thresholds it records: 0.6 rejects at 0.5 and passes at 0.7.
    assert {e["decision"] for e in events[:switch]} == {"reject"} and {e["decision"] for e in events[switch:]} == {"pass"}
    assert [e["frame_index"] for e in events] == sorted(e["frame_index"] for e in events)  # no frame lost or reordered
    assert summary.stats.model_reloads == 1 and summary.stats.reload_failures == 0


def test_a_broken_thresholds_file_is_ignored_and_the_station_goes_on(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="yolodefect")
    thresholds = write_thresholds(tmp_path / "thresholds.yaml", 0.5)
    station = RunningStation(tmp_path, thresholds=thresholds).start(detector=ScratchEverywhere())
    try:
        station.wait_for(lambda events: len(events) >= 2, "at the start", timeout_s=10)
        thresholds.write_text("conf: {scratch: 0.7, de")  # cut off mid-write, and left so
        assert wait_until(lambda: any("is not used" in r.getMessage() for r in caplog.records), RELOAD_WAIT_S)
        seen = len(station.events())
        station.wait_for(lambda events: len(events) >= seen + 5, "after the broken file")
        assert all(e["thresholds"]["scratch"] == 0.5 and e["decision"] == "reject" for e in station.events())
        # A file that is out of range is refused as well, naming the problem.
        write_thresholds(thresholds, 1.5)
        assert wait_until(lambda: sum("is not used" in r.getMessage() for r in caplog.records) == 2, RELOAD_WAIT_S)
        write_thresholds(thresholds, 0.7)  # the watcher still watches: a good file is taken
        station.wait_for(lambda events: events[-1]["thresholds"]["scratch"] == 0.7, "with the repaired file")
    finally:
        summary = station.finish()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and "is not used" in r.getMessage()]
    assert len(errors) == 2 and f"the new thresholds file {thresholds} is not used" in errors[0].getMessage()
    assert "must be a number in [0, 1], got 1.5" in errors[1].getMessage()
    assert summary.stats.reload_failures == 2 and summary.stats.model_reloads == 1
    assert any(r.getMessage().startswith("reloaded (thresholds file") for r in caplog.records)


def _shy_copy(path: Path) -> Path:
    """The demo checkpoint with every class logit 1 lower: another real model file with the same classes."""
    import torch

    checkpoint = torch.load(DEMO_MODEL, map_location="cpu", weights_only=False)
    for branch in checkpoint["model"].model[-1].cv3:
        branch[-1].bias.data -= 1.0
    checkpoint["ema"] = None
    torch.save(checkpoint, path)
    return path


def test_a_changed_model_file_swaps_the_model_and_a_cut_one_is_ignored(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="yolodefect")
    model = Path(shutil.copy(DEMO_MODEL, tmp_path / "best.pt"))
    old_sha = read_model_file(model).sha256
    promoted = _shy_copy(tmp_path / "promoted.pt")
    new_sha = read_model_file(promoted).sha256
    assert new_sha != old_sha
    station = RunningStation(tmp_path, model=model, imgsz=64, conf=0.3).start()
    try:
        station.wait_for(lambda events: len(events) >= 2, "at the start", timeout_s=30)
        model.write_bytes(DEMO_MODEL.read_bytes()[: DEMO_MODEL.stat().st_size // 2])  # a copy that stopped halfway
        assert wait_until(lambda: any("is not used" in r.getMessage() for r in caplog.records), RELOAD_WAIT_S)
        seen = len(station.events())
        station.wait_for(lambda events: len(events) >= seen + 3, "after the cut model")
        shutil.copy(promoted, tmp_path / "incoming.pt")
        (tmp_path / "incoming.pt").replace(model)  # the way to deploy: a complete file moved into place
        station.wait_for(lambda events: events[-1]["model"]["sha256"] == new_sha, "from the new model", timeout_s=30)
    finally:
        summary = station.finish()
    events = station.events()
    shas = [e["model"]["sha256"] for e in events]
    switch = shas.index(new_sha)
    assert switch >= seen + 3 and set(shas[:switch]) == {old_sha} and set(shas[switch:]) == {new_sha}
    assert all(e["thresholds"]["scratch"] == 0.3 for e in events)
    assert summary.stats.model_reloads == 1 and summary.stats.reload_failures == 1
    assert summary.stats.model["sha256"] == new_sha  # the stats (and the terminal panel) name the running model
    error = next(r.getMessage() for r in caplog.records if "is not used" in r.getMessage())
    assert error.startswith(f"reload on change: the new model file {model} is not used")


def test_file_watcher_waits_for_a_file_to_hold_still_and_skips_same_content(tmp_path: Path) -> None:
    path = tmp_path / "thresholds.yaml"
    write_thresholds(path, 0.5)
    loads: list[str] = []
    watcher = FileWatcher({"t": path}, lambda kind, p: loads.append(p.read_text()), lambda *a: None)
    watcher.check("t")
    assert loads == []  # unchanged
    write_thresholds(path, 0.6)
    watcher.check("t")
    assert loads == []  # just changed: it may still be being written
    watcher.check("t")
    assert loads == [yaml.safe_dump({"conf": {"scratch": 0.6, "dent": 0.9}})]
    path.write_text(path.read_text())  # rewritten with the same content: nothing to reload
    watcher.check("t")
    watcher.check("t")
    assert len(loads) == 1


def test_the_web_status_shows_the_reloaded_model_and_thresholds() -> None:
    live = LiveView(model={"name": "old.pt", "sha256": "a" * 64, "precision": "fp32"}, thresholds={"scratch": 0.5})
    stats = WatchStats(source="line.mp4", mode="part", model={"name": "old.pt"})
    live.add_camera("cam0", "line.mp4", lambda: stats, thresholds={"scratch": 0.5})
    before = live.version
    live.model_changed("cam0", {"name": "new.pt", "sha256": "b" * 64, "precision": "fp32"}, {"epochs": 3},
                       {"scratch": 0.7})
    assert live.version > before
    status = live.status()
    assert status["model"]["name"] == "new.pt" and status["model"]["thresholds"] == {"scratch": 0.7}
    assert status["model"]["card"] == {"epochs": 3} and status["cameras"][0]["thresholds"] == {"scratch": 0.7}


def test_reload_on_change_is_a_station_file_key(tmp_path: Path) -> None:
    config = tmp_path / "station.yaml"
    config.write_text("source: line.mp4\nreload_on_change: true\n")
    assert load_station_config(config).reload_on_change is True
    assert WatchOptions(source="x.mp4").reload_on_change is False
