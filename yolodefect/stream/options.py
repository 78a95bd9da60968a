"""Everything ``yolodefect watch`` can be told, and where it comes from: CLI flag > station YAML > default.

:class:`WatchOptions` is the one record; each field's ``metadata["help"]`` is the text the CLI can
show. A station config is a YAML mapping with the same keys (``examples/station.yaml``); unknown
keys are rejected with a near-match suggestion, since a misspelt ``reject_clases`` that was
silently ignored would change what the line rejects. Relative paths in a config file are relative
to the file, so a station folder can be moved as a whole.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import glob
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from yolodefect.errors import UsageError
from yolodefect.inference.model_file import check_imgsz
from yolodefect.inference.rules import DEFAULT_CONF, RejectRules, parse_roi
from yolodefect.inference.tiles import check_tile_grid
from yolodefect.stream.redact import redact_urls

FailSafe = Literal["off", "reject"]
Mode = Literal["auto", "track", "part"]
PartFinding = Literal["belt", "class"]
DriftMode = Literal["off", "warn", "alarm"]

DEFAULT_MIN_FRAMES = 3
# Options that existed once: a station file naming them gets told what replaced them.
_REMOVED = {
    "part_merge_px": "parts are now found on the belt (parts: belt) or by a part class (parts: class), so defects "
                     "on two parts can no longer be merged; remove part_merge_px",
    "tracker": "the station tracks parts itself (a defect tracker no longer decides anything); remove tracker",
}

DEFAULT_SINKS = ("-",)
DEFAULT_OUTBOX = Path("yolodefect-outbox.sqlite")
DEFAULT_TOKEN_ENV = "YOLODEFECT_SERVE_TOKEN"


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class WatchOptions:
    """Options of one inspection station run. Field names are the YAML keys; CLI flags are ``--field-name``."""

    # -- input
    source: str | None = field(default=None, metadata=_help(
        "Camera index (0), stream URL (rtsp://...), video file, image file/folder/glob, or - for image paths on stdin."))
    camera: str | None = field(default=None, metadata=_help(
        "This camera's name in events, the web page and /metrics (default: the source's file stem, or cam0, cam1 ...)."))
    cameras: tuple[Mapping[str, Any], ...] = field(default=(), metadata=_help(
        "Several cameras in one station (station file): a list of {name, source, and this camera's own roi, tile, "
        "thresholds, class_conf, conf, sinks, mode, parts, belt ...}; the model is loaded once and shared."))
    mode: Mode = field(default="auto", metadata=_help(
        "auto (images and triggers: one part per image; video/camera: track parts on a moving line), part (every "
        "frame is one part) or track."))
    trigger: str | None = field(default=None, metadata=_help(
        "One part per external trigger (PLC/photo-eye): mqtt://host[:port]/topic or opc.tcp://host:port?node=ns=2;s=Name; "
        "each trigger inspects the first frame the source captures after it (part id from the message)."))
    loop: bool = field(default=False, metadata=_help("Video files: restart at the end (demos, soak tests)."))
    follow: bool = field(default=False, metadata=_help("A folder source: keep watching it for new image files."))
    fps_cap: float | None = field(default=None, metadata=_help("Process at most this many frames per second."))
    max_frames: int | None = field(default=None, metadata=_help("Stop after this many frames."))
    stall_timeout_s: float = field(default=5.0, metadata=_help("Live sources: reconnect after this long without a frame."))
    # -- model
    model: Path | None = field(default=None, metadata=_help(
        "Detection model: .pt, .onnx or an OpenVINO folder (default: the shipped demo model, on 320 px tiles, "
        "learning the empty belt from the first frames on video)."))
    imgsz: int | None = field(default=None, metadata=_help("Inference size in pixels (default: the model's own)."))
    device: str = field(default="cpu", metadata=_help("Inference device: cpu, 0, cuda:0, mps ..."))
    half: bool = field(default=False, metadata=_help("FP16 inference (GPU only)."))
    tile: int | None = field(default=None, metadata=_help("Sliced inference with square tiles of this many pixels."))
    tile_overlap: float = field(default=0.2, metadata=_help("Tile overlap as a fraction of the tile."))
    anomaly: Path | None = field(default=None, metadata=_help(
        "Anomaly model (.npz, trained on good parts) run beside the detector: a part is also rejected, as class "
        "'anomaly', when its anomaly confidence reaches the anomaly threshold on min_frames of its frames."))
    anomaly_only: bool = field(default=False, metadata=_help(
        "Run the anomaly model alone, without a detector (needs anomaly; no model)."))
    anomaly_thresholds: Path | None = field(default=None, metadata=_help(
        "thresholds.yaml from 'yolodefect eval ANOMALY_MODEL DATA --target-recall': its 'anomaly' threshold "
        "(default: the model's own, confidence 0.5 = the highest score of its held-out good images)."))
    # -- reject rules
    thresholds: Path | None = field(default=None, metadata=_help(
        "thresholds.yaml from 'yolodefect eval --target-recall' (per-class confidence, reject classes)."))
    conf: float = field(default=DEFAULT_CONF, metadata=_help("Confidence threshold for classes without their own."))
    class_conf: Mapping[str, float] = field(default_factory=dict, metadata=_help(
        "Per-class thresholds (class: value); override the thresholds file."))
    reject_classes: tuple[str, ...] | None = field(default=None, metadata=_help(
        "Classes that reject a part (default: the thresholds file's, else all)."))
    min_area: float = field(default=0.0, metadata=_help("Ignore defect boxes smaller than this many square pixels."))
    roi: tuple[tuple[float, float], ...] | None = field(default=None, metadata=_help(
        "Region of interest polygon [[x, y], ...] in frame pixels; defects must have their centre inside."))
    # -- part decisions
    parts: PartFinding = field(default="belt", metadata=_help(
        "Track mode: how parts are found: belt (what differs from the empty belt) or class (the model's part_class boxes)."))
    belt_frames: int = field(default=30, metadata=_help(
        "Track mode, parts=belt: learn the empty belt from this many frames (the first frames of the source, "
        "which must show the empty belt, unless --belt is given)."))
    belt: Path | None = field(default=None, metadata=_help(
        "Track mode, parts=belt: a video or image folder of the empty belt to learn from (instead of the first frames)."))
    part_class: str = field(default="part", metadata=_help("Track mode, parts=class: the model's class for whole parts."))
    min_part_area: float | None = field(default=None, metadata=_help(
        "Track mode, parts=belt: smallest part in square pixels (default 1% of the frame)."))
    decide_at: float = field(default=0.5, metadata=_help(
        "Track mode: decide a part when its centre has crossed this fraction of the frame from the entry edge."))
    min_frames: int | None = field(default=None, metadata=_help(
        "Track mode: a defect class must reach its threshold on at least this many of a part's frames to reject it "
        f"(default: the calibrated thresholds file's, else {DEFAULT_MIN_FRAMES})."))
    min_part_frames: int = field(default=5, metadata=_help(
        "Track mode: a part seen on fewer frames (and fewer than min_frames) is not inspected: an error event."))
    emit_pass: bool = field(default=False, metadata=_help("Also emit an event for every good part."))
    # -- outputs
    sinks: tuple[str, ...] = field(default=DEFAULT_SINKS, metadata=_help(
        "Where events go: events.jsonl, - (stdout), https://..., mqtt://..., opc.tcp://... (repeatable)."))
    outbox: Path = field(default=DEFAULT_OUTBOX, metadata=_help("SQLite outbox holding events until every sink has them."))
    evidence_dir: Path | None = field(default=None, metadata=_help("Save raw and annotated JPEGs of each reject here."))
    evidence_cam: bool = field(default=False, metadata=_help(
        "Also save <event_id>_cam.jpg with each reject's evidence: an EigenCAM heatmap of where the detector's "
        "backbone looked (needs evidence_dir and the PyTorch checkpoint; costs one extra model pass per reject, "
        "never per frame)."))
    evidence_cam_model: Path | None = field(default=None, metadata=_help(
        "evidence_cam with an ONNX/OpenVINO model: the .pt it was exported from (default: the one its model card "
        "names, if present and unchanged). Ignored without evidence_cam."))
    save: Path | None = field(default=None, metadata=_help("Write the annotated video to this file (.mp4 or .avi)."))
    show: bool = field(default=False, metadata=_help("Show the annotated stream in a window (needs a display)."))
    serve: str | None = field(default=None, metadata=_help(
        "Serve the operator's web page, the JSON API, /metrics (Prometheus) and /healthz at HOST:PORT "
        "(e.g. 127.0.0.1:8080; another address than loopback needs serve_token_env or serve_insecure)."))
    serve_token_env: str | None = field(default=None, metadata=_help(
        "serve: the environment variable holding the bearer token every request must carry "
        "(default: YOLODEFECT_SERVE_TOKEN, when set)."))
    serve_insecure: bool = field(default=False, metadata=_help(
        "serve: allow a non-loopback address without a token (anyone on the network sees the line)."))
    event_store: Path | None = field(default=None, metadata=_help(
        "serve: the recent-events database behind /api/events (kept across restarts, bounded; default: next to the "
        "outbox, <outbox>-recent.sqlite)."))
    # -- drift and camera faults (issue #17)
    drift: DriftMode | None = field(default=None, metadata=_help(
        "Drift monitor: off, warn (log and show it) or alarm (also send 'drift' events through the outbox and sinks); "
        "default: alarm when a reference profile is found (profile, else profile.json beside the thresholds file), "
        "else off."))
    profile: Path | None = field(default=None, metadata=_help(
        "The reference profile (profile.json from 'yolodefect eval') the drift monitor compares the line with "
        "(default: profile.json beside the thresholds file)."))
    drift_window: int = field(default=50, metadata=_help(
        "Drift monitor: the rolling window, in parts, compared with the profile."))
    drift_psi: float = field(default=0.25, metadata=_help(
        "Drift monitor: a feature drifts at this population stability index or more (and a Kolmogorov-Smirnov "
        "p-value below 1e-6); the alarm clears when no feature is above 0.1 (with p < 0.05) for 3 parts in a row."))
    camera_faults: bool = field(default=True, metadata=_help(
        "Immediate 'camera_fault' alarms on black, saturated or (video/camera sources) frozen frames."))
    frozen_s: float = field(default=2.0, metadata=_help(
        "Camera faults: a picture that has not changed for this many seconds is a frozen camera."))
    # -- review queue (yolodefect.stream.review)
    review: Path | None = field(default=None, metadata=_help(
        "Save the frames a person should look at in this folder, as LabelMe JSON with the model's boxes as "
        "pre-annotations: parts near a reject threshold, flickering defects, anomaly scores near their threshold, "
        "and a sample of passed parts (merge them back with 'yolodefect review merge')."))
    review_band: float = field(default=0.5, metadata=_help(
        "review: a part is near its threshold T when its decisive confidence lies in [T*(1-band), min(1, T*(1+band))] "
        "(on a line: the k-th best frame's, k = min_frames)."))
    review_sample: float = field(default=0.01, metadata=_help(
        "review: the fraction of the other passed parts saved too, at random (0 for none)."))
    review_max_per_min: int = field(default=30, metadata=_help(
        "review: save at most this many items per minute (the rest are counted as rate_limited)."))
    review_max_items: int = field(default=2000, metadata=_help(
        "review: keep at most this many items in the folder; the oldest not yet reviewed is removed first."))
    # -- reload without restart (yolodefect.stream.reload)
    reload_on_change: bool = field(default=False, metadata=_help(
        "Watch the model and thresholds files (about once a second) and swap a changed one in between frames once "
        "it has loaded completely and fits the model's classes; a broken file is logged and the running one stays."))
    # -- safety and shutdown
    fail_safe: FailSafe = field(default="reject", metadata=_help(
        "reject: a frame that fails or is late emits an 'error' event and the run goes on; off: failures stop the run."))
    max_latency_ms: float | None = field(default=None, metadata=_help(
        "A decision later than this (capture to decision) is an 'error' event under fail_safe=reject."))
    flush_timeout_s: float = field(default=10.0, metadata=_help("On shutdown, wait this long for sinks to take the backlog."))
    stats_interval_s: float = field(default=0.5, metadata=_help("How often the stats callback runs."))

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _coerce(f.name, getattr(self, f.name)))
        _check(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON-able values (paths as strings, tuples as lists)."""
        def plain(value: Any) -> Any:
            if isinstance(value, Path):
                return str(value)
            if isinstance(value, tuple):
                return [plain(v) for v in value]
            if isinstance(value, Mapping):
                return {str(k): plain(v) for k, v in value.items()}
            return value

        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(WatchOptions))
