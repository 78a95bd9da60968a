"""The drift monitor of ``yolodefect watch``: does the line still look like the split the model was evaluated on?

:class:`DriftMonitor` is fed one observation per inspected part and compares a rolling window of the last
``window`` parts (default 50) with the reference profile ``yolodefect eval`` writes beside thresholds.yaml
(:mod:`yolodefect.inference.profile_file`). What a part's observation is:

* **image mode** (one frame is one part): the frame's image statistics (brightness, contrast, sharpness,
  mean_b/g/r of :func:`~yolodefect.inference.image_stats.image_statistics`), its top detection confidence and
  the number of detections the reject rules count; the same numbers the profile holds for each image.
* **track mode** (a moving line): the image statistics of the part's crop (its box on its evidence frame) only.
  The detection features are left out there: a line part's confidence is its maximum over the many frames it
  was seen on, not one look at one image as in the profile, so it would "drift" on every healthy line. The
  profile should then come from images of parts as this camera sees them (crops of a line video), since
  compression, scale and background change sharpness and contrast too.

Per feature and per check, two tests against the reference values:

* the **population stability index** over 10 bins cut at the reference's deciles (fewer where values tie; a
  value equal to a cut point falls in the lower bin, so a count that is mostly 0 still gets a bin of its own),
  each bin's share smoothed with half a count so an empty bin does not make it infinite:
  ``psi = sum((w - r) * ln(w / r))``. Rule of thumb: < 0.1 stable, 0.1-0.25 moving, > 0.25 shifted;
* the two-sample **Kolmogorov-Smirnov** test's p-value (the asymptotic Kolmogorov distribution).

A feature drifts when ``psi >= psi_alarm`` (0.25) and ``p < p_alarm`` (1e-6). Both are needed: on a window of
50 the PSI of a window drawn from the reference itself is already 0.17 on average (its sampling noise), so PSI
alone would alarm on a healthy line; the KS p-value says the move is not that noise, PSI says it is large.
``p_alarm`` is that small because the test is repeated on every part over overlapping windows and 8 features:
simulated on stable streams drawn from a 300-image reference, p_alarm 1e-3 raised 26 false alarms in 50,000
parts, 1e-4 raised 3, 1e-5 and 1e-6 none. The price: with 50 parts against 300 reference images, a whole window
moved by 1.2 standard deviations of the reference gives p ~ 2e-8 (alarm), by 1.0 only ~ 4e-6 (none); a line
that must see smaller moves needs a bigger ``window``.

Checks run on every observation once the window is full. The alarm is **raised** after ``hold`` (3)
consecutive checks with some feature drifting, and **cleared** after ``hold`` consecutive checks on which no
feature is still moved, a feature being still moved while ``psi >= psi_clear`` (0.1) and ``p < p_clear``
(0.05): the hysteresis that keeps one odd part, or a window at the edge of the threshold, from toggling it.
With a step change, the alarm comes once about a third to a half of the window shows the new state (plus
``hold - 1`` parts), and clears once the window is back to the reference for ``hold`` checks.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from yolodefect.errors import UsageError
from yolodefect.inference.profile_file import DETECTION_FEATURES, PROFILE_NAME, ReferenceProfile, read_profile
from yolodefect.inference.image_stats import IMAGE_FEATURES, image_statistics
from yolodefect.stream.options import DriftMode, WatchOptions

logger = logging.getLogger(__name__)

DEFAULT_WINDOW = 50
DEFAULT_PSI_ALARM = 0.25
DEFAULT_PSI_CLEAR = 0.1
DEFAULT_P_ALARM = 1e-6
DEFAULT_P_CLEAR = 0.05
DEFAULT_HOLD = 3
PSI_BINS = 10
_PSEUDO_COUNT = 0.5  # per bin, on both sides (Jeffreys): the epsilon that keeps an empty bin finite
_KS_TERMS = np.arange(1, 101)

ALL_FEATURES: tuple[str, ...] = (*IMAGE_FEATURES, *DETECTION_FEATURES)


@dataclass(frozen=True)
class FeatureTest:
    """One feature's window against the reference."""

    psi: float
    p_value: float
    reference_median: float
    window_median: float

    def to_dict(self) -> dict[str, float]:
        return {"psi": round(self.psi, 4), "p_value": float(f"{self.p_value:.3g}"),
                "reference_median": round(self.reference_median, 4), "window_median": round(self.window_median, 4)}


@dataclass(frozen=True)
class DriftTransition:
    """What :meth:`DriftMonitor.update` asks to emit: the alarm raised or cleared, and the features' numbers.

    ``features`` are the drifting features when raised; when cleared, the features that raised it, with their
    numbers now. ``observation`` is the count of observations fed so far (the part that tipped it).
    """

    state: Literal["raised", "cleared"]
    features: dict[str, FeatureTest] = field(default_factory=dict)
    observation: int = 0

    def reason(self) -> str:
        """The features in words, e.g. "brightness 118.2 -> 82.9 (psi 3.41)"."""
        moved = ", ".join(f"{name} {t.reference_median:.4g} -> {t.window_median:.4g} (psi {t.psi:.2f})"
                          for name, t in self.features.items())
        return moved or "no feature"

    def feature_dicts(self) -> dict[str, dict[str, float]]:
        return {name: test.to_dict() for name, test in self.features.items()}


