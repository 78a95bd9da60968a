"""``watch --reload-on-change``: point a running station at a promoted model or new thresholds without a restart.

A background thread (:class:`FileWatcher`) looks at the model and thresholds files about once a second
(size and modification time; the SHA-256 of the content when those change), never on the frame path. A
file that changed is loaded only once it has stopped changing for one look (a copy still being written
is left alone), and it is loaded *fully* (the model built and checked against the running model's
classes, the thresholds read and checked against them) on that thread; only a complete, valid result
becomes a :class:`Swap`. A file that cannot be loaded is logged with the reason and counted
(``reload_failures``); the station keeps running what it has, and the file is tried again when it
changes again. The station takes a staged swap from its :class:`SwapSlot` before its next frame, so a
frame (and every tile of it) is decided by one model and one set of thresholds, and each event records
both (``model`` and ``thresholds``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from yolodefect.inference.names import names_dict
from yolodefect.inference.rules import RejectRules
from yolodefect.stream.detector import Detector
from yolodefect.stream.events import ModelIdentity

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 1.0


@dataclass(frozen=True)
class FileStamp:
    """What identifies one version of a file: its size and modification time, and the SHA-256 of its content."""

    size: int
    mtime_ns: int
    sha256: str | None = None  # computed only when size or time moved (hashing a model every second is not free)


def quick_stamp(path: Path) -> FileStamp | None:
    """Size and time of ``path``; None while it does not exist (being replaced, or removed)."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return FileStamp(stat.st_size, stat.st_mtime_ns)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Swap:
    """What a station takes before its next frame; a field left None keeps what the station has."""

    why: str
    detector: Detector | None = None
    model: ModelIdentity | None = None
    card: Mapping[str, Any] | None = None
    rules: RejectRules | None = None

    def then(self, later: Swap) -> Swap:
        """This swap followed by ``later`` before the station took either: the later one's fields win."""
        changes = {name: getattr(later, name) for name in ("detector", "model", "card", "rules")
                   if getattr(later, name) is not None}
        return replace(self, why=f"{self.why}; {later.why}", **changes)


