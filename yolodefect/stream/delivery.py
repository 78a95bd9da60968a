"""Dispatcher: fans events out from the durable outbox to every sink, without ever blocking detection.

``submit`` only writes the outbox (one fsync) and wakes the workers. Each sink has its own worker
thread that delivers that sink's backlog strictly in order, acking each event in the outbox after
the sink accepted it. A failing sink is retried with capped exponential backoff; it delays only its
own queue. Delivery is at-least-once (a crash between send and ack repeats the event), so consumers
de-duplicate on ``event_id``.

When the outbox cannot store an event (full disk, I/O error), ``submit`` does not raise: losing the
decision would be worse than losing durability. The event is sent to each sink directly, on the
caller's thread, and written to stderr as one line starting with ``NOT PERSISTED EVENT`` (the
record of last resort), and its id is kept in :meth:`Dispatcher.not_persisted_event_ids` so the
run can end non-zero naming it. Such an event may reach a sink ahead of older queued ones.
"""

from __future__ import annotations

import logging
import random
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yolodefect.errors import YoloDefectError
from yolodefect.stream.events import Event, utc_now_iso
from yolodefect.stream.outbox import Outbox, OutboxStoreError
from yolodefect.stream.sinks.base import Sink, event_json

logger = logging.getLogger(__name__)

# Workers also re-check the outbox this often without a wake-up, as a safety net.
_IDLE_POLL_S = 1.0
# A direct send (outbox full) waits this long for the sink's worker to finish its own send; longer
# means the sink is stuck, and the event still has its stderr line.
_DIRECT_SEND_WAIT_S = 1.0
# Prefix of the stderr line that carries an event the outbox could not store: grep for it.
NOT_PERSISTED_PREFIX = "NOT PERSISTED EVENT "


class DispatcherError(YoloDefectError):
    """The dispatcher is misconfigured or used after close()."""


@dataclass
class SinkStats:
    delivered: int = 0
    failed_attempts: int = 0
    last_error: str | None = None
    failed_at: float = 0.0  # time.monotonic() of the last failure
    down_since: str | None = None  # UTC ISO time of the first failure since the last delivery; None while it works


