"""Station options: YAML config, precedence (flag > YAML > default), unknown keys, value checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from yolodefect.errors import UsageError
from yolodefect.stream.options import (
    FIELD_NAMES,
    WatchOptions,
    load_station_config,
    merge_options,
    resolve_options,
)
from yolodefect.stream.watch import build_rules

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "station.yaml"


def write_config(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_example_config_loads_and_names_every_option() -> None:
    options = load_station_config(EXAMPLE)
    assert options.source == str(EXAMPLE.parent / "conveyor.mp4")
    assert options.model == EXAMPLE.parent / "../weights/best.onnx"
    assert options.roi == ((40, 20), (600, 20), (600, 340), (40, 340))
    assert options.reject_classes == ("scratch", "pit", "inclusion", "patch")
    assert options.sinks == (str(EXAMPLE.parent / "events.jsonl"),)
    assert options.fail_safe == "reject" and options.max_latency_ms == 250
    written = set(yaml.safe_load(EXAMPLE.read_text()))
    assert written == set(FIELD_NAMES) - {"max_frames", "half", "stats_interval_s"}  # the example documents the rest


def test_precedence_flag_over_yaml_over_default(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"source": "0", "min_frames": 5, "conf": 0.4, "show": True})
    options = resolve_options(config, {"min_frames": 2, "conf": None, "show": None, "device": "cuda:0"})
    assert options.min_frames == 2  # the flag wins
    assert options.conf == 0.4 and options.show is True  # flags left at None keep the YAML value
    assert options.device == "cuda:0"
    assert options.fail_safe == "reject"  # nobody set it: the default
    assert options.source == "0"  # a camera index is not made into a path
    assert resolve_options(None, {"source": "rtsp://cam/1"}).source == "rtsp://cam/1"


def test_relative_paths_are_relative_to_the_config(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"source": "video.mp4", "model": "best.pt", "outbox": "/abs/outbox.sqlite",
                                     "sinks": ["events.jsonl", "-", "mqtt://broker/topic"]})
    options = load_station_config(config)
    assert options.source == str(tmp_path / "video.mp4")
    assert options.model == tmp_path / "best.pt"
    assert options.outbox == Path("/abs/outbox.sqlite")
    assert options.sinks == (str(tmp_path / "events.jsonl"), "-", "mqtt://broker/topic")  # URLs stay


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [("reject_clases", "reject_classes"), ("min_frame", "min_frames"), ("evidence", "evidence_dir")],
)
def test_unknown_key_suggests_the_near_match(tmp_path: Path, key: str, suggestion: str) -> None:
    with pytest.raises(UsageError, match=f"unknown option '{key}'.*did you mean '{suggestion}'"):
        load_station_config(write_config(tmp_path, {key: 1}))
    with pytest.raises(UsageError, match=f"did you mean '{suggestion}'"):
        merge_options(WatchOptions(), {key: 1})


def test_unknown_key_without_near_match_lists_the_options(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="known options: source"):
        load_station_config(write_config(tmp_path, {"zzzz": 1}))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"fail_safe": "maybe"}, "one of off, reject"),
        ({"mode": "video"}, "one of auto, track, part"),
        ({"min_frames": 0}, ">= 1"),
        ({"min_frames": 2.5}, "whole number"),
        ({"conf": 1.5}, r"\[0, 1\]"),
        ({"class_conf": {"pit": 2}}, r"\[0, 1\]"),
        ({"roi": [[0, 0], [1, 1]]}, "at least 3 points"),
        ({"roi": "nonsense"}, "points"),
        ({"show": "yes please"}, "true or false"),
        ({"fps_cap": 0}, "> 0"),
        ({"sinks": [1, 2]}, "list of strings"),
        ({"tile_overlap": 1.0}, r"tile_overlap 1.0: the tile overlap is a fraction of a tile in \[0, 0.9\)"),
        ({"tile": 16}, r"tile 16: tiles must be a whole number of at least 32 pixels"),
    ],
)
def test_bad_values_are_usage_errors(values: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        WatchOptions(**values)


def test_cli_friendly_forms() -> None:
    options = WatchOptions(reject_classes="pit, scratch", roi="0,0 100,0 100,50", sinks="a.jsonl,-", source=0)
    assert options.reject_classes == ("pit", "scratch")
    assert options.roi == ((0, 0), (100, 0), (100, 50))
    assert options.sinks == ("a.jsonl", "-")
    assert options.source == "0"
    assert WatchOptions(sinks=[]).sinks == ("-",)  # no sink given: JSON lines on stdout


def test_empty_and_invalid_config_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_station_config(empty) == WatchOptions()
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(UsageError, match="mapping"):
        load_station_config(listing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("source: [unclosed\n")
    with pytest.raises(UsageError, match="not valid YAML"):
        load_station_config(broken)
    with pytest.raises(UsageError, match="does not exist"):
        load_station_config(tmp_path / "missing.yaml")


def test_to_dict_round_trips_through_yaml(tmp_path: Path) -> None:
    options = WatchOptions(source="0", roi=((0, 0), (5, 0), (5, 5)), class_conf={"pit": 0.3}, outbox=Path("/o.sqlite"))
    config = write_config(tmp_path, options.to_dict())
    assert load_station_config(config) == options


def test_rules_from_thresholds_file_and_overrides(tmp_path: Path) -> None:
    thresholds = tmp_path / "thresholds.yaml"
    thresholds.write_text(yaml.safe_dump({"conf": {"scratch": 0.4, "pit": 0.2}, "reject_classes": ["pit"]}))
    rules = build_rules(WatchOptions(thresholds=thresholds, class_conf={"pit": 0.3}, conf=0.6, min_area=9))
    assert rules.conf_thresholds == {"scratch": 0.4, "pit": 0.3}
    assert rules.reject_classes == frozenset({"pit"}) and rules.default_conf == 0.6 and rules.min_box_area_px == 9
    explicit = build_rules(WatchOptions(thresholds=thresholds, reject_classes=("scratch",)))
    assert explicit.reject_classes == frozenset({"scratch"})
    assert build_rules(WatchOptions()).reject_classes is None