OPTION_HELP: dict[str, str] = {f.name: f.metadata["help"] for f in dataclasses.fields(WatchOptions)}
_PATH_FIELDS = ("model", "thresholds", "profile", "outbox", "evidence_dir", "save", "belt", "anomaly", "anomaly_thresholds",
                "evidence_cam_model", "event_store", "review")
_BOOL_FIELDS = ("loop", "follow", "half", "emit_pass", "show", "anomaly_only", "evidence_cam", "serve_insecure",
                "camera_faults", "reload_on_change")
# What one station shares between its cameras: a camera entry naming one of these is refused.
STATION_FIELDS = ("cameras", "camera", "model", "imgsz", "device", "half", "anomaly", "anomaly_only",
                  "anomaly_thresholds", "evidence_cam", "evidence_cam_model", "outbox", "evidence_dir", "serve",
                  "serve_token_env", "serve_insecure", "event_store", "flush_timeout_s", "stats_interval_s",
                  "max_frames", "save", "show", "reload_on_change", "review", "review_band", "review_sample", "review_max_per_min",
                  "review_max_items")
_OPTIONAL_INT = ("max_frames", "imgsz", "tile", "min_frames")
_INT = ("belt_frames", "min_part_frames", "review_max_per_min", "review_max_items", "drift_window")
_OPTIONAL_FLOAT = ("fps_cap", "max_latency_ms", "min_part_area")
_FLOAT = ("stall_timeout_s", "tile_overlap", "conf", "min_area", "flush_timeout_s", "stats_interval_s", "decide_at",
          "review_band", "review_sample",
          "drift_psi", "frozen_s")


