"""Dispatcher: fans events out from the durable outbox to every sink, without ever blocking detection.

``submit`` only writes the outbox (one fsync) and wakes the workers. Each sink has its own worker
thread that delivers that sink's backlog strictly in order, acking each event in the outbox after
the sink accepted it. A failing sink is retried with capped exponential backoff; it delays only its
own queue. Delivery is at-least-once (a crash between send and ack repeats the event), so consumers
de-duplicate on ``event_id``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yolodefect.errors import YoloDefectError
from yolodefect.stream.events import Event
from yolodefect.stream.outbox import Outbox
from yolodefect.stream.sinks.base import Sink

logger = logging.getLogger(__name__)

# Workers also re-check the outbox this often without a wake-up, as a safety net.
_IDLE_POLL_S = 1.0


class DispatcherError(YoloDefectError):
    """The dispatcher is misconfigured or used after close()."""


@dataclass
class SinkStats:
    delivered: int = 0
    failed_attempts: int = 0
    last_error: str | None = None


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
        """Open (or create) the outbox at ``outbox_path`` for these sinks and start delivering."""
        return cls(Outbox(outbox_path, [sink.name for sink in sinks]), sinks, **kwargs)

    def start(self) -> None:
        if self._threads:
            return
        for sink in self.sinks:
            thread = threading.Thread(target=self._worker, args=(sink,), name=f"deliver-{sink.name}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def submit(self, event: Mapping[str, Any] | Event) -> str:
        """Store the event durably and return its id; delivery happens on the worker threads."""
        if self._closed:
            raise DispatcherError("submit() after close(); create a new Dispatcher")
        data = event.to_dict() if isinstance(event, Event) else event
        self.outbox.put(data)
        for wake in self._wake.values():
            wake.set()
        return str(data["event_id"])

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per sink: delivered (this run), failed_attempts (this run), backlog (in the outbox), last_error."""
        backlog = self.outbox.backlog()
        with self._stats_lock:
            return {
                name: {
                    "delivered": s.delivered,
                    "failed_attempts": s.failed_attempts,
                    "backlog": backlog.get(name, 0),
                    "last_error": s.last_error,
                }
                for name, s in self._stats.items()
            }

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
                try:
                    sink.send(event)
                except Exception as exc:
                    failures += 1
                    with self._stats_lock:
                        self._stats[name].failed_attempts += 1
                        self._stats[name].last_error = str(exc)
                    # Equal jitter: many stations must not hammer a recovering server in lockstep.
                    pause = min(delay, self.retry_max_s) * self._random.uniform(0.5, 1.0)
                    logger.warning(
                        "sink %s: delivery of event %s failed (attempt %d): %s; retrying in %.1f s",
                        name, event_id, failures, exc, pause,
                    )
                    delay = min(delay * 2, self.retry_max_s)
                    self._stop.wait(pause)
                    break  # re-read from the outbox head: order is kept, the same event comes first
                try:
                    self.outbox.ack(event_id, name)
                except YoloDefectError as exc:
                    # Delivered but not recorded: it will be sent again, which de-dup on event_id absorbs.
                    logger.error("sink %s: event %s delivered but ack failed: %s", name, event_id, exc)
                    self._stop.wait(self.retry_initial_s)
                    break
                if failures:
                    logger.info("sink %s recovered after %d failed attempt(s)", name, failures)
                failures = 0
                delay = self.retry_initial_s
                with self._stats_lock:
                    self._stats[name].delivered += 1
                    self._stats[name].last_error = None
                with self._progress:
                    self._progress.notify_all()
