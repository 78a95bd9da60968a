"""Durable outbox: events are on disk before any sink is tried, and stay until every sink has acked.

Storage is one SQLite file in WAL mode with ``synchronous=FULL``. In WAL mode ``NORMAL`` survives a
process crash but can lose the last commits on power loss or an OS crash, because the WAL is only
fsynced at checkpoints. A production line loses power; "losing none" means ``FULL``: each ``put``
fsyncs the WAL before returning. That costs one fsync per event (about 1-10 ms on an SSD), which is
small next to a detection frame, and ``put`` is the only call on the detection path.

Sink membership policy (kept simple on purpose):

* An event is owed to the sinks configured when it was ``put``. A sink added later (after a restart
  with a new ``sink_names``) receives only events put from then on - no replay of history.
* Deliveries owed to a sink that is no longer configured are kept, not dropped (a sink left out by
  mistake must not lose events). They are logged as a warning on open, delivered when the sink is
  configured again, and can be discarded deliberately with :meth:`Outbox.drop_sink`.

One station per outbox file: two dispatchers on the same file would each drain the other's events
(or deliver them twice). Opening takes an exclusive, non-blocking ``flock`` on a sidecar
``<outbox>.lock`` file that names the owner (pid and host); a second opener fails at once with a
message naming that process. The lock dies with its process (no stale lock after a crash), and the
sidecar file is left in place on close on purpose: deleting it would let two later openers lock two
different files.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from yolodefect.errors import YoloDefectError

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    body     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    sink      TEXT NOT NULL,
    event_seq INTEGER NOT NULL REFERENCES events(seq) ON DELETE CASCADE,
    PRIMARY KEY (sink, event_seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deliveries_by_event ON deliveries(event_seq);
"""


class OutboxError(YoloDefectError):
    """The outbox file cannot be used; the message names the file and the fix."""


class OutboxStoreError(OutboxError):
    """An event could not be written (disk full, read-only, I/O error): it is NOT in the outbox."""


class _OwnerLock:
    """Exclusive lock on ``<outbox>.lock`` for the life of one Outbox, naming its owner inside."""

    def __init__(self, outbox_path: Path):
        import fcntl  # POSIX only (Linux, macOS); imported here so the module still imports elsewhere

        self.path = outbox_path.with_name(outbox_path.name + ".lock")
        # Not truncated on open: the owner's name must stay readable to a second opener. A file object,
        # not a bare descriptor, so an Outbox dropped without close() still releases the lock when collected.
        self._file = os.fdopen(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644), "rb+", buffering=0)
        fd = self._file.fileno()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            self._file.close()
            raise OutboxError(
                f"outbox {outbox_path} is in use by {owner}; give each station its own --outbox "
                "(two stations on one outbox would take each other's events)"
            ) from None
        except OSError:
            self._file.close()
            raise
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
        except OSError as exc:  # the name only helps a second opener's message; the lock is what counts
            logger.debug("cannot write the owner into %s: %s", self.path, exc)

    def release(self) -> None:
        self._file.close()  # closing the descriptor releases the flock