class SwapSlot:
    """One staged :class:`Swap` per station, handed from the watcher's thread to the camera's thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._swap: Swap | None = None

    def put(self, swap: Swap) -> None:
        with self._lock:
            self._swap = swap if self._swap is None else self._swap.then(swap)

    def take(self) -> Swap | None:
        """The staged swap, once (None when nothing is staged): one attribute read when idle, on the frame path."""
        if self._swap is None:
            return None
        with self._lock:
            swap, self._swap = self._swap, None
            return swap


class FileWatcher:
    """Calls ``load(kind, path)`` on its own thread when a watched file has changed and settled.

    ``files`` maps a kind (e.g. "model", "thresholds:cam1") to a path. ``load`` builds and hands over what
    the new file means, raising when it cannot (then ``on_failure(kind, path, error)`` is told, and that
    version of the file is not tried again). A file whose content hash did not change (touched, or copied
    over with the same bytes) loads nothing.
    """

    def __init__(self, files: Mapping[str, Path], load: Callable[[str, Path], None],
                 on_failure: Callable[[str, Path, BaseException], None], *, interval_s: float = POLL_INTERVAL_S):
        self.files = {kind: Path(path) for kind, path in files.items()}
        self.load = load
        self.on_failure = on_failure
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watch-reload", daemon=True)
        # What runs now (its hash), and what was last seen (a change must hold still for one look to be loaded).
        self._loaded: dict[str, FileStamp | None] = {}
        self._seen: dict[str, FileStamp | None] = {}
        for kind, path in self.files.items():
            stamp = quick_stamp(path)
            if stamp is not None:
                stamp = replace(stamp, sha256=file_sha256(path))
            self._loaded[kind] = self._seen[kind] = stamp

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30.0)  # a model being loaded finishes first

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            for kind in self.files:
                try:
                    self.check(kind)
                except Exception:
                    logger.exception("checking %s for a reload failed", self.files[kind])

    def check(self, kind: str) -> None:
        """One look at the file of ``kind`` (the thread calls this every ``interval_s``)."""
        path = self.files[kind]
        now = quick_stamp(path)
        seen, loaded = self._seen[kind], self._loaded[kind]
        if now is None or (loaded is not None and (now.size, now.mtime_ns) == (loaded.size, loaded.mtime_ns)):
            self._seen[kind] = now
            return
        if seen is None or (now.size, now.mtime_ns) != (seen.size, seen.mtime_ns):
            self._seen[kind] = now  # still moving (or just moved): look again next time
            return
        now = replace(now, sha256=file_sha256(path))
        self._loaded[kind] = self._seen[kind] = now  # this version is dealt with, loaded or refused
        if loaded is not None and now.sha256 == loaded.sha256:
            return
        try:
            self.load(kind, path)
        except Exception as exc:  # noqa: BLE001 - whatever a broken file raises, the running model stays
            self.on_failure(kind, path, exc)


@dataclass
class CameraReload:
    """One camera of the station as the reloader sees it: where its swaps go, its thresholds file and rules."""

    name: str
    slot: SwapSlot
    thresholds: Path | None
    rules: RejectRules
    make_rules: Callable[[Path], RejectRules]  # reads the thresholds file and builds the camera's checked rules


class StationReloader:
    """Watches the station's model file and each camera's thresholds file and stages what changed (see above).

    ``build_detectors(rules)`` builds every camera's detector from the model file, as ``watch`` built them at
    the start (None: the caller's own detector, whose model cannot be reloaded). ``model_names`` are the running
    model's classes: a new model must have the same (events, rules and the line all name them).
    ``on_failure`` is told of each refused file (the stats count them).
    """

    def __init__(self, cameras: list[CameraReload], *, model: Path | None, model_names: Mapping[int, str],
                 build_detectors: Callable[[list[RejectRules]], list[Detector]] | None,
                 on_failure: Callable[[], None] = lambda: None, interval_s: float = POLL_INTERVAL_S):
        self.cameras = cameras
        self.model = model if build_detectors is not None else None
        self.model_names = dict(model_names)
        self.build_detectors = build_detectors
        self.on_failure = on_failure
        self._floor = min(camera.rules.min_threshold() for camera in cameras)  # of the detectors running now
        files: dict[str, Path] = {}
        if self.model is not None:
            files["model"] = self.model
        for index, camera in enumerate(cameras):
            if camera.thresholds is not None:
                files[f"thresholds:{index}"] = camera.thresholds
        self.watcher = FileWatcher(files, self.load, self.failed, interval_s=interval_s)
        if build_detectors is None:
            logger.info("reload on change: the detector was given by the caller; only thresholds files are watched")
        if files:
            logger.info("reload on change: watching %s", ", ".join(str(path) for path in dict.fromkeys(files.values())))
        else:
            logger.warning("reload on change: no model or thresholds file to watch")

    def start(self) -> None:
        self.watcher.start()

    def stop(self) -> None:
        self.watcher.stop()

    def load(self, kind: str, path: Path) -> None:
        """Build and check everything ``path`` changes, then stage it for each camera it concerns."""
        if kind == "model":
            detectors = self._detectors([camera.rules for camera in self.cameras])
            model = getattr(detectors[0], "model_info", None)
            why = f"model file {path} changed"
            for camera, detector in zip(self.cameras, detectors):
                camera.slot.put(Swap(why, detector=detector, model=model, card=getattr(detector, "card", None)))
            return
        camera = self.cameras[int(kind.split(":", 1)[1])]
        rules = camera.make_rules(path)
        why = f"thresholds file {path} changed"
        all_rules = [rules if other is camera else other.rules for other in self.cameras]
        detectors = None
        if self.build_detectors is not None and min(r.min_threshold() for r in all_rules) < self._floor:
            # The running model drops boxes below the old lowest threshold: it is rebuilt to keep them.
            detectors = self._detectors(all_rules)
            why += " (the model is reloaded with a lower confidence floor)"
        camera.rules = rules
        for index, other in enumerate(self.cameras):
            if other is camera:
                other.slot.put(Swap(why, rules=rules, detector=detectors[index] if detectors else None))
            elif detectors is not None:
                other.slot.put(Swap(why, detector=detectors[index]))

    def _detectors(self, rules: list[RejectRules]) -> list[Detector]:
        detectors = self.build_detectors(rules)  # type: ignore[misc]
        found = names_dict(getattr(detectors[0], "class_names", None) or {})
        if found != self.model_names:
            raise ValueError(f"its classes {list(found.values())} are not the running model's "
                             f"{list(self.model_names.values())}; a model with other classes needs a restart")
        detectors[0](np.zeros((64, 64, 3), dtype=np.uint8))  # it runs (and is warm) before any frame depends on it
        self._floor = min(r.min_threshold() for r in rules)
        return detectors

    def failed(self, kind: str, path: Path, error: BaseException) -> None:
        what = "model" if kind == "model" else "thresholds"
        logger.error("reload on change: the new %s file %s is not used (%s: %s); the station keeps running the "
                     "one it has", what, path, type(error).__name__, error)
        self.on_failure()