def _fail(name: str, expected: str, value: Any) -> UsageError:
    return UsageError(f"option {name!r} must be {expected}, got {redact_urls(repr(value))}")


def _number(name: str, value: Any, expected: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise _fail(name, expected, value)
    return float(value)


def _coerce(name: str, value: Any) -> Any:
    """Normalise one option value (YAML and the CLI give lists, strings, ints) into the field's type."""
    if name in _PATH_FIELDS:
        if value is None and name != "outbox":
            return None
        if not isinstance(value, (str, Path)) or not str(value):
            raise _fail(name, "a path", value)
        return Path(value).expanduser()
    if name in _BOOL_FIELDS:
        if not isinstance(value, bool):
            raise _fail(name, "true or false", value)
        return value
    if name in _OPTIONAL_INT or name in _INT:
        if value is None and name in _OPTIONAL_INT:
            return None
        if isinstance(value, bool) or not isinstance(value, int) and not (isinstance(value, float) and value.is_integer()):
            raise _fail(name, "a whole number", value)
        return int(value)
    if name in _OPTIONAL_FLOAT:
        return None if value is None else _number(name, value, "a number")
    if name in _FLOAT:
        return _number(name, value, "a number")
    if name == "source":
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int, Path)):
            raise _fail(name, "a camera index, URL or path", value)
        return str(value)
    if name in ("camera", "serve", "serve_token_env"):
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
            raise _fail(name, "a non-empty string", value)
        return str(value).strip()
    if name == "cameras":
        return _cameras(value)
    if name == "trigger":
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise _fail(name, "an mqtt:// or opc.tcp:// URL", value)
        return value.strip()
    if name == "parts":
        return _choice(name, value, get_args(PartFinding))
    if name in ("device", "part_class"):
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise _fail(name, "a string", value)
        return str(value)
    if name == "mode":
        return _choice(name, value, get_args(Mode))
    if name == "fail_safe":
        return _choice(name, value, get_args(FailSafe))
    if name == "drift":
        if isinstance(value, bool):  # YAML 1.1 reads a bare off/on as false/true
            value = "alarm" if value else "off"
        return None if value is None else _choice(name, value, get_args(DriftMode))
    if name == "reject_classes":
        if value is None:
            return None
        if isinstance(value, (str, list, tuple)) and not "".join(str(v) for v in value).replace(",", "").strip():
            return ()  # empty: the reject rules refuse it in the words eval uses (see _check)
        return _names(name, value)
    if name == "sinks":
        return _names(name, value) if value not in ((), []) else DEFAULT_SINKS
    if name == "class_conf":
        if not isinstance(value, Mapping):
            raise _fail(name, "a mapping of class name to threshold", value)
        return {str(k): _number(f"class_conf.{k}", v, "a number in [0, 1]") for k, v in value.items()}
    if name == "roi":
        return None if value is None else parse_roi(value)
    raise AssertionError(f"no coercion for option {name}")  # a new field without a rule is a bug of ours


