"""The drift monitor on its own: stable streams stay quiet, a shift raises one alarm that clears when it ends."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from yolodefect.errors import UsageError
from yolodefect.evaluation.profile import ReferenceProfile, write_profile
from yolodefect.inference.image_stats import IMAGE_FEATURES
from yolodefect.stream.drift import ALL_FEATURES, DriftMonitor, ks_p_value, ks_statistic, resolve_drift
from yolodefect.stream.options import WatchOptions

REFERENCE_IMAGES = 300
MEANS = {name: 100.0 + 10 * i for i, name in enumerate(IMAGE_FEATURES)}
SD = 10.0


def draw(rng: np.random.Generator, brightness_shift: float = 0.0) -> dict[str, float]:
    """One part as the reference's population makes it: image features normal, 10% with a detection."""
    found = rng.random() < 0.1
    observation = {name: float(rng.normal(mean, SD)) for name, mean in MEANS.items()}
    observation["brightness"] += brightness_shift
    observation["top_confidence"] = float(rng.uniform(0.5, 0.95)) if found else float(rng.uniform(0.0, 0.2))
    observation["detections"] = float(found)
    return observation


def reference(seed: int = 0) -> ReferenceProfile:
    rng = np.random.default_rng(seed)
    parts = [draw(rng) for _ in range(REFERENCE_IMAGES)]
    return ReferenceProfile(split="val", model="best.pt", images=REFERENCE_IMAGES, reject_rate=0.1, thresholds={},
                            features={name: sorted(p[name] for p in parts) for name in ALL_FEATURES})


def run(monitor: DriftMonitor, observations: list[dict[str, float]]) -> list[tuple[int, str, list[str]]]:
    changes = []
    for observation in observations:
        change = monitor.update(observation)
        if change is not None:
            changes.append((change.observation, change.state, list(change.features)))
    return changes


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_stable_line_raises_nothing_over_thousands_of_parts(seed: int) -> None:
    rng = np.random.default_rng(seed)
    monitor = DriftMonitor(reference())
    assert run(monitor, [draw(rng) for _ in range(4000)]) == []
    assert monitor.last and not monitor.active  # it did check (the window filled), and found nothing


def test_a_step_in_brightness_raises_within_the_window_and_clears_after_it_ends() -> None:
    rng = np.random.default_rng(7)
    monitor = DriftMonitor(reference(), window=50, hold=3)
    stream = ([draw(rng) for _ in range(500)] + [draw(rng, brightness_shift=-3 * SD) for _ in range(300)]
              + [draw(rng) for _ in range(300)])
    changes = run(monitor, stream)
    assert [(state, features) for _, state, features in changes] == [("raised", ["brightness"]),
                                                                      ("cleared", ["brightness"])]
    raised_at, cleared_at = changes[0][0], changes[1][0]
    # Raised once about a third of the window shows the step (+ hold - 1 checks), never before the step.
    assert 500 + 10 <= raised_at <= 500 + 50
    # Cleared once the window has (nearly) left the step behind, plus the hold.
    assert 800 + 25 <= cleared_at <= 800 + 50 + 10


def test_the_raised_alarm_says_how_far_the_feature_moved() -> None:
    rng = np.random.default_rng(8)
    monitor = DriftMonitor(reference())
    raised = None
    for observation in [draw(rng) for _ in range(60)] + [draw(rng, brightness_shift=-30.0) for _ in range(100)]:
        raised = monitor.update(observation) or raised
    assert raised is not None and raised.state == "raised"
    test = raised.features["brightness"]
    assert test.psi >= 0.25 and test.p_value < 1e-6
    assert test.reference_median == pytest.approx(100.0, abs=2.0)
    assert test.window_median < test.reference_median - 10  # on its way down by 30: part of the window is new
    assert set(raised.feature_dicts()["brightness"]) == {"psi", "p_value", "reference_median", "window_median"}


def test_one_odd_part_or_a_short_burst_does_not_alarm() -> None:
    rng = np.random.default_rng(9)
    monitor = DriftMonitor(reference())
    stream = [draw(rng) for _ in range(200)]
    stream[120] = draw(rng, brightness_shift=-20 * SD)  # one black part
    stream[150:155] = [draw(rng, brightness_shift=-20 * SD) for _ in range(5)]  # five in a row
    assert run(monitor, stream) == []