class Outbox:
    """Thread-safe persistent queue of events, with a delivery row per (event, sink) until acked."""

    def __init__(self, path: Path | str, sink_names: Sequence[str]):
        self.path = Path(path)
        names = list(sink_names)
        if not names:
            raise OutboxError("an outbox needs at least one sink name; configure a sink (file, webhook, mqtt, opcua)")
        if len(set(names)) != len(names):
            raise OutboxError(f"sink names must be unique, got {names}; give each sink a distinct name")
        self.sink_names: tuple[str, ...] = tuple(names)
        # One connection guarded by a lock: SQLite serialises writers anyway, and a single
        # connection keeps transactions simple and avoids SQLITE_BUSY between our own threads.
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Before SQLite touches the file: a second station must not even replay the WAL.
            self._owner = _OwnerLock(self.path)
        except OSError as exc:
            raise OutboxError(f"cannot lock outbox {self.path}: {exc}; check the directory is writable") from exc
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            self._owner.release()
            if _free_bytes(self.path.parent) == 0:
                # SQLite says "disk I/O error" when it cannot create its -wal/-shm files on a full disk.
                raise OutboxError(f"cannot open outbox {self.path}: the disk holding it is full (0 bytes free); "
                                  "free space there or give --outbox on another disk") from exc
            raise OutboxError(
                f"cannot open outbox {self.path}: {exc}; check the directory is writable and the file is not "
                "corrupt (move it aside to start empty; its undelivered events would then be lost)"
            ) from exc
        self._closed = False
        self._warn_orphans()

    def _warn_orphans(self) -> None:
        rows = self._db.execute("SELECT sink, COUNT(*) FROM deliveries GROUP BY sink").fetchall()
        for sink, count in rows:
            if sink not in self.sink_names:
                logger.warning(
                    "outbox %s holds %d undelivered event(s) for sink %r, which is not configured now; they are "
                    "kept until that sink is configured again, or discard them with Outbox.drop_sink(%r)",
                    self.path, count, sink, sink,
                )

    def put(self, event: Mapping[str, Any], sinks: Sequence[str] | None = None) -> None:
        """Store an event durably (fsynced) for every configured sink (or those of ``sinks``: a camera's own, in a
        station of several cameras); re-putting an id still queued is a no-op."""
        event_id = event.get("event_id")
        if not isinstance(event_id, str) or not event_id:
            raise OutboxError("event has no 'event_id'; build events with yolodefect.stream.events.new_event()")
        targets = self.sink_names if sinks is None else tuple(sinks)
        unknown = sorted(set(targets) - set(self.sink_names))
        if unknown:
            raise OutboxError(f"event {event_id} names sinks {unknown} that this outbox does not serve")
        body = json.dumps(dict(event), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        with self._lock:
            self._check_open()
            try:
                with self._transaction():
                    cur = self._db.execute(
                        "INSERT OR IGNORE INTO events(event_id, body) VALUES (?, ?)", (event_id, body)
                    )
                    if cur.rowcount == 0:
                        logger.debug("event %s already in outbox; not queued again", event_id)
                        return
                    seq = cur.lastrowid
                    self._db.executemany(
                        "INSERT INTO deliveries(sink, event_seq) VALUES (?, ?)",
                        [(name, seq) for name in targets],
                    )
            except sqlite3.Error as exc:
                # Usually a full or read-only disk; the event is not stored, so the caller must know.
                raise OutboxStoreError(
                    f"cannot store event {event_id} in outbox {self.path}: {exc}; free disk space or fix permissions"
                ) from exc

    def pending(self, sink_name: str, limit: int = 100) -> list[tuple[str, dict[str, Any]]]:
        """Up to ``limit`` events not yet acked by ``sink_name``, oldest first."""
        with self._lock:
            self._check_open()
            try:
                rows = self._db.execute(
                    "SELECT e.event_id, e.body FROM deliveries d JOIN events e ON e.seq = d.event_seq "
                    "WHERE d.sink = ? ORDER BY d.event_seq LIMIT ?",
                    (sink_name, limit),
                ).fetchall()
            except sqlite3.Error as exc:
                raise OutboxError(f"cannot read outbox {self.path}: {exc}") from exc
        return [(event_id, json.loads(body)) for event_id, body in rows]

    def ack(self, event_id: str, sink_name: str) -> None:
        """Mark ``event_id`` delivered to ``sink_name``; the event is deleted once every sink has acked it."""
        with self._lock:
            self._check_open()
            try:
                with self._transaction():
                    row = self._db.execute("SELECT seq FROM events WHERE event_id = ?", (event_id,)).fetchone()
                    if row is None:
                        return  # already fully acked: acks are idempotent
                    seq = row[0]
                    self._db.execute("DELETE FROM deliveries WHERE sink = ? AND event_seq = ?", (sink_name, seq))
                    self._db.execute(
                        "DELETE FROM events WHERE seq = ? AND NOT EXISTS "
                        "(SELECT 1 FROM deliveries WHERE event_seq = ?)",
                        (seq, seq),
                    )
            except sqlite3.Error as exc:
                raise OutboxError(f"cannot record delivery of {event_id} in outbox {self.path}: {exc}") from exc

    def backlog(self) -> dict[str, int]:
        """Undelivered event count per configured sink (0 included)."""
        with self._lock:
            self._check_open()
            rows = dict(self._db.execute("SELECT sink, COUNT(*) FROM deliveries GROUP BY sink").fetchall())
        return {name: int(rows.get(name, 0)) for name in self.sink_names}

    def drop_sink(self, sink_name: str) -> int:
        """Discard everything still owed to ``sink_name``; returns how many deliveries were dropped."""
        with self._lock:
            self._check_open()
            with self._transaction():
                dropped = self._db.execute("DELETE FROM deliveries WHERE sink = ?", (sink_name,)).rowcount
                self._db.execute("DELETE FROM events WHERE seq NOT IN (SELECT event_seq FROM deliveries)")
        if dropped:
            logger.warning("dropped %d undelivered event(s) for sink %r from outbox %s", dropped, sink_name, self.path)
        return int(dropped)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                # Fold the WAL back into the main file so the outbox is one file at rest.
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                logger.debug("checkpoint on close of %s failed: %s", self.path, exc)
            self._db.close()
            self._owner.release()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise OutboxError(f"outbox {self.path} is closed; open a new Outbox to keep using it")

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


def _free_bytes(folder: Path) -> int | None:
    """Bytes an unprivileged writer can still use on ``folder``'s filesystem; None when unknown."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT/ROLLBACK; the caller already holds the outbox lock."""

    def __init__(self, db: sqlite3.Connection):
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None:
            try:
                self._db.execute("COMMIT")
                return
            except sqlite3.Error:
                self._rollback()  # a COMMIT that fails (disk full) may leave the transaction open
                raise
        self._rollback()

    def _rollback(self) -> None:
        # SQLite rolls back by itself on some errors (SQLITE_FULL among them); a second ROLLBACK would
        # then fail and hide the real error. A transaction left open would block every later write.
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error as exc:
                logger.debug("rollback failed: %s", exc)