def _cameras(value: Any) -> tuple[Mapping[str, Any], ...]:
    """The ``cameras`` list: each entry a mapping with a source, a unique name (given or derived) and only
    per-camera options (shared ones such as the model are the station's)."""
    if value in (None, (), []):
        return ()
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, Mapping) for v in value):
        raise _fail("cameras", "a list of mappings (name, source, and per-camera options)", value)
    entries, names = [], set()
    for index, raw in enumerate(value):
        entry = {("name" if key == "camera" else str(key)): item for key, item in raw.items()}
        if entry.get("source") is None:
            raise UsageError(f"cameras[{index}] has no source: give each camera its source (camera index, URL, "
                             "video file or image folder)")
        for key in entry:
            if key == "name":
                continue
            if key in STATION_FIELDS:
                raise UsageError(f"cameras[{index}] sets {key!r}, which the whole station shares (one model, one "
                                 "outbox, one web server): set it at the top of the station file")
            if key not in FIELD_NAMES:
                raise _unknown_key(key, f"cameras[{index}]")
        name = str(entry.get("name") or default_camera_name(str(entry["source"]), index)).strip()
        if not name or name in names:
            raise UsageError(f"cameras[{index}]: camera name {name!r} is empty or used twice; give each camera "
                             "its own name")
        names.add(name)
        entries.append({**entry, "name": name})
    return tuple(entries)


