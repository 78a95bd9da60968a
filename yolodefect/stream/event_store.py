"""The station's recent events, kept on disk for its web page and ``/api/events`` (bounded, survives restarts).

This is a history, not a delivery queue: the outbox holds an event only until every sink has it, and
durability of events is the outbox's job. So the store is tuned for cheap writes (WAL, ``synchronous=NORMAL``:
a power cut may lose the last few rows, never corrupt the file) and a write that fails (disk full, I/O
error) is logged and counted, never raised: the station goes on and the event is in the outbox regardless.

It keeps the newest ``max_events`` events (by arrival) and deletes older ones as new ones come.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from yolodefect.errors import UsageError, YoloDefectError
from yolodefect.stream.outbox import _free_bytes

logger = logging.getLogger(__name__)

DEFAULT_MAX_EVENTS = 10_000
DEFAULT_LIST_LIMIT = 50
MAX_LIST_LIMIT = 1000
# A failing disk fails every event: one log line per this many seconds (with the count) instead of one per event.
FAILURE_LOG_INTERVAL_S = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id   TEXT NOT NULL UNIQUE,
    emitted_at TEXT NOT NULL,
    decision   TEXT NOT NULL,
    source     TEXT,
    json       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_time ON events(emitted_at, seq);
CREATE INDEX IF NOT EXISTS events_by_decision ON events(decision, emitted_at, seq);
"""


class EventStoreError(YoloDefectError):
    """The event store cannot be read (closed, or its file broke while running); names the file."""