def test_hold_needs_consecutive_drifting_checks() -> None:
    """With hold=3 the alarm comes exactly 2 observations after the first drifting check, not on it."""
    rng = np.random.default_rng(10)
    base = [draw(rng) for _ in range(50)] + [draw(rng, brightness_shift=-5 * SD) for _ in range(60)]
    first_drifting = None
    probe = DriftMonitor(reference(), hold=1)
    for index, observation in enumerate(base, start=1):
        if probe.update(observation) is not None:
            first_drifting = index
            break
    assert first_drifting is not None
    held = DriftMonitor(reference(), hold=3)
    assert run(held, base)[0][:2] == (first_drifting + 2, "raised")


def test_a_count_that_is_mostly_zero_still_has_its_own_bin() -> None:
    """detections is 0 on 90% of the reference: a line where every part has a detection drifts in it."""
    rng = np.random.default_rng(11)
    monitor = DriftMonitor(reference(), features=("detections",))
    stream = [dict(draw(rng), detections=1.0) for _ in range(80)]
    changes = run(monitor, stream)
    assert changes and changes[0][1:] == ("raised", ["detections"])


def test_confidences_below_the_stations_floor_count_as_nothing_found() -> None:
    """The profile keeps eval's low-confidence boxes; the station's detector drops them below its floor."""
    rng = np.random.default_rng(12)
    station_view = [dict(o, top_confidence=o["top_confidence"] if o["top_confidence"] >= 0.25 else 0.0)
                    for o in (draw(rng) for _ in range(600))]
    floored = DriftMonitor(reference(), features=("top_confidence",), confidence_floor=0.25)
    assert run(floored, station_view) == []
    unfloored = DriftMonitor(reference(), features=("top_confidence",))
    assert [state for _, state, _ in run(unfloored, station_view)][:1] == ["raised"]


def test_ks_p_value_matches_the_kolmogorov_distribution() -> None:
    # Q(1.358) = 0.05: the classic 5% critical value, for large samples lambda = sqrt(n m / (n + m)) D.
    n = m = 200_000
    assert ks_p_value(1.358 / np.sqrt(n * m / (n + m)), n, m) == pytest.approx(0.05, abs=0.001)
    assert ks_p_value(0.0, 50, 300) == 1.0
    same = np.sort(np.arange(100.0))
    assert ks_statistic(same, same) == 0.0
    assert ks_statistic(same, same + 1000) == 1.0
    assert ks_p_value(1.0, 50, 300) < 1e-20


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="window"):
        DriftMonitor(reference(), window=5)
    with pytest.raises(ValueError, match="no feature"):
        DriftMonitor(reference(), features=("colourfulness",))


def test_the_profile_is_found_beside_the_thresholds_and_drift_turns_on(tmp_path: Path) -> None:
    thresholds = tmp_path / "thresholds.yaml"
    thresholds.write_text("conf: 0.5\n")
    assert resolve_drift(WatchOptions(thresholds=thresholds)) == ("off", None)  # no profile: off, silently
    write_profile(reference(), tmp_path / "profile.json")
    mode, profile = resolve_drift(WatchOptions(thresholds=thresholds))
    assert mode == "alarm" and profile is not None and profile.images == REFERENCE_IMAGES
    assert resolve_drift(WatchOptions(thresholds=thresholds, drift="warn"))[0] == "warn"
    assert resolve_drift(WatchOptions(thresholds=thresholds, drift="off")) == ("off", None)


def test_drift_alarm_without_a_profile_is_a_usage_error_naming_where_it_looked(tmp_path: Path) -> None:
    thresholds = tmp_path / "thresholds.yaml"
    with pytest.raises(UsageError, match=f"{tmp_path / 'profile.json'} does not exist"):
        resolve_drift(WatchOptions(thresholds=thresholds, drift="alarm"))
    with pytest.raises(UsageError, match="no profile was given and there is no thresholds file"):
        resolve_drift(WatchOptions(drift="alarm"))
    with pytest.raises(UsageError, match="missing.json does not exist"):
        resolve_drift(WatchOptions(profile=tmp_path / "missing.json"))


def test_station_yaml_reads_a_bare_off() -> None:
    """YAML 1.1 reads ``drift: off`` as false: it still means off."""
    assert WatchOptions(drift=False).drift == "off"
    with pytest.raises(UsageError, match="drift"):
        WatchOptions(drift="loud")