def default_camera_name(source: str, index: int) -> str:
    """A camera's name when none is given: a file source's stem, else cam<index>."""
    text = str(source).strip()
    if _source_is_path(text) and not glob.has_magic(text):
        stem = Path(text).stem
        if stem:
            return stem
    return f"cam{index}"


def camera_options(station: WatchOptions) -> list[tuple[str, WatchOptions]]:
    """Each camera's name and its options (the station's, with the camera's own on top); one entry without cameras."""
    if not station.cameras:
        name = station.camera or default_camera_name(station.source or "", 0)
        return [(name, station)]
    if station.source is not None:
        raise UsageError(f"give either source ({station.source}) or cameras, not both: with several cameras each "
                         "one names its source")
    base = dataclasses.replace(station, cameras=())
    return [(entry["name"], merge_options(base, {k: v for k, v in entry.items() if k != "name"} | {"camera": entry["name"]},
                                          origin=f"camera {entry['name']}"))
            for entry in station.cameras]


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise _fail(name, f"one of {', '.join(choices)}", value)
    return str(value)


def _names(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [part for part in value.split(",")]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, (str, Path)) for v in value):
        raise _fail(name, "a list of strings (or one comma-separated string)", value)
    items = tuple(str(v).strip() for v in value if str(v).strip())
    if not items:
        raise _fail(name, "a non-empty list", value)
    return items


