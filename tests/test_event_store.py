"""The station's recent-events table: what the page and /api/events read, kept across restarts, bounded,
and never a reason for the station to stop (a full disk is tried for real on a small tmpfs)."""

from __future__ import annotations

import logging
import sqlite3
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from yolodefect.errors import UsageError
from yolodefect.stream import event_store as event_store_module
from yolodefect.stream.event_store import EventStore, EventStoreError
from yolodefect.stream.events import to_utc_iso
from tests.builders import make_event
from tests.helpers import fill

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


def event_at(index: int, decision: str = "reject", seconds: float | None = None, **overrides: Any) -> dict[str, Any]:
    """Event ``index`` emitted at T0 + ``seconds`` (default: ``index`` seconds)."""
    event = make_event(index, decision, **overrides)
    event["emitted_at"] = to_utc_iso(T0 + timedelta(seconds=index if seconds is None else seconds))
    return event


def ids(events: list[dict[str, Any]]) -> list[str]:
    return [e["event_id"] for e in events]


def test_list_is_newest_first_and_filters_by_time_and_decision(tmp_path: Path) -> None:
    events = [event_at(i, ("reject", "pass", "error")[i % 3]) for i in range(9)]
    with EventStore(tmp_path / "events.sqlite") as store:
        for e in events:
            store.add(e)
        assert store.list() == events[::-1]  # the whole event back, as it was given
        assert ids(store.list(limit=2)) == ids(events[:-3:-1])
        assert ids(store.list(decision="reject")) == ids([events[6], events[3], events[0]])
        assert ids(store.list(decision="error", limit=1)) == [events[8]["event_id"]]
        # since is exclusive, and the same instant written another way compares the same
        assert ids(store.list(since=events[5]["emitted_at"])) == ids(events[:5:-1])
        assert ids(store.list(since="2024-05-01T12:00:05+00:00")) == ids(events[:5:-1])
        assert ids(store.list(since="2024-05-01T12:00:05Z", decision="pass")) == [events[7]["event_id"]]
        assert store.list(since=events[8]["emitted_at"]) == []
        assert store.get(events[4]["event_id"]) == events[4]
        assert store.get("00000000-0000-0000-0000-000000000000") is None


def test_newest_is_by_emission_time_not_arrival(tmp_path: Path) -> None:
    # Two cameras hand over events slightly out of time order.
    late, early = event_at(1, seconds=2.0), event_at(2, seconds=1.0)
    with EventStore(tmp_path / "events.sqlite") as store:
        store.add(late)
        store.add(early)
        assert ids(store.list()) == [late["event_id"], early["event_id"]]


def test_limit_is_clamped_to_1_through_1000(tmp_path: Path) -> None:
    events = [event_at(i, seconds=i / 1000) for i in range(1005)]
    with EventStore(tmp_path / "events.sqlite") as store:
        for e in events:
            store.add(e)
        assert len(store.list(limit=5000)) == 1000
        assert ids(store.list(limit=0)) == [events[-1]["event_id"]]
        assert ids(store.list(limit=-3)) == [events[-1]["event_id"]]


def test_bad_since_is_a_usage_error(tmp_path: Path) -> None:
    with EventStore(tmp_path / "events.sqlite") as store:
        with pytest.raises(UsageError, match="not an ISO 8601 time"):
            store.list(since="yesterday")
        with pytest.raises(UsageError, match="no time zone"):
            store.list(since="2024-05-01T12:00:00")


def test_adding_an_event_again_keeps_one_copy(tmp_path: Path) -> None:
    event = event_at(1)
    with EventStore(tmp_path / "events.sqlite") as store:
        store.add(event)
        store.add(event)
        assert store.list() == [event]
        assert store.count() == 1 and store.failures == 0


def test_oldest_events_are_trimmed_beyond_max_events_and_counted(tmp_path: Path) -> None:
    events = [event_at(i) for i in range(8)]
    with EventStore(tmp_path / "events.sqlite", max_events=5) as store:
        for e in events:
            store.add(e)
        assert ids(store.list()) == ids(events[:2:-1])
        assert store.trimmed == 3
        assert store.get(events[2]["event_id"]) is None
    # A smaller bound on the next run trims at once.
    with EventStore(tmp_path / "events.sqlite", max_events=2) as store:
        assert ids(store.list()) == ids(events[:5:-1])
        assert store.trimmed == 3


