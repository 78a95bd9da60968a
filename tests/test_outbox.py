"""Outbox: durable across reopen and process death, ordered, acked per sink, thread-safe."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from yolodefect.stream.outbox import Outbox, OutboxError

SINKS = ("file", "mqtt")


def ev(n: int) -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "n": n, "decision": "reject"}


def ids(rows: list[tuple[str, dict[str, Any]]]) -> list[int]:
    return [body["n"] for _, body in rows]


def test_uses_wal_and_full_sync(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", SINKS)
    assert box._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert box._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    box.close()


def test_pending_is_in_insertion_order_per_sink(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", SINKS) as box:
        events = [ev(i) for i in range(10)]
        for e in events:
            box.put(e)
        assert ids(box.pending("file", 100)) == list(range(10))
        assert ids(box.pending("mqtt", 3)) == [0, 1, 2]
        assert box.pending("file", 1)[0] == (events[0]["event_id"], events[0])
        assert box.backlog() == {"file": 10, "mqtt": 10}


def test_event_deleted_only_when_every_sink_acked(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with Outbox(path, SINKS) as box:
        e = ev(0)
        box.put(e)
        box.ack(e["event_id"], "file")
        assert box.backlog() == {"file": 0, "mqtt": 1}
        assert box.pending("file", 10) == []
        assert ids(box.pending("mqtt", 10)) == [0]
        box.ack(e["event_id"], "file")  # idempotent
        box.ack(e["event_id"], "mqtt")
        assert box.backlog() == {"file": 0, "mqtt": 0}
        box.ack(e["event_id"], "mqtt")  # ack of a deleted event is a no-op
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0] == 0


def test_duplicate_put_is_ignored(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", SINKS) as box:
        e = ev(0)
        box.put(e)
        box.put(e)
        assert box.backlog() == {"file": 1, "mqtt": 1}


def test_pending_events_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = Outbox(path, SINKS)
    events = [ev(i) for i in range(5)]
    for e in events:
        box.put(e)
    box.ack(events[0]["event_id"], "file")
    box.close()

    with Outbox(path, SINKS) as box:
        assert ids(box.pending("file", 10)) == [1, 2, 3, 4]
        assert ids(box.pending("mqtt", 10)) == [0, 1, 2, 3, 4]


def test_put_survives_process_death_without_close(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    code = (
        "import os, sys\n"
        "from yolodefect.stream.outbox import Outbox\n"
        "box = Outbox(sys.argv[1], ['file'])\n"
        "for i in range(3): box.put({'event_id': f'id-{i}', 'n': i})\n"
        "os._exit(0)  # no close, no checkpoint: like a crash right after put() returned\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=30)
    with Outbox(path, ["file"]) as box:
        assert [eid for eid, _ in box.pending("file", 10)] == ["id-0", "id-1", "id-2"]


def test_concurrent_puts_and_acks_from_threads(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", SINKS)
    n_threads, per_thread = 6, 40
    errors: list[BaseException] = []

    def producer(t: int) -> None:
        try:
            for i in range(per_thread):
                box.put({"event_id": f"{t}-{i}", "t": t, "i": i})
        except BaseException as exc:  # surfaced below; a thread's exception is otherwise invisible
            errors.append(exc)

    acked: list[str] = []
    stop = threading.Event()

    def consumer() -> None:
        try:
            while not stop.is_set() or box.backlog()["file"]:
                for event_id, _ in box.pending("file", 25):
                    box.ack(event_id, "file")
                    acked.append(event_id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=producer, args=(t,)) for t in range(n_threads)]
    drain = threading.Thread(target=consumer)
    drain.start()
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    stop.set()
    drain.join(30)
    assert not errors
    total = n_threads * per_thread
    assert len(acked) == total and len(set(acked)) == total
    # Each producer's events stay in its own order, in both the acked stream and the other sink's queue.
    for t in range(n_threads):
        mine = [eid for eid in acked if eid.startswith(f"{t}-")]
        assert mine == [f"{t}-{i}" for i in range(per_thread)]
    mqtt_rows = box.pending("mqtt", total + 10)
    assert len(mqtt_rows) == total
    for t in range(n_threads):
        assert [b["i"] for _, b in mqtt_rows if b["t"] == t] == list(range(per_thread))
    assert box.backlog() == {"file": 0, "mqtt": total}
    box.close()


def test_sink_added_after_restart_gets_only_new_events(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with Outbox(path, ["file"]) as box:
        box.put(ev(0))
    with Outbox(path, ["file", "webhook"]) as box:
        box.put(ev(1))
        assert ids(box.pending("file", 10)) == [0, 1]
        assert ids(box.pending("webhook", 10)) == [1]


def test_removed_sink_keeps_its_backlog_until_dropped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "o.db"
    with Outbox(path, SINKS) as box:
        box.put(ev(0))
    with Outbox(path, ["file"]) as box:
        assert "'mqtt'" in caplog.text and "not configured" in caplog.text
        assert box.backlog() == {"file": 1}
        assert ids(box.pending("mqtt", 10)) == [0]
        assert box.drop_sink("mqtt") == 1
        assert box.pending("mqtt", 10) == []


def test_misuse_raises_actionable_errors(tmp_path: Path) -> None:
    with pytest.raises(OutboxError, match="at least one sink"):
        Outbox(tmp_path / "o.db", [])
    with pytest.raises(OutboxError, match="unique"):
        Outbox(tmp_path / "o.db", ["a", "a"])
    box = Outbox(tmp_path / "o.db", ["a"])
    with pytest.raises(OutboxError, match="event_id"):
        box.put({"decision": "pass"})
    box.close()
    with pytest.raises(OutboxError, match="closed"):
        box.put(ev(0))