def _check(options: WatchOptions) -> None:
    _check_review(options)
    positive = {"stall_timeout_s": options.stall_timeout_s, "stats_interval_s": options.stats_interval_s}
    for name, value in positive.items():
        if value <= 0:
            raise _fail(name, "> 0", value)
    for name in ("fps_cap", "max_latency_ms"):
        value = getattr(options, name)
        if value is not None and value <= 0:
            raise _fail(name, "> 0 (or unset)", value)
    for name in ("max_frames", "tile"):
        value = getattr(options, name)
        if value is not None and value < 1:
            raise _fail(name, ">= 1 (or unset)", value)
    if options.imgsz is not None:
        check_imgsz(options.imgsz, option="imgsz")  # the rule every command applies; rounding needs the model
    for name in ("min_frames", "min_part_frames"):
        value = getattr(options, name)
        if value is not None and value < 1:
            raise _fail(name, ">= 1", value)
    if options.belt_frames < 2:
        raise _fail("belt_frames", ">= 2", options.belt_frames)
    if options.drift_window < 10:
        raise _fail("drift_window", ">= 10 parts (a distribution test needs a sample)", options.drift_window)
    if options.drift_psi <= 0.1:
        raise _fail("drift_psi", "> 0.1 (the level below which an alarm clears)", options.drift_psi)
    if options.frozen_s <= 0:
        raise _fail("frozen_s", "> 0 seconds", options.frozen_s)
    if not 0 < options.decide_at < 1:
        raise _fail("decide_at", "a fraction of the frame in (0, 1)", options.decide_at)
    if options.min_part_area is not None and options.min_part_area <= 0:
        raise _fail("min_part_area", "> 0 square pixels (or unset)", options.min_part_area)
    # The reject rules check their own values, worded as eval words the same mistakes.
    RejectRules(reject_classes=options.reject_classes, conf_thresholds=options.class_conf, default_conf=options.conf,
                min_box_area_px=options.min_area, roi_polygon=options.roi)
    check_tile_grid(options.tile, options.tile_overlap, tile_option="tile", overlap_option="tile_overlap")
    if options.flush_timeout_s < 0:
        raise UsageError("flush_timeout_s must be >= 0")
    _check_anomaly(options)
    if options.serve is not None:
        parse_serve_address(options.serve)
    if options.cameras and (options.anomaly is not None or options.evidence_cam):
        raise UsageError("anomaly and evidence_cam run on one camera for now; a station of several cameras "
                         "runs the detector only (start one station per camera for them)")
    if options.evidence_cam and options.evidence_dir is None:
        raise UsageError("evidence_cam (--evidence-cam) saves its heatmap with each reject's snapshots: give "
                         "evidence_dir (--evidence DIR) too")


def _check_review(options: WatchOptions) -> None:
    if not 0 < options.review_band <= 1:
        raise _fail("review_band", "a fraction of the threshold in (0, 1]", options.review_band)
    if not 0 <= options.review_sample <= 1:
        raise _fail("review_sample", "a fraction in [0, 1]", options.review_sample)
    for name in ("review_max_per_min", "review_max_items"):
        if getattr(options, name) < 1:
            raise _fail(name, ">= 1", getattr(options, name))


def _check_anomaly(options: WatchOptions) -> None:
    if options.anomaly is None:
        for name in ("anomaly_only", "anomaly_thresholds"):
            if getattr(options, name):
                raise UsageError(f"option {name!r} needs an anomaly model: give anomaly (--anomaly MODEL.npz)")
        return
    if options.anomaly_only:
        if options.model is not None:
            raise UsageError(f"anomaly_only runs no detector, but a detection model is given ({options.model}): "
                             "drop one of them")
        if options.parts == "class":
            raise UsageError("parts=class finds parts with the detector's part class; anomaly_only runs no "
                             "detector: use parts=belt")
        if options.tile is not None:
            raise UsageError("tile slices the detector's input; anomaly_only runs no detector: drop tile")


def event_store_path(options: WatchOptions) -> Path:
    """The recent-events database of ``serve``: the option, else beside the outbox."""
    if options.event_store is not None:
        return options.event_store
    return options.outbox.with_name(options.outbox.stem + "-recent.sqlite")