def ks_p_value(statistic: float, n: int, m: int) -> float:
    """P(D >= statistic) of the two-sample Kolmogorov-Smirnov test, from the asymptotic Kolmogorov distribution
    with Stephens' small-sample correction (as in Numerical Recipes' ``probks``)."""
    if statistic <= 0:
        return 1.0
    effective = np.sqrt(n * m / (n + m))
    lam = (effective + 0.12 + 0.11 / effective) * statistic
    terms = 2.0 * np.sum((-1.0) ** (_KS_TERMS - 1) * np.exp(-2.0 * _KS_TERMS ** 2 * lam ** 2))
    return float(np.clip(terms, 0.0, 1.0))


def ks_statistic(reference_sorted: np.ndarray, window_sorted: np.ndarray) -> float:
    """The largest distance between the two empirical distribution functions (ties handled: both are evaluated
    right-continuous at every value of either sample)."""
    values = np.concatenate([reference_sorted, window_sorted])
    ref_cdf = np.searchsorted(reference_sorted, values, side="right") / len(reference_sorted)
    win_cdf = np.searchsorted(window_sorted, values, side="right") / len(window_sorted)
    return float(np.max(np.abs(ref_cdf - win_cdf)))


class _Reference:
    """One feature's reference: sorted values, PSI cut points and smoothed bin shares."""

    def __init__(self, values: np.ndarray):
        self.sorted = np.sort(values)
        self.cuts = np.unique(np.quantile(self.sorted, np.linspace(0, 1, PSI_BINS + 1)[1:-1]))
        self.shares = self.bin_shares(self.sorted)
        self.median = float(np.median(self.sorted))

    def bin_shares(self, values: np.ndarray) -> np.ndarray:
        counts = np.bincount(np.searchsorted(self.cuts, values, side="left"), minlength=len(self.cuts) + 1)
        return (counts + _PSEUDO_COUNT) / (counts.sum() + _PSEUDO_COUNT * len(counts))

    def test(self, window: np.ndarray) -> FeatureTest:
        shares = self.bin_shares(window)
        psi = float(np.sum((shares - self.shares) * np.log(shares / self.shares)))
        ordered = np.sort(window)
        p_value = ks_p_value(ks_statistic(self.sorted, ordered), len(self.sorted), len(ordered))
        return FeatureTest(psi, p_value, self.median, float(np.median(ordered)))


class DriftMonitor:
    """Rolling-window drift tests of the line's parts against a reference profile (see the module docstring).

    ``features``: the profile features compared (default: all of them; track mode passes the image
    features only). ``confidence_floor``: the lowest confidence the station's detector reports; profile
    values of ``top_confidence`` below it count as 0 (nothing found), as the station sees them.
    """

    def __init__(self, profile: ReferenceProfile, *, window: int = DEFAULT_WINDOW, psi_alarm: float = DEFAULT_PSI_ALARM,
                 psi_clear: float = DEFAULT_PSI_CLEAR, p_alarm: float = DEFAULT_P_ALARM, p_clear: float = DEFAULT_P_CLEAR,
                 hold: int = DEFAULT_HOLD, features: Sequence[str] = ALL_FEATURES, confidence_floor: float = 0.0):
        if window < 10:
            raise ValueError(f"drift window {window} is too small for a distribution test; use >= 10 parts")
        if not 0 < psi_clear <= psi_alarm:
            raise ValueError(f"need 0 < psi_clear ({psi_clear}) <= psi_alarm ({psi_alarm})")
        if not 0 < p_alarm <= p_clear < 1:
            raise ValueError(f"need 0 < p_alarm ({p_alarm}) <= p_clear ({p_clear}) < 1")
        if hold < 1:
            raise ValueError(f"hold {hold} must be >= 1")
        unknown = [name for name in features if name not in profile.features]
        if unknown:
            raise ValueError(f"the profile has no feature {', '.join(unknown)} (it has {', '.join(profile.features)})")
        self.features = tuple(features)
        self.window = window
        self.psi_alarm, self.psi_clear, self.p_alarm, self.p_clear, self.hold = psi_alarm, psi_clear, p_alarm, p_clear, hold
        self.confidence_floor = confidence_floor
        self._references = {}
        for name in self.features:
            values = np.asarray(profile.features[name], dtype=np.float64)
            if values.size < 2:
                raise ValueError(f"the profile holds {values.size} value(s) of {name}; it needs a split of images")
            self._references[name] = _Reference(self._censored(name, values))
        self._values = np.zeros((window, len(self.features)))
        self._seen = 0
        self._streak = 0  # consecutive checks in the direction that would change the state
        self.active = False
        self._raised_by: tuple[str, ...] = ()
        self.last: dict[str, FeatureTest] = {}  # the latest check's tests (empty until the window is full)

    def _censored(self, name: str, values: np.ndarray) -> np.ndarray:
        if name == "top_confidence" and self.confidence_floor > 0:
            return np.where(values < self.confidence_floor, 0.0, values)
        return values

    @property
    def observations(self) -> int:
        return self._seen

    def update(self, observation: Mapping[str, float]) -> DriftTransition | None:
        """Add one part's observation; returns the transition to emit when the alarm is raised or cleared."""
        row = np.array([observation[name] for name in self.features], dtype=np.float64)
        if "top_confidence" in self.features and self.confidence_floor > 0:
            index = self.features.index("top_confidence")
            row[index] = 0.0 if row[index] < self.confidence_floor else row[index]
        self._values[self._seen % self.window] = row
        self._seen += 1
        if self._seen < self.window:
            return None
        self.last = {name: self._references[name].test(self._values[:, i]) for i, name in enumerate(self.features)}
        if not self.active:
            drifting = {name: t for name, t in self.last.items() if t.psi >= self.psi_alarm and t.p_value < self.p_alarm}
            self._streak = self._streak + 1 if drifting else 0
            if self._streak < self.hold:
                return None
            self.active, self._streak, self._raised_by = True, 0, tuple(drifting)
            return DriftTransition("raised", drifting, self._seen)
        moved = [name for name, t in self.last.items() if t.psi >= self.psi_clear and t.p_value < self.p_clear]
        self._streak = 0 if moved else self._streak + 1
        if self._streak < self.hold:
            return None
        self.active, self._streak = False, 0
        return DriftTransition("cleared", {name: self.last[name] for name in self._raised_by}, self._seen)


