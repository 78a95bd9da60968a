"""The anomaly model (PatchCore) on generated steel parts: learned from good parts only, it must score a planted
defect above every good part, point its heatmap at the defect, round-trip through its file, and refuse what
cannot match (another backbone, another image size, no good images)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from yolodefect.anomaly import (AnomalyTrainOptions, is_anomaly_model_file, load_anomaly_model, train_anomaly)
from yolodefect.anomaly.patches import NearestSearch, greedy_coreset
from yolodefect.cli import app
from yolodefect.data.synth import render_part
from yolodefect.errors import DatasetError, FormatError

DEMO = Path(__file__).resolve().parents[1] / "weights" / "yolodefect-demo.pt"
SIZE = (160, 160)
IMGSZ = 128


def _write_good(folder: Path, count: int, seed: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        image, boxes = render_part("steel", rng, SIZE, [])
        assert boxes == []
        paths.append(folder / f"good_{i:03d}.png")
        cv2.imwrite(str(paths[-1]), image)
    return paths


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("anomaly")
    _write_good(root / "good", 24, seed=1)
    result = train_anomaly(AnomalyTrainOptions(data=root / "good", backbone=str(DEMO), imgsz=IMGSZ,
                                               out=root / "model.npz"))
    return root, result


def test_a_planted_defect_scores_above_every_good_part_and_the_heatmap_points_at_it(trained):
    _, result = trained
    model = result.model
    rng = np.random.default_rng(99)  # parts the model never saw
    good = [render_part("steel", rng, SIZE, [])[0] for _ in range(12)]
    defective = [render_part("steel", rng, SIZE, [name]) for name in ("pit", "inclusion", "scratch", "patch")
                 for _ in range(2)]
    good_scores = [r.score for r in model.score(good)]
    for image, boxes in defective:
        (found,) = model.score([image])
        assert found.score > max(good_scores), (boxes[0].class_name, found.score, max(good_scores))
        assert found.anomaly_map.shape == image.shape[:2]
        y, x = np.unravel_index(int(np.argmax(found.anomaly_map)), found.anomaly_map.shape)
        x1, y1, x2, y2 = boxes[0].xyxy
        margin = 8  # one feature cell: the map is computed at stride 8, then smoothed
        assert x1 - margin <= x <= x2 + margin and y1 - margin <= y <= y2 + margin, (boxes[0], (x, y))
        px1, py1, px2, py2 = found.peak_xyxy
        assert px1 <= x <= px2 and py1 <= y <= py2
    assert 0.0 < model.confidence(max(good_scores)) < 1.0
    assert model.score_for_confidence(model.threshold_confidence) == pytest.approx(model.threshold)


def test_the_model_file_round_trips_and_says_what_it_saw(trained):
    root, result = trained
    assert is_anomaly_model_file(result.model_path) and not is_anomaly_model_file(DEMO)
    loaded = load_anomaly_model(result.model_path)
    assert loaded.card == result.model.card
    assert np.array_equal(loaded.bank, result.model.bank)
    image = render_part("steel", np.random.default_rng(5), SIZE, ["pit"])[0]
    assert loaded.score([image])[0].score == pytest.approx(result.model.score([image])[0].score, rel=1e-5)
    card = loaded.card
    assert card["good_images"] + card["holdout_images"] == 24 and card["holdout_images"] == 2
    assert card["backbone"]["name"] == DEMO.name and len(card["backbone"]["sha256"]) == 64
    assert card["bank_size"] == len(loaded.bank) <= card["pool_size"]
    # the bank is bounded by the ratio: 22 images x (128/8)^2 patches x 0.1
    assert card["bank_size"] == int(np.ceil(0.1 * 22 * (IMGSZ // 8) ** 2))
    assert loaded.threshold == pytest.approx(max(result.holdout_scores))


def test_a_model_file_from_another_backbone_or_image_size_is_refused(trained, tmp_path):
    _, result = trained
    other = tmp_path / "other.pt"
    checkpoint = torch.load(DEMO, map_location="cpu", weights_only=False)
    checkpoint["date"] = "another training run"  # same architecture, another file: features cannot be trusted
    torch.save(checkpoint, other)
    with pytest.raises(FormatError, match="sha256.*would not match the memory bank"):
        load_anomaly_model(result.model_path, backbone_weights=other)
    with pytest.raises(FormatError, match=f"trained at {IMGSZ} px; scoring at 256 px"):
        load_anomaly_model(result.model_path, imgsz=256)
    with pytest.raises(FormatError, match="not an anomaly model"):
        load_anomaly_model(_npz_without_marker(tmp_path))


def _npz_without_marker(folder: Path) -> Path:
    path = folder / "plain.npz"
    np.savez(path, memory_bank=np.zeros((2, 2), np.float32))
    return path


def test_too_few_good_images_is_a_clear_error_naming_the_count(tmp_path):
    data = tmp_path / "data"
    for split in ("train", "val"):
        (data / "images" / split).mkdir(parents=True)
        (data / "labels" / split).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(6):  # defective images only: every label file has a box
        image, boxes = render_part("steel", rng, SIZE, ["pit"])
        cv2.imwrite(str(data / "images" / "train" / f"d{i}.png"), image)
        (data / "labels" / "train" / f"d{i}.txt").write_text("1 0.5 0.5 0.1 0.1\n")
    (data / "data.yaml").write_text(f"path: {data}\ntrain: images/train\nval: images/val\n"
                                    "names: {0: scratch, 1: pit}\n")
    with pytest.raises(DatasetError, match=r"found 0 good image\(s\) in the train split .* at least 10"):
        train_anomaly(AnomalyTrainOptions(data=data / "data.yaml", backbone=str(DEMO), imgsz=IMGSZ))
    result = CliRunner().invoke(app, ["anomaly", "train", str(data), "--backbone", str(DEMO)])
    assert result.exit_code == 1 and "found 0 good image(s)" in result.output and "Traceback" not in result.output


def test_cli_trains_from_a_dataset_s_defect_free_images(tmp_path):
    data = tmp_path / "data"
    (data / "labels" / "train").mkdir(parents=True)
    good = _write_good(data / "images" / "train", 11, seed=3)
    (data / "labels" / "train" / f"{good[0].stem}.txt").write_text("")  # empty label file: defect-free
    image, _ = render_part("steel", np.random.default_rng(4), SIZE, ["scratch"])
    cv2.imwrite(str(data / "images" / "train" / "bad.png"), image)
    (data / "labels" / "train" / "bad.txt").write_text("0 0.5 0.5 0.2 0.2\n")  # not a good image
    (data / "data.yaml").write_text(f"path: {data}\ntrain: images/train\nval: images/train\nnames: [scratch, pit]\n")
    out = tmp_path / "m.npz"
    result = CliRunner().invoke(app, ["anomaly", "train", str(data / "data.yaml"), "--backbone", str(DEMO),
                                      "--imgsz", "64", "--max-bank", "50", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["good_images"] + report["holdout_images"] == 11  # the defective image is left out
    assert report["bank_size"] == 50 and Path(report["model"]) == out and is_anomaly_model_file(out)


def test_greedy_coreset_keeps_the_outlier_and_the_search_is_exact():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(500, 8)).astype(np.float32)
    points[123] += 40.0  # one rare patch: the coreset must keep it, a random sample usually would not
    picked = greedy_coreset(torch.from_numpy(points), 10).numpy()
    assert 123 in picked and len(set(picked)) == 10
    queries = rng.normal(size=(50, 8)).astype(np.float32)
    expected = np.sqrt(((queries[:, None, :] - points[None]) ** 2).sum(-1)).min(1)
    assert np.allclose(NearestSearch(points).distances(queries), expected, atol=1e-3)


def test_a_raw_labelled_dataset_is_not_taken_for_a_folder_of_good_parts(tmp_path):
    raw = tmp_path / "neu-like"
    _write_good(raw / "IMAGES", 12, seed=7)
    (raw / "ANNOTATIONS").mkdir()
    (raw / "ANNOTATIONS" / "good_000.xml").write_text("<annotation><object><name>pit</name></object></annotation>")
    with pytest.raises(DatasetError, match="looks like a labelled dataset.*Convert it first"):
        train_anomaly(AnomalyTrainOptions(data=raw, backbone=str(DEMO), imgsz=64))


def test_the_score_is_how_far_the_worst_patch_stands_out_from_the_part_s_own_patches():
    from yolodefect.anomaly.model import image_score

    familiar_with_defect = np.full((16, 16), 1.0, np.float32)
    familiar_with_defect[3, 4] = 4.0
    # a good part of a design the bank never saw: every patch somewhat far, none standing out
    unfamiliar_good = np.random.default_rng(0).uniform(2.5, 3.0, (16, 16)).astype(np.float32)
    assert image_score(familiar_with_defect) == pytest.approx(3.0)
    assert image_score(unfamiliar_good) < 0.5 < image_score(familiar_with_defect)
    # PatchCore's plain maximum ranks them the other way round only when the design shift is larger than the defect
    assert image_score(unfamiliar_good + 2.0, "peak") > image_score(familiar_with_defect, "peak")
    assert image_score(unfamiliar_good + 2.0) == pytest.approx(image_score(unfamiliar_good), abs=1e-5)


def test_a_model_written_before_the_score_rule_keeps_the_plain_maximum_its_threshold_was_set_with(trained, tmp_path):
    _, result = trained
    assert result.model.card["score_rule"] == "peak_over_p90"
    image = render_part("steel", np.random.default_rng(5), SIZE, ["pit"])[0]
    (new,) = result.model.score([image])
    distances = result.model.patch_distances([image])[0]
    assert new.score == pytest.approx(float(distances.max() - np.percentile(distances, 90)), rel=1e-5)
    assert new.baseline == pytest.approx(float(np.percentile(distances, 90)), rel=1e-5)

    old_card = {k: v for k, v in result.model.card.items() if k != "score_rule"}
    old = result.model.__class__(result.model.backbone, result.model.bank, old_card).save(tmp_path / "old.npz")
    (legacy,) = load_anomaly_model(old).score([image])
    assert legacy.score == pytest.approx(float(distances.max()), rel=1e-5) and legacy.baseline == 0.0
    # the maps are PatchCore's raw distances either way: only the score subtracts the baseline
    assert np.allclose(legacy.anomaly_map, new.anomaly_map)

    future = tmp_path / "future.npz"
    np.savez(future, yolodefect_anomaly=np.array(1), memory_bank=result.model.bank,
             card=np.array(json.dumps(dict(result.model.card, score_rule="peak_over_p95"))))
    with pytest.raises(FormatError, match="future.npz.*score rule 'peak_over_p95'"):
        load_anomaly_model(future)


def test_heatmap_colours_start_at_the_part_s_baseline_and_fill_at_the_threshold():
    from yolodefect.anomaly import heat_levels

    anomaly_map = np.array([[2.0, 2.5], [3.5, 9.0]], np.float32)
    levels = heat_levels(anomaly_map, baseline=2.0, threshold_score=1.0, full_scale=1.5)
    assert levels.ravel().tolist() == pytest.approx([0.0, 0.5 / 1.5, 1.0, 1.0])
    never = heat_levels(anomaly_map, baseline=2.0, threshold_score=float("inf"), full_scale=1.5)
    assert never.max() == 1.0 and never[0, 0] == 0.0