class EventStore:
    """Thread-safe, bounded table of the station's recent events (detection threads write, web threads read)."""

    def __init__(self, path: Path | str, max_events: int = DEFAULT_MAX_EVENTS):
        self.path = Path(path)
        if max_events < 1:
            raise UsageError(f"an event store keeps at least 1 event, got max_events={max_events}")
        self.max_events = int(max_events)
        self.trimmed = 0  # events deleted (oldest first) to stay within max_events, since opened
        self.failures = 0  # events that could not be written, since opened
        # One connection behind one lock: the table is small and each call is short, so readers waiting
        # for a writer cost microseconds, and our own threads never see SQLITE_BUSY.
        self._lock = threading.Lock()
        self._failing = False  # the last write failed: the next one that works says so
        self._unlogged_failures = 0
        self._last_failure_log: float | None = None
        self._closed = False
        self._db = self._open()
        self._count = int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
        try:  # max_events may be smaller than in the last run
            trimmed = self._delete_oldest(self._count - self.max_events)
            self._count -= trimmed
            self.trimmed += trimmed
        except sqlite3.Error as exc:
            self._fail(f"cannot trim it to {self.max_events} events: {exc}")

    def _open(self) -> sqlite3.Connection:
        if self.path.is_dir():
            raise UsageError(f"cannot open event store {self.path}: it is a directory; give a file path")
        db = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=5)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            return db
        except (sqlite3.Error, OSError) as exc:
            if db is not None:
                db.close()
            if _free_bytes(self.path.parent) == 0:
                # SQLite says "disk I/O error" when it cannot create its -wal/-shm files on a full disk.
                reason = "the disk holding it is full (0 bytes free); free space there or choose another path"
            elif isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
                reason = (f"{exc}; move the file aside to start an empty one (it only holds the history of "
                          "recent events shown on the station page; undelivered events are in the outbox)")
            else:
                reason = f"{exc}; check that the folder exists and is writable"
            raise UsageError(f"cannot open event store {self.path}: {reason}") from exc

    # -- writing (detection threads) -----------------------------------------------------------------

    def add(self, event: Mapping[str, Any]) -> None:
        """Keep ``event`` (an ``Event.to_dict()``); adding an id already kept does nothing. Never raises on a
        failed write (logged, counted in :attr:`failures`): the event is in the outbox regardless."""
        event_id = event.get("event_id")
        if not isinstance(event_id, str) or not event_id:
            raise EventStoreError("event has no 'event_id'; build events with yolodefect.stream.events.new_event()")
        try:
            emitted_at = _sort_key(str(event["emitted_at"]))
            body = json.dumps(dict(event), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (KeyError, ValueError, TypeError) as exc:
            raise EventStoreError(f"event {event_id} cannot be stored: {exc}; build events with new_event()") from exc
        with self._lock:
            if self._closed:
                self._fail(f"event {event_id} came after the store was closed")
                return
            try:
                self._db.execute("BEGIN IMMEDIATE")
                cursor = self._db.execute(
                    "INSERT OR IGNORE INTO events(event_id, emitted_at, decision, source, json) VALUES (?, ?, ?, ?, ?)",
                    (event_id, emitted_at, str(event.get("decision")), event.get("source"), body))
                added = cursor.rowcount
                trimmed = self._delete_oldest(self._count + added - self.max_events) if added else 0
                self._db.execute("COMMIT")
                # Counted once committed: a rolled-back write changed nothing.
                self._count += added - trimmed
                self.trimmed += trimmed
            except sqlite3.Error as exc:
                self._rollback()
                self._count = self._count_rows(fallback=self._count)
                self._fail(f"cannot store event {event_id}: {exc}")
                return
            if self._failing:
                self._recovered()

    def _delete_oldest(self, excess: int) -> int:
        """Delete the ``excess`` oldest rows (by arrival); returns how many went (caller holds the lock)."""
        if excess <= 0:
            return 0
        return int(self._db.execute(
            "DELETE FROM events WHERE seq IN (SELECT seq FROM events ORDER BY seq LIMIT ?)", (excess,)).rowcount)

    def _count_rows(self, fallback: int) -> int:
        try:
            return int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
        except sqlite3.Error:
            return fallback

    def _rollback(self) -> None:
        # SQLite rolls back by itself on some errors (SQLITE_FULL among them); a transaction left open
        # would block every later write.
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error as exc:
                logger.debug("rollback in event store %s failed: %s", self.path, exc)

    def _fail(self, what: str) -> None:
        """Count a failed write and log it, at most once per FAILURE_LOG_INTERVAL_S (caller holds the lock)."""
        self.failures += 1
        self._failing = True
        self._unlogged_failures += 1
        now = time.monotonic()
        if self._last_failure_log is not None and now - self._last_failure_log < FAILURE_LOG_INTERVAL_S:
            return
        self._last_failure_log = now
        count, self._unlogged_failures = self._unlogged_failures, 0
        logger.warning("event store %s: %s (%d failed write(s) since the last message, %d in all); the station "
                       "goes on and its events stay in the outbox, but the station page will miss them",
                       self.path, what, count, self.failures)

    def _recovered(self) -> None:
        """A write succeeded after failures: say so once, with the count (also of failures not logged yet)."""
        logger.warning("event store %s stores events again (%d failed write(s) in all)", self.path, self.failures)
        self._failing = False
        self._unlogged_failures = 0
        self._last_failure_log = None

    # -- reading (web server threads) ----------------------------------------------------------------

    def list(self, since: str | None = None, limit: int = DEFAULT_LIST_LIMIT,
             decision: str | None = None) -> list[dict[str, Any]]:
        """Kept events, newest (by ``emitted_at``) first: those emitted strictly after the ISO UTC time ``since``,
        with that ``decision``; at most ``limit`` (clamped to 1..1000)."""
        limit = max(1, min(MAX_LIST_LIMIT, int(limit)))
        where, args = [], []
        if since is not None:
            where.append("emitted_at > ?")
            args.append(_sort_key(since, what="since"))
        if decision is not None:
            where.append("decision = ?")
            args.append(decision)
        sql = ("SELECT json FROM events" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY emitted_at DESC, seq DESC LIMIT ?")
        rows = self._read(sql, (*args, limit))
        return [json.loads(body) for (body,) in rows]

    def get(self, event_id: str) -> dict[str, Any] | None:
        rows = self._read("SELECT json FROM events WHERE event_id = ?", (event_id,))
        return json.loads(rows[0][0]) if rows else None

    def count(self) -> int:
        """Events kept now. (Not ``__len__``: an empty store must not read as false where None is meant.)"""
        return int(self._read("SELECT COUNT(*) FROM events", ())[0][0])

    def _read(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self._lock:
            if self._closed:
                raise EventStoreError(f"event store {self.path} is closed; open a new EventStore to read it")
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise EventStoreError(f"cannot read event store {self.path}: {exc}") from exc

    # -- lifetime ------------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                # Fold the WAL back into the main file so the store is one file at rest.
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                logger.debug("checkpoint on close of %s failed: %s", self.path, exc)
            self._db.close()

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _sort_key(moment: str, *, what: str = "emitted_at") -> str:
    """An ISO time as UTC with milliseconds and ``Z`` (the events' own form), so text order is time order.
    ``2024-05-01T12:00:00Z`` and ``...12:00:00.000+00:00`` are the same instant and must compare so."""
    try:
        parsed = datetime.fromisoformat(moment)
    except ValueError:
        raise UsageError(f"{what}={moment!r} is not an ISO 8601 time; give e.g. '2024-05-01T12:00:00Z'") from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise UsageError(f"{what}={moment!r} has no time zone; give a UTC time such as '2024-05-01T12:00:00Z'")
    return parsed.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