def parse_serve_address(text: str) -> tuple[str, int]:
    """(host, port) of ``serve``: HOST:PORT, [IPv6]:PORT or :PORT (loopback)."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"serve must be HOST:PORT (e.g. 127.0.0.1:8080), got {text!r}")
    return host, int(port)


def _unknown_key(key: str, origin: str) -> UsageError:
    if key in _REMOVED:
        return UsageError(f"option {key!r} in {origin} was removed: {_REMOVED[key]}")
    close = difflib.get_close_matches(key, FIELD_NAMES, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known options: {', '.join(FIELD_NAMES)}"
    return UsageError(f"unknown option {key!r} in {origin}{hint}")


def merge_options(base: WatchOptions, overrides: Mapping[str, Any], *, origin: str = "the command line") -> WatchOptions:
    """``base`` with every override that is not None applied (CLI flags left at None keep the config's value)."""
    for key in overrides:
        if key not in FIELD_NAMES:
            raise _unknown_key(key, origin)
    given = {key: value for key, value in overrides.items() if value is not None}
    return dataclasses.replace(base, **given)


def _resolve(value: Any, folder: Path, *, source: bool = False) -> Any:
    if value is None or not isinstance(value, (str, Path)):
        return value
    text = str(value)
    if source and not _source_is_path(text):
        return value
    path = Path(text).expanduser()
    return str(folder / path) if not path.is_absolute() else text


def _source_is_path(source: str) -> bool:
    """Whether a source spec names a file, folder or glob (not a camera index, stream URL or stdin)."""
    text = source.strip()
    return not (text == "-" or text.isdigit() or "://" in text)


def options_from_mapping(data: Mapping[str, Any], *, base: WatchOptions | None = None, origin: str = "station config",
                         relative_to: Path | None = None) -> WatchOptions:
    """Options from a mapping of YAML keys over ``base`` (defaults if None); paths resolved against ``relative_to``."""
    values = _resolved(data, relative_to) if relative_to is not None else dict(data)
    cameras = values.get("cameras")
    if relative_to is not None and isinstance(cameras, (list, tuple)):
        values["cameras"] = [_resolved(c, relative_to) if isinstance(c, Mapping) else c for c in cameras]
    return merge_options(base or WatchOptions(), values, origin=origin)


def _resolved(data: Mapping[str, Any], relative_to: Path) -> dict[str, Any]:
    """``data`` with its paths (source, sinks and path options) resolved against the station file's folder."""
    values = dict(data)
    for key in (*_PATH_FIELDS, "source"):
        if key in values:
            values[key] = _resolve(values[key], relative_to, source=key == "source")
    sinks = values.get("sinks")
    if isinstance(sinks, str):
        sinks = sinks.split(",")
    if isinstance(sinks, (list, tuple)):
        values["sinks"] = [_resolve(sink.strip(), relative_to, source=True) if isinstance(sink, str) else sink
                           for sink in sinks]
    return values


def load_station_config(path: Path | str) -> WatchOptions:
    """Read a station YAML (keys as :class:`WatchOptions` fields) into options over the defaults."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UsageError(f"station config {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UsageError(f"station config {path} is not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UsageError(f"station config {path} must be a mapping of option: value")
    # YAML null means "the default", which is what leaving the key out means too.
    explicit = {key: value for key, value in data.items() if value is not None or key not in FIELD_NAMES}
    for key in explicit:
        if key not in FIELD_NAMES:
            raise _unknown_key(str(key), str(path))
    return options_from_mapping(explicit, origin=str(path), relative_to=path.resolve().parent)


def resolve_options(config: Path | str | None, overrides: Mapping[str, Any]) -> WatchOptions:
    """The CLI's one call: defaults, then the station config (if any), then flags that were given (not None)."""
    base = load_station_config(config) if config is not None else WatchOptions()
    return merge_options(base, overrides)


# Written next to the outbox file: SQLite's WAL, shared memory and rollback journal, and the Outbox's lock.
_OUTBOX_SIBLING_SUFFIXES = ("-wal", "-shm", "-journal", ".lock")


@dataclass(frozen=True)
class _Output:
    """A path ``watch`` writes: ``label`` is how the user gave it, ``what`` what would land there."""

    label: str
    path: Path
    what: str
    is_folder: bool = False


def _outputs(options: WatchOptions) -> list[_Output]:
    # Imported here: the CLI imports this module for its help texts, and the sinks package pulls in asyncio.
    from yolodefect.stream.sinks.factory import file_sink_path

    outputs = []
    for spec in options.sinks:
        path = file_sink_path(spec)
        if path is not None:
            outputs.append(_Output(f"--sink {spec}", path, "events"))
    outbox = options.outbox
    default = " (the default)" if outbox == DEFAULT_OUTBOX else ""
    outputs.append(_Output(f"--outbox {outbox}{default}", outbox, "the outbox database"))
    for suffix in _OUTBOX_SIBLING_SUFFIXES:
        sibling = outbox.with_name(outbox.name + suffix)
        outputs.append(_Output(f"--outbox {outbox}{default} (its {sibling.name})", sibling, "the outbox database"))
    if options.evidence_dir is not None:
        outputs.append(_Output(f"--evidence {options.evidence_dir}", options.evidence_dir, "reject snapshots",
                               is_folder=True))
    if options.review is not None:
        outputs.append(_Output(f"--review {options.review}", options.review, "the review queue", is_folder=True))
    if options.save is not None:
        outputs.append(_Output(f"--save {options.save}", options.save, "the annotated video"))
    if options.serve is not None or options.event_store is not None:
        store = event_store_path(options)
        for suffix in ("", "-wal", "-shm", "-journal"):
            outputs.append(_Output(f"--event-store {store}", store.with_name(store.name + suffix), "the recent events"))
    return outputs


def _same_file(a: Path, b: Path) -> bool:
    """Whether resolved paths ``a`` and ``b`` are one file: the same path, or hard links to one inode."""
    if a == b:
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): only the path comparison counts
        return False