def image_observation(image_bgr: np.ndarray, top_confidence: float, detections: int) -> dict[str, float]:
    """An image-mode part's observation: the frame's image statistics and its detections, as the profile holds them."""
    return {**image_statistics(image_bgr), "top_confidence": float(top_confidence), "detections": float(detections)}


def crop_observation(image_bgr: np.ndarray, part_box: np.ndarray) -> dict[str, float] | None:
    """A line part's observation: the image statistics of its crop; None when the box holds no pixels."""
    height, width = image_bgr.shape[:2]
    x1, y1, x2, y2 = (int(round(float(v))) for v in part_box)
    x1, x2 = max(0, min(x1, width)), max(0, min(x2, width))
    y1, y2 = max(0, min(y1, height)), max(0, min(y2, height))
    if x2 - x1 < 2 or y2 - y1 < 2:
        return None
    return image_statistics(image_bgr[y1:y2, x1:x2])


def resolve_drift(options: WatchOptions) -> tuple[DriftMode, ReferenceProfile | None]:
    """The drift mode a camera runs and its profile: ``options.profile``, else profile.json beside the thresholds
    file. Unset ``drift`` is alarm with a profile and off without; ``warn``/``alarm`` without one is a usage error
    naming where it looked."""
    if options.drift == "off":
        return "off", None
    candidates = [options.profile] if options.profile is not None else (
        [options.thresholds.with_name(PROFILE_NAME)] if options.thresholds is not None else [])
    found = next((path for path in candidates if path.is_file()), None)
    if found is None and options.profile is not None:
        raise UsageError(f"the reference profile {options.profile} does not exist; give the profile.json that "
                         "'yolodefect eval' wrote, or drop profile")
    if found is None:
        if options.drift is None:
            return "off", None
        looked = (f"{candidates[0]} does not exist" if candidates
                  else "no profile was given and there is no thresholds file to find profile.json beside")
        raise UsageError(f"drift={options.drift} needs the reference profile that 'yolodefect eval' writes: {looked}; "
                         "give --profile PATH (profile.json of an eval on the split the model was chosen on), or "
                         "--drift off")
    return options.drift or "alarm", read_profile(found)


def drift_monitor(profile: ReferenceProfile, options: WatchOptions, *, track_mode: bool,
                  confidence_floor: float) -> DriftMonitor:
    """A camera's monitor from its options: a line compares its parts' crops only (see the module docstring)."""
    try:
        monitor = DriftMonitor(profile, window=options.drift_window, psi_alarm=options.drift_psi,
                               features=IMAGE_FEATURES if track_mode else ALL_FEATURES,
                               confidence_floor=confidence_floor)
    except ValueError as exc:
        raise UsageError(f"the reference profile cannot be used for drift: {exc}") from None
    logger.info("drift monitor (%s): each window of %d %s against the profile of %d %s images (model %s): %s",
                options.drift, options.drift_window, "part crops" if track_mode else "parts", profile.images,
                profile.split, profile.model, ", ".join(monitor.features))
    return monitor
