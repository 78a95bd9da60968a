"""The reference profile ``eval`` writes beside thresholds.yaml: the split's image statistics, top confidences,
counted detections and reject rate, exactly as the station will measure them on the line (issue #17)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from yolodefect.errors import UsageError
from yolodefect.evaluate import evaluate
from yolodefect.evaluation.profile import PROFILE_VERSION, read_profile
from yolodefect.inference.image_stats import IMAGE_FEATURES, image_statistics
from tests.test_evaluate import LabelPredictor, write_dataset


def test_image_statistics_measure_what_they_say() -> None:
    flat = np.full((40, 60, 3), (10, 20, 30), np.uint8)
    stats = image_statistics(flat)
    assert set(stats) == set(IMAGE_FEATURES)
    assert (stats["mean_b"], stats["mean_g"], stats["mean_r"]) == (10.0, 20.0, 30.0)
    assert stats["contrast"] == 0.0 and stats["sharpness"] == 0.0
    assert stats["brightness"] == pytest.approx(cv2.cvtColor(flat, cv2.COLOR_BGR2GRAY).mean())

    rng = np.random.default_rng(0)
    sharp = rng.integers(0, 255, (400, 600, 3), dtype=np.uint8)
    blurred = cv2.GaussianBlur(sharp, (9, 9), 3)
    assert image_statistics(blurred)["sharpness"] < image_statistics(sharp)["sharpness"] / 10
    darker = image_statistics((sharp * 0.7).astype(np.uint8))
    assert darker["brightness"] == pytest.approx(image_statistics(sharp)["brightness"] * 0.7, rel=0.02)
    grey = image_statistics(sharp[:, :, 0])  # a mono camera: one channel
    assert grey["mean_b"] == grey["mean_g"] == grey["mean_r"] == pytest.approx(grey["brightness"], abs=0.5)


def test_eval_writes_the_profile_of_the_split_it_evaluated(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "ds", {"a": "0 0.5 0.5 0.5 0.5\n", "b": "1 0.2 0.5 0.2 0.4\n", "c": "", "d": ""})
    for grey, stem in zip((160, 40, 120, 80), "abcd"):  # each image its own brightness
        cv2.imwrite(str(tmp_path / "ds" / "images" / "val" / f"{stem}.png"), np.full((40, 80, 3), grey, np.uint8))
    result = evaluate("fake.pt", data, target_recall=1.0, out_dir=tmp_path / "out", predictor=LabelPredictor(data))

    assert result.files["profile"] == tmp_path / "out" / "profile.json"
    assert result.files["profile"].parent == result.files["thresholds"].parent  # beside thresholds.yaml
    profile = read_profile(result.files["profile"])
    assert (profile.split, profile.model, profile.images, profile.version) == ("val", "fake.pt", 4, PROFILE_VERSION)
    # Thresholds 0.65 (see test_evaluate): a and b (0.9) are rejected, c (0.4) and d (0.05) pass.
    assert profile.reject_rate == 0.5
    assert profile.thresholds == {"scratch": pytest.approx(0.65), "dent": pytest.approx(0.65)}
    assert profile.features["top_confidence"] == [0.05, 0.4, 0.9, 0.9]
    assert profile.features["detections"] == [0.0, 0.0, 1.0, 1.0]
    assert profile.features["brightness"] == [40.0, 80.0, 120.0, 160.0]
    assert profile.features["contrast"] == [0.0] * 4
    assert not (tmp_path / "out" / "profile.json.partial").exists()


def test_a_file_that_is_not_a_profile_is_refused_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "profile.json"
    path.write_text("{not json")
    with pytest.raises(UsageError, match="not a reference profile .not JSON"):
        read_profile(path)
    path.write_text(json.dumps({"version": PROFILE_VERSION + 1, "features": {}}))
    with pytest.raises(UsageError, match="upgrade yolodefect"):
        read_profile(path)
    path.write_text(json.dumps({"version": PROFILE_VERSION, "features": {"brightness": []}}))
    with pytest.raises(UsageError, match="lacks contrast, sharpness"):
        read_profile(path)
    with pytest.raises(UsageError, match="cannot read the reference profile"):
        read_profile(tmp_path / "missing.json")