def _glob_parts(pattern: str) -> tuple[str, ...]:
    """The pattern's components with its literal leading folders resolved (symlinks, cwd), as glob sees them."""
    parts = Path(os.path.expanduser(pattern)).parts
    literal = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
    return Path(*parts[:literal]).resolve().parts + parts[literal:] if literal else Path.cwd().parts + parts


def _glob_reaches(pattern: tuple[str, ...], parts: tuple[str, ...], *, below: bool) -> bool:
    """Whether the recursive glob matches the path ``parts`` or, with ``below``, could match a path under it.

    By hand because the outputs need not exist yet (``glob.glob`` only finds files that do) and Python 3.11 has no
    recursive pattern matcher for paths (``glob.translate`` and ``**`` in ``PurePath.match`` came in 3.13)."""
    if not parts:
        return bool(pattern) if below else all(part == "**" for part in pattern)
    if not pattern:
        return False
    if pattern[0] == "**":  # zero or more whole components
        return _glob_reaches(pattern[1:], parts, below=below) or _glob_reaches(pattern, parts[1:], below=below)
    return fnmatch.fnmatchcase(parts[0], pattern[0]) and _glob_reaches(pattern[1:], parts[1:], below=below)


def _conflict(output: _Output, source: str) -> str | None:
    """Why writing ``output`` would touch the path source ``source``, or None when it would not."""
    source_path = Path(source).expanduser()
    target = output.path.expanduser().resolve()
    kind = "folder" if output.is_folder else "file"
    if source_path.is_dir():
        folder = source_path.resolve()
        if target == folder or folder in target.parents:
            return (f"{output.label} lies inside the source folder {source}: {output.what} would be written "
                    f"among the files being inspected; choose a {kind} outside it")
        if output.is_folder and target in folder.parents:
            return (f"{output.label} holds the source folder {source}: {output.what} would be written into the "
                    f"folder being inspected; choose a {kind} outside it")
        return None
    if glob.has_magic(source) and not source_path.exists():
        for match in glob.glob(os.path.expanduser(source), recursive=True):
            if _same_file(target, Path(match).resolve()):
                return (f"{output.label} is the source file {match} (matched by {source}): {output.what} would be "
                        f"written into it; choose another {kind}")
        if _glob_reaches(_glob_parts(source), target.parts, below=output.is_folder):
            return (f"{output.label} matches the source pattern {source}: {output.what} would be written where "
                    f"the source reads images; choose a {kind} the pattern does not match")
        return None
    if _same_file(target, source_path.resolve()):
        link = "" if output.path.expanduser().absolute() == source_path.absolute() else " (through a link)"
        return (f"{output.label} is the source file {source}{link}: {output.what} would be written into it; "
                f"choose another {kind}")
    return None


def check_outputs_outside_source(options: WatchOptions) -> None:
    """Raise UsageError when an output would be written into the source; call before anything is written.

    Outputs are the file sinks, the outbox (and the -wal/-shm/-journal/.lock files written next to
    it), the evidence folder and ``save``. A source file must not be an output (compared after resolving
    symlinks, and as an inode for hard links); a source folder, watched or not, must not hold an
    output at any depth, nor lie inside the evidence folder; a glob must not match an output, or
    anything the evidence folder will hold. Outputs that do not exist yet are resolved through their
    existing parent folders. Camera indexes, stream URLs and stdin have no path to protect.
    """
    source = options.source
    if source is None or not _source_is_path(source):
        return
    for output in _outputs(options):
        problem = _conflict(output, source.strip())
        if problem is not None:
            raise UsageError(problem)
