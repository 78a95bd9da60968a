"""``yolodefect eval`` on an anomaly model: AUROC, part rates, thresholds.yaml for the station, plots, CLI.

A real PatchCore model (on the demo checkpoint's backbone) is trained once on generated steel parts at
128 px; the val split holds good parts and parts with generated defects.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from tests.conftest import DEMO_MODEL
from yolodefect.anomaly import ANOMALY_CLASS, AnomalyModel, AnomalyTrainOptions, load_anomaly_model, train_anomaly
from yolodefect.anomaly.evaluate import (
    NO_DEFECTIVE_IMAGES,
    auroc,
    auroc_from_histograms,
    escape_at_false_reject_rate,
    evaluate_anomaly,
)
from yolodefect.cli import app
from yolodefect.errors import UsageError
from yolodefect.inference.rules import build_reject_rules
from yolodefect.inference.thresholds_file import read_thresholds_yaml
from yolodefect.render import render_anomaly_eval


@pytest.fixture(scope="module")
def steel(tmp_path_factory) -> Path:
    """40 steel parts of 128 px, half of them defect-free, split train/val in halves."""
    from yolodefect.data.synth_dataset import SynthOptions, synthesize

    out = tmp_path_factory.mktemp("anomaly_eval") / "steel"
    synthesize(out, SynthOptions(images=40, size_wh=(128, 128), background_fraction=0.5, split="0.5,0.5"))
    return out


@pytest.fixture(scope="module")
def model_file(steel: Path) -> Path:
    result = train_anomaly(AnomalyTrainOptions(data=steel, backbone=str(DEMO_MODEL), imgsz=128,
                                               out=steel.parent / "anomaly.npz"))
    return result.model_path


@pytest.fixture(scope="module")
def model(model_file: Path) -> AnomalyModel:
    """The model loaded once: loading its backbone takes seconds."""
    return load_anomaly_model(model_file)


def _rendered(result) -> str:
    console = Console(record=True, width=200)
    render_anomaly_eval(result, console)
    return console.export_text()


def _scores_csv(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _val_truth(steel: Path) -> dict[str, bool]:
    """Image name -> defective, read from the label files themselves."""
    images = (steel / "images" / "val").iterdir()
    labels = {image.name: steel / "labels" / "val" / f"{image.stem}.txt" for image in images}
    return {name: label.is_file() and bool(label.read_text().strip()) for name, label in labels.items()}


# ---- the measures, on hand-checked cases ----

def test_auroc_counts_ties_as_half() -> None:
    # Positives 0.4 and 0.8, negatives 0.1 and 0.4: pairs (0.4>0.1)=1, (0.4=0.4)=1/2, (0.8>0.1)=1, (0.8>0.4)=1.
    assert auroc([0.1, 0.4, 0.4, 0.8], [False, True, False, True]) == pytest.approx(3.5 / 4)
    assert auroc([3, 1, 2], [True, False, False]) == 1.0
    assert auroc([3, 1, 2], [False, True, True]) == 0.0
    assert auroc([5, 5, 5, 5], [True, False, True, False]) == 0.5
    assert auroc([1, 2], [False, False]) is None  # undefined without positives
    assert auroc([1, 2], [True, True]) is None


def test_histogram_auroc_equals_the_rank_auroc_when_each_value_has_its_bin() -> None:
    rng = np.random.default_rng(3)
    values = rng.integers(0, 20, size=300)
    positive = rng.random(300) < values / 25  # higher values more often positive, many ties
    counts = [np.bincount(values[mask], minlength=20) for mask in (positive, ~positive)]
    assert auroc_from_histograms(*counts) == pytest.approx(auroc(values, positive))
    assert auroc_from_histograms(np.zeros(4), np.ones(4)) is None


def test_escape_at_false_reject_rate_takes_the_lowest_threshold_within_the_budget() -> None:
    # 10 good parts (0.10 .. 0.55, 0.90), 4 defective (0.30, 0.60, 0.70, 0.95).
    good = [0.10, 0.15, 0.20, 0.25, 0.35, 0.40, 0.45, 0.50, 0.55, 0.90]
    bad = [0.30, 0.60, 0.70, 0.95]
    confidence = np.array(good + bad)
    defective = np.array([False] * 10 + [True] * 4)
    strict = escape_at_false_reject_rate(confidence, defective, 0.05)  # 0 of 10 good may be rejected
    assert strict.threshold_confidence == pytest.approx(0.95)
    assert (strict.escapes, strict.false_rejects) == (3, 0)
    loose = escape_at_false_reject_rate(confidence, defective, 0.10)  # 1 of 10: the good 0.90 may go
    assert loose.threshold_confidence == pytest.approx(0.60)
    assert (loose.escapes, loose.false_rejects, loose.escape_rate, loose.false_reject_rate) == (1, 1, 0.25, 0.1)
    assert escape_at_false_reject_rate(confidence[:10], defective[:10], 0.05).escape_rate is None


# ---- a real model on generated parts ----

def test_defective_parts_rank_above_good_ones_and_rates_match_the_station(model: AnomalyModel, steel: Path,
                                                                           tmp_path: Path) -> None:
    result = evaluate_anomaly(model, steel, out_dir=tmp_path / "run")
    truth = _val_truth(steel)
    rows = _scores_csv(result.files["scores"])
    assert sorted(Path(row["image"]).name for row in rows) == sorted(truth)
    assert all(bool(int(row["defective"])) == truth[Path(row["image"]).name] for row in rows)
    assert (result.defective, result.good) == (sum(truth.values()), len(truth) - sum(truth.values()))

    scores = np.array([float(row["score"]) for row in rows])
    defective = np.array([row["defective"] == "1" for row in rows])
    # Every part with a generated defect scores above every good part.
    assert scores[defective].min() > scores[~defective].max()
    assert result.image_auroc == 1.0 == auroc(scores, defective)
    assert result.pixel_auroc is not None and result.pixel_auroc > 0.8  # the map lights up inside the boxes

    # At the model's own threshold, the decision is the station's rule on the anomaly class's confidence.
    confidence = np.array([float(row["confidence"]) for row in rows], dtype=np.float32)
    rejected = confidence >= np.float32(result.threshold_confidence)
    assert result.threshold_source.startswith("the model's own")
    assert [row["rejected"] == "1" for row in rows] == rejected.tolist()
    assert result.rates.escapes == int((defective & ~rejected).sum())
    assert result.rates.false_rejects == int((~defective & rejected).sum())
    assert len(result.at_false_reject_rate) == 2
    assert [p.max_false_reject_rate for p in result.at_false_reject_rate] == [0.01, 0.05]
    # Separable parts: some threshold passes every good part and rejects every defective one.
    assert all(p.escape_rate == 0.0 and p.false_reject_rate == 0.0 for p in result.at_false_reject_rate)

    for name in ("score_histogram", "heatmap_highest_defective", "heatmap_lowest_defective", "heatmap_highest_good"):
        image = cv2.imread(str(result.files[name]))
        assert image is not None and image.shape[0] > 100, name
    saved = json.loads(result.files["metrics"].read_text())
    assert saved["image_auroc"] == 1.0 and saved["kind"] == "anomaly"
    shown = _rendered(result)
    assert "image AUROC" in shown and "escape at false-reject <= 1%" in shown


def test_target_recall_writes_an_anomaly_threshold_the_station_reads(model: AnomalyModel, steel: Path,
                                                                     tmp_path: Path) -> None:
    result = evaluate_anomaly(model, steel, target_recall=1.0, out_dir=tmp_path / "run", plots=False)
    written = read_thresholds_yaml(result.files["thresholds"])
    assert written.conf == {ANOMALY_CLASS: pytest.approx(result.threshold_confidence)}
    assert written.reject_classes == [ANOMALY_CLASS] and written.target_reached and written.recall == 1.0
    rows = _scores_csv(result.files["scores"])
    defective_confidence = [float(row["confidence"]) for row in rows if row["defective"] == "1"]
    good_confidence = [float(row["confidence"]) for row in rows if row["defective"] == "0"]
    # Every defective part reaches the written threshold; on this separable split no good part does.
    assert min(defective_confidence) >= written.conf[ANOMALY_CLASS] > max(good_confidence)
    assert (result.rates.escapes, result.rates.false_rejects) == (0, 0)
    # The station's own rules built from the file reject exactly those parts.
    rules = build_reject_rules(thresholds=written)
    assert rules.reject_classes == {ANOMALY_CLASS}

    again = evaluate_anomaly(model, steel, thresholds=result.files["thresholds"])
    assert again.rates == result.rates and again.threshold_source.startswith("thresholds file")


def test_eval_cli_dispatches_an_anomaly_model(model_file: Path, steel: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["eval", str(model_file), str(steel), "--json", "--out", str(tmp_path / "run"),
                                      "--target-recall", "0.9"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["kind"] == "anomaly" and report["image_auroc"] == 1.0
    assert report["thresholds"]["conf"].keys() == {ANOMALY_CLASS}
    assert Path(report["files"]["thresholds"]).is_file() and Path(report["files"]["heatmap_highest_good"]).is_file()


def test_detector_options_are_refused_for_an_anomaly_model(model_file: Path, model: AnomalyModel, steel: Path,
                                                           tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["eval", str(model_file), str(steel), "--conf", "0.5", "--roi", "0,0 9,0 9,9",
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "--conf, --roi apply to detectors" in result.output
    assert not (tmp_path / "run").exists()
    with pytest.raises(UsageError, match="trained at 128"):
        evaluate_anomaly(model, steel, imgsz=256)


def test_detector_thresholds_file_is_refused(model: AnomalyModel, steel: Path, tmp_path: Path) -> None:
    detector_file = tmp_path / "thresholds.yaml"
    detector_file.write_text(yaml.safe_dump({"conf": {"scratch": 0.3}}))
    with pytest.raises(UsageError, match="no threshold for class 'anomaly'"):
        evaluate_anomaly(model, steel, thresholds=detector_file)


def test_a_split_without_defective_parts_says_auroc_is_undefined(model_file: Path, model: AnomalyModel, steel: Path,
                                                                 tmp_path: Path) -> None:
    good_only = tmp_path / "good_only"
    for image in (steel / "images" / "val").iterdir():
        label = steel / "labels" / "val" / f"{image.stem}.txt"
        if label.is_file() and label.read_text().strip():
            continue
        (good_only / "images" / "val").mkdir(parents=True, exist_ok=True)
        shutil.copy(image, good_only / "images" / "val" / image.name)
    config = yaml.safe_load((steel / "data.yaml").read_text())
    (good_only / "data.yaml").write_text(yaml.safe_dump({"path": str(good_only), "val": "images/val",
                                                        "names": config["names"]}))

    result = evaluate_anomaly(model, good_only, out_dir=tmp_path / "run")
    assert result.defective == 0 and result.good > 0
    assert result.image_auroc is None and result.pixel_auroc is None and result.rates.escape_rate is None
    assert NO_DEFECTIVE_IMAGES in result.notes
    assert "AUROC is undefined" in _rendered(result)
    assert (tmp_path / "run" / "heatmap_highest_good.png").is_file()

    refused = CliRunner().invoke(app, ["eval", str(model_file), str(good_only), "--target-recall", "0.99",
                                       "--out", str(tmp_path / "target")])
    assert refused.exit_code == 2
    assert "no defective images" in refused.output