def test_events_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite"
    events = [event_at(i) for i in range(3)]
    store = EventStore(path)
    for e in events:
        store.add(e)
    store.close()
    assert not path.with_name(path.name + "-wal").exists() or path.with_name(path.name + "-wal").stat().st_size == 0
    with EventStore(path) as again:
        assert again.list() == events[::-1]
        again.add(event_at(3))
        assert again.count() == 4


def test_writers_and_readers_on_many_threads_lose_nothing(tmp_path: Path) -> None:
    per_thread, threads = 50, 4
    batches = [[event_at(t * per_thread + i) for i in range(per_thread)] for t in range(threads)]
    errors: list[BaseException] = []

    with EventStore(tmp_path / "events.sqlite") as store:
        stop = threading.Event()

        def write(batch: list[dict[str, Any]]) -> None:
            try:
                for e in batch:
                    store.add(e)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        def read() -> None:
            try:
                while not stop.is_set():
                    store.list(limit=20)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        readers = [threading.Thread(target=read) for _ in range(2)]
        writers = [threading.Thread(target=write, args=(b,)) for b in batches]
        for t in readers + writers:
            t.start()
        for t in writers:
            t.join()
        stop.set()
        for t in readers:
            t.join()
        assert errors == []
        assert sorted(ids(store.list(limit=1000))) == sorted(e["event_id"] for b in batches for e in b)
        assert store.failures == 0


def test_unopenable_paths_are_usage_errors_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=f"event store {tmp_path}.*directory"):
        EventStore(tmp_path)
    not_a_db = tmp_path / "notes.sqlite"
    not_a_db.write_bytes(b"this is not an SQLite file, just text that happens to be long enough" * 20)
    with pytest.raises(UsageError, match=f"{not_a_db}: file is not a database; move the file aside"):
        EventStore(not_a_db)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(UsageError, match=f"event store {a_file / 'events.sqlite'}"):
        EventStore(a_file / "events.sqlite")


def test_reading_a_closed_store_says_so(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "events.sqlite")
    store.close()
    with pytest.raises(EventStoreError, match="closed"):
        store.list()
    store.add(event_at(1))  # a late event from a detection thread: counted, not raised
    assert store.failures == 1


# -- a real full disk -----------------------------------------------------------------------------



def test_a_full_disk_is_logged_and_counted_never_raised(small_disk: Path, caplog: pytest.LogCaptureFixture,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.WARNING, logger=event_store_module.__name__)
    store = EventStore(small_disk / "events.sqlite")
    before = [event_at(i) for i in range(3)]
    for e in before:
        store.add(e)
    filler = fill(small_disk)

    # Each event is larger than anything the store's files could reuse: every write needs new blocks.
    lost = [event_at(10 + i, message="x" * 60_000) for i in range(5)]
    for e in lost:
        store.add(e)  # never raises: the station goes on
    assert store.failures == 5
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings  # rate-limited: one line for five failures
    assert f"cannot store event {lost[0]['event_id']}" in warnings[0] and "full" in warnings[0]
    assert "(1 failed write(s) since the last message, 1 in all)" in warnings[0]
    monkeypatch.setattr(event_store_module, "FAILURE_LOG_INTERVAL_S", 0.0)
    store.add(event_at(20, message="x" * 60_000))
    assert "(5 failed write(s) since the last message, 6 in all)" in caplog.records[-1].getMessage()
    # What was stored before is still read back whole; what failed is not there.
    assert store.list() == before[::-1]

    caplog.clear()
    filler.unlink()
    after = event_at(30)
    store.add(after)
    assert store.failures == 6
    assert [r.getMessage() for r in caplog.records] == [
        f"event store {store.path} stores events again (6 failed write(s) in all)"]
    assert ids(store.list()) == ids([after, *before[::-1]])
    store.close()
    with EventStore(small_disk / "events.sqlite") as again:
        assert ids(again.list()) == ids([after, *before[::-1]])


def test_opening_on_a_full_disk_is_a_usage_error(small_disk: Path) -> None:
    fill(small_disk)
    with pytest.raises(UsageError, match=f"event store {small_disk / 'events.sqlite'}: the disk holding it is full"):
        EventStore(small_disk / "events.sqlite")


def test_sqlite_files_are_wal(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite"
    with EventStore(path) as store:
        store.add(event_at(1))
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