class Dispatcher:
    """Deliver outbox events to sinks, one worker thread per sink.

    Threads start in the constructor (pass ``start=False`` to defer), and the first thing each
    worker does is drain what a previous run left in the outbox.
    """

    def __init__(
        self,
        outbox: Outbox,
        sinks: Sequence[Sink],
        *,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 30.0,
        batch_size: int = 100,
        start: bool = True,
    ):
        names = [sink.name for sink in sinks]
        if sorted(names) != sorted(outbox.sink_names):
            raise DispatcherError(
                f"sinks {names} do not match the outbox's sinks {list(outbox.sink_names)}; "
                "open the Outbox with the same sink names (Dispatcher.open does this for you)"
            )
        if not 0 < retry_initial_s <= retry_max_s:
            raise DispatcherError(f"need 0 < retry_initial_s ({retry_initial_s}) <= retry_max_s ({retry_max_s})")
        self.outbox = outbox
        self.sinks: tuple[Sink, ...] = tuple(sinks)
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.batch_size = batch_size
        self._stats = {name: SinkStats() for name in names}
        self._stats_lock = threading.Lock()
        # A sink is driven by one thread at a time (its worker, or submit when the outbox is full).
        self._send_locks = {name: threading.Lock() for name in names}
        self._not_persisted: list[str] = []
        self._outbox_failure: str | None = None
        self._wake = {name: threading.Event() for name in names}
        self._stop = threading.Event()
        self._progress = threading.Condition()
        self._random = random.Random()
        self._threads: list[threading.Thread] = []
        self._closed = False
        if start:
            self.start()

    @classmethod
    def open(cls, outbox_path: Path | str, sinks: Sequence[Sink], **kwargs: Any) -> Dispatcher:
        """Open (or create) the outbox at ``outbox_path`` for these sinks and start delivering.

        If that fails (outbox in use by another station, unreadable, bad options), the outbox and the
        sinks are closed before the error propagates: nothing keeps the lock or a connection.
        """
        try:
            outbox = Outbox(outbox_path, [sink.name for sink in sinks])
            try:
                return cls(outbox, sinks, **kwargs)
            except BaseException:
                outbox.close()
                raise
        except BaseException:
            for sink in sinks:
                try:
                    sink.close()
                except Exception as exc:
                    logger.debug("closing sink %s failed: %s", sink.name, exc)
            raise

    def start(self) -> None:
        if self._threads:
            return
        for sink in self.sinks:
            thread = threading.Thread(target=self._worker, args=(sink,), name=f"deliver-{sink.name}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def submit(self, event: Mapping[str, Any] | Event, sinks: Sequence[str] | None = None) -> str:
        """Store the event durably and return its id; delivery happens on the worker threads. ``sinks`` (names)
        limits it to some sinks: each camera of a station sends to its own.

        If the outbox cannot store it, the event goes to the sinks directly instead (see the module
        docstring) and its id is added to :meth:`not_persisted_event_ids`; this does not raise.
        """
        if self._closed:
            raise DispatcherError("submit() after close(); create a new Dispatcher")
        data = event.to_dict() if isinstance(event, Event) else event
        event_id = str(data["event_id"])
        try:
            self.outbox.put(data, sinks)
        except OutboxStoreError as exc:
            self._not_stored(event_id, data, exc, sinks)
            return event_id
        if self._outbox_failure is not None:
            logger.warning("outbox %s stores events again (%d event(s) not stored so far this run)",
                           self.outbox.path, len(self.not_persisted_event_ids()))
            self._outbox_failure = None
        for wake in self._wake.values():
            wake.set()
        return event_id

    @property
    def outbox_failure(self) -> str | None:
        """Why the last ``submit`` could not store its event; None while the outbox stores events."""
        return self._outbox_failure

    def not_persisted_event_ids(self) -> tuple[str, ...]:
        """Ids of the events submitted this run that the outbox could not store, in submit order."""
        with self._stats_lock:
            return tuple(self._not_persisted)

    def _not_stored(self, event_id: str, data: Mapping[str, Any], exc: OutboxStoreError,
                    sinks: Sequence[str] | None = None) -> None:
        if self._outbox_failure is None:
            logger.error("%s; events now go to the sinks directly, without durability, until it stores again", exc)
        self._outbox_failure = str(exc)
        with self._stats_lock:
            self._not_persisted.append(event_id)
        # First the record of last resort: whatever the sinks do next, the content is out.
        try:
            sys.stderr.write(NOT_PERSISTED_PREFIX + event_json(data) + "\n")
            sys.stderr.flush()
        except (OSError, ValueError) as write_error:
            logger.error("cannot write event %s to stderr either: %s", event_id, write_error)
        taken, missed = [], []
        for sink in self.sinks:
            if sinks is None or sink.name in sinks:
                (taken if self._send_directly(sink, event_id, data) else missed).append(sink.name)
        logger.error("event %s NOT stored in the outbox; sent directly to %s%s", event_id,
                     ", ".join(taken) or "no sink", f"; not delivered to {', '.join(missed)}" if missed else "")

    def _send_directly(self, sink: Sink, event_id: str, data: Mapping[str, Any]) -> bool:
        with self._stats_lock:
            stats = self._stats[sink.name]
            down = stats.last_error if time.monotonic() - stats.failed_at < self.retry_max_s else None
        if down is not None:
            # It failed moments ago: trying again now would most likely stall the caller for the sink's
            # whole timeout, on every event. It is tried again once retry_max_s has passed.
            logger.debug("sink %s is down (%s); event %s not tried directly", sink.name, down, event_id)
            return False
        lock = self._send_locks[sink.name]
        if not lock.acquire(timeout=_DIRECT_SEND_WAIT_S):
            logger.debug("sink %s is busy; event %s not tried directly", sink.name, event_id)
            return False
        try:
            sink.send(data)
        except Exception as exc:
            with self._stats_lock:
                self._stats[sink.name].failed_attempts += 1
                self._stats[sink.name].last_error = str(exc)
                self._stats[sink.name].failed_at = time.monotonic()
                self._stats[sink.name].down_since = self._stats[sink.name].down_since or utc_now_iso()
            logger.warning("sink %s: direct delivery of event %s failed: %s", sink.name, event_id, exc)
            return False
        finally:
            lock.release()
        with self._stats_lock:
            self._stats[sink.name].delivered += 1
            self._stats[sink.name].down_since = None
        return True

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per sink: delivered (this run), failed_attempts (this run), backlog (in the outbox), last_error, and
        down_since (UTC ISO time of the first failed attempt since the last delivery; None while it delivers)."""
        backlog = self.outbox.backlog()
        with self._stats_lock:
            stats = {
                name: {
                    "delivered": s.delivered,
                    "failed_attempts": s.failed_attempts,
                    "backlog": backlog.get(name, 0),
                    "last_error": s.last_error,
                    "down_since": s.down_since,
                }
                for name, s in self._stats.items()
            }
        for sink in self.sinks:
            # A sink that holds a connection (MQTT) says when it is lost, before an event has to fail on it.
            connection = getattr(sink, "connection", None)
            if connection is not None:
                problem, since = connection()
                stats[sink.name]["connection_error"] = problem
                if problem is not None and stats[sink.name]["down_since"] is None:
                    stats[sink.name]["down_since"] = since
        return stats

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every sink's backlog is 0; False if ``timeout_s`` passed first."""
        deadline = time.monotonic() + timeout_s
        with self._progress:
            while True:
                if not any(self.outbox.backlog().values()):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                # Re-check periodically too: a sink acked between our check and wait is not missed for long.
                self._progress.wait(min(remaining, 0.1))

    def close(self, timeout_s: float = 10.0) -> bool:
        """Flush for up to ``timeout_s``, stop the workers and close sinks and outbox.

        Returns whether everything was delivered; anything left stays in the outbox for the next run.
        """
        if self._closed:
            return True
        deadline = time.monotonic() + timeout_s
        flushed = self.flush(timeout_s) if self._threads else False
        self._closed = True
        self._stop.set()
        for wake in self._wake.values():
            wake.set()
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()) + 1.0)
            if thread.is_alive():
                # Its sink is stuck inside send(); the thread is a daemon and will not hold up exit.
                logger.warning("worker %s did not stop in time; its sink is still busy", thread.name)
        if not flushed:
            left = {name: n for name, n in self.outbox.backlog().items() if n}
            logger.warning("closing with undelivered events %s; they stay in %s for the next run", left, self.outbox.path)
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:  # closing must go on for the other sinks
                logger.warning("closing sink %s failed: %s", sink.name, exc)
        if not any(t.is_alive() for t in self._threads):
            self.outbox.close()
        return flushed

    def __enter__(self) -> Dispatcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- worker ----------------------------------------------------------------------------------

    def _worker(self, sink: Sink) -> None:
        name = sink.name
        wake = self._wake[name]
        delay = self.retry_initial_s
        failures = 0
        sent_not_acked: set[str] = set()  # the sink has them; recording the ack failed (disk full)
        while not self._stop.is_set():
            wake.clear()  # cleared before reading, so a submit during the read is not lost
            try:
                batch = self.outbox.pending(name, self.batch_size)
            except YoloDefectError as exc:
                if self._stop.is_set():
                    return
                logger.error("sink %s cannot read the outbox: %s", name, exc)
                batch = []
            if not batch:
                wake.wait(_IDLE_POLL_S)
                continue
            for event_id, event in batch:
                if self._stop.is_set():
                    return
                newly_sent = event_id not in sent_not_acked
                try:
                    if newly_sent:
                        with self._send_locks[name]:
                            sink.send(event)
                except Exception as exc:
                    failures += 1
                    with self._stats_lock:
                        self._stats[name].failed_attempts += 1
                        self._stats[name].last_error = str(exc)
                        self._stats[name].failed_at = time.monotonic()
                        self._stats[name].down_since = self._stats[name].down_since or utc_now_iso()
                    # Equal jitter: many stations must not hammer a recovering server in lockstep.
                    pause = min(delay, self.retry_max_s) * self._random.uniform(0.5, 1.0)
                    logger.warning(
                        "sink %s: delivery of event %s failed (attempt %d): %s; retrying in %.1f s",
                        name, event_id, failures, exc, pause,
                    )
                    delay = min(delay * 2, self.retry_max_s)
                    self._stop.wait(pause)
                    break  # re-read from the outbox head: order is kept, the same event comes first
                if newly_sent:
                    if failures:
                        logger.info("sink %s recovered after %d failed attempt(s)", name, failures)
                    failures = 0
                    delay = self.retry_initial_s
                    with self._stats_lock:
                        self._stats[name].delivered += 1
                        self._stats[name].last_error = None
                        self._stats[name].down_since = None
                try:
                    self.outbox.ack(event_id, name)
                except YoloDefectError as exc:
                    # Delivered but not recorded (disk full): retry only the ack, or a long outage would
                    # send the event again every retry. After a restart it is sent again; de-dup absorbs that.
                    if newly_sent:
                        logger.error("sink %s: event %s delivered but ack failed: %s", name, event_id, exc)
                    sent_not_acked.add(event_id)
                    self._stop.wait(self.retry_initial_s)
                    break
                sent_not_acked.discard(event_id)
                with self._progress:
                    self._progress.notify_all()
