"""The synthetic defect generator: determinism, exact boxes, balance, visibility, learnability."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from yolodefect.data.synth import (
    CLASS_NAMES,
    SYNTH_KINDS,
    SyntheticSample,
    generate_samples,
    render_part,
)

SIZES = [(256, 256), (160, 120), (128, 128)]


def _samples(kind: str, count: int, **kwargs) -> list[SyntheticSample]:
    return list(generate_samples(kind, count, **kwargs))


def _same(a: list[SyntheticSample], b: list[SyntheticSample]) -> bool:
    return len(a) == len(b) and all(
        x.name == y.name and x.boxes == y.boxes and np.array_equal(x.image, y.image) for x, y in zip(a, b)
    )


def test_kinds_and_class_names():
    assert SYNTH_KINDS == ("steel", "pcb")
    assert CLASS_NAMES["steel"] == ("scratch", "pit", "inclusion", "patch")
    assert CLASS_NAMES["pcb"] == ("open", "short", "mousebite", "spur", "spurious_copper", "pin_hole")


@pytest.mark.parametrize("kind", SYNTH_KINDS)
@pytest.mark.parametrize("size_wh", SIZES)
def test_render_part_returns_exactly_the_requested_defects(kind, size_wh):
    width, height = size_wh
    names = CLASS_NAMES[kind]
    for seed in range(10):
        # Every class, one repeated, in a shuffled order: boxes come back in the same order.
        requested = [names[(seed + i) % len(names)] for i in range(3)] + [names[seed % len(names)]]
        image, boxes = render_part(kind, np.random.default_rng(seed), size_wh, requested)
        assert image.shape == (height, width) and image.dtype == np.uint8
        assert [box.class_name for box in boxes] == requested
        for box in boxes:
            x0, y0, x1, y1 = box.xyxy
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height, box
            assert box.area > 0


@pytest.mark.parametrize("kind", SYNTH_KINDS)
def test_defect_free_render_has_no_boxes(kind):
    image, boxes = render_part(kind, np.random.default_rng(3), (256, 256), [])
    assert boxes == [] and image.shape == (256, 256)


@pytest.mark.parametrize("kind", SYNTH_KINDS)
def test_boxes_are_at_least_four_pixels_at_256(kind):
    for sample in generate_samples(kind, 40, seed=5, max_defects=3):
        for box in sample.boxes:
            assert box.width >= 4 and box.height >= 4, (sample.name, box)


@pytest.mark.parametrize("kind", SYNTH_KINDS)
def test_same_seed_same_samples_different_seed_different(kind):
    first = _samples(kind, 6, seed=11)
    again = _samples(kind, 6, seed=11)
    other = _samples(kind, 6, seed=12)
    assert _same(first, again)
    assert not any(np.array_equal(a.image, b.image) for a, b in zip(first, other))


@pytest.mark.parametrize("kind", SYNTH_KINDS)
def test_render_part_is_a_pure_function_of_the_generator(kind):
    a = render_part(kind, np.random.default_rng(7), (160, 120), CLASS_NAMES[kind][:2])
    b = render_part(kind, np.random.default_rng(7), (160, 120), CLASS_NAMES[kind][:2])
    assert np.array_equal(a[0], b[0]) and a[1] == b[1]


def test_a_shorter_run_is_a_prefix_of_a_longer_one():
    assert _same(_samples("pcb", 5, seed=2), _samples("pcb", 12, seed=2)[:5])


def test_sample_names():
    names = [sample.name for sample in generate_samples("steel", 13, seed=0)]
    assert names[0] == "steel_00000" and names[12] == "steel_00012"


@pytest.mark.parametrize("kind", SYNTH_KINDS)
def test_background_fraction_and_background_looks_like_the_same_surface(kind):
    samples = _samples(kind, 50, seed=4, background_fraction=0.2)
    background = [s for s in samples if not s.boxes]
    defective = [s for s in samples if s.boxes]
    assert len(background) == 10
    # Same surface: the grey-level statistics of defect-free parts fall in the range of those of
    # defective parts (a different texture or exposure would stand out here).
    for stat in (np.mean, np.std):
        values = [float(stat(s.image)) for s in defective]
        low, high = min(values), max(values)
        span = high - low
        for s in background:
            assert low - 0.1 * span <= float(stat(s.image)) <= high + 0.1 * span, (s.name, stat.__name__)


@pytest.mark.parametrize("fraction, expected", [(0.0, 0), (1.0, 20), (0.5, 10)])
def test_background_fraction_extremes(fraction, expected):
    samples = _samples("steel", 20, seed=0, size_wh=(64, 64), background_fraction=fraction)
    assert sum(1 for s in samples if not s.boxes) == expected


@pytest.mark.parametrize("kind", SYNTH_KINDS)
def test_classes_are_balanced_over_60_samples(kind):
    samples = _samples(kind, 60, seed=9, max_defects=3)
    counts = Counter(box.class_name for s in samples for box in s.boxes)
    assert set(counts) == set(CLASS_NAMES[kind])
    assert max(counts.values()) - min(counts.values()) <= 1, counts
    assert all(1 <= len(s.boxes) <= 3 for s in samples if s.boxes)


@pytest.mark.parametrize("kind", SYNTH_KINDS)
def test_defects_of_one_image_do_not_pile_up(kind):
    for sample in generate_samples(kind, 40, seed=1, background_fraction=0.0, max_defects=3):
        boxes = [box.xyxy for box in sample.boxes]
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                iw = min(a[2], b[2]) - max(a[0], b[0])
                ih = min(a[3], b[3]) - max(a[1], b[1])
                inter = max(iw, 0) * max(ih, 0)
                smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
                assert inter <= 0.5 * smaller, (sample.name, a, b)


# Peak grey-level change inside the box a defect must reach: steel texture noise is ~5-8 levels
# and patches are meant to be low-contrast; PCB defects flip copper and substrate.
_MIN_PEAK_CHANGE = {"steel": 20, "pcb": 100}


@pytest.mark.parametrize("kind", SYNTH_KINDS)
def test_each_defect_is_visible_inside_its_box(kind):
    # The part is drawn before its defects, so the same generator state without defects gives
    # the defect-free twin, and the difference is exactly what the defect changed.
    for name in CLASS_NAMES[kind]:
        for seed in range(8):
            clean, _ = render_part(kind, np.random.default_rng(seed), (256, 256), [])
            dirty, (box,) = render_part(kind, np.random.default_rng(seed), (256, 256), [name])
            change = np.abs(dirty.astype(np.int16) - clean.astype(np.int16))
            x0, y0, x1, y1 = (int(v) for v in box.xyxy)
            inside = change[y0:y1, x0:x1]
            assert inside.max() >= _MIN_PEAK_CHANGE[kind], (name, seed)
            # The box holds the defect: most of the change is inside it, not beside it.
            assert inside.sum() >= 0.8 * change.sum(), (name, seed)


@pytest.mark.parametrize("kind", SYNTH_KINDS)
def test_render_is_fast(kind):
    rng = np.random.default_rng(0)
    render_part(kind, rng, (256, 256), CLASS_NAMES[kind][:3])  # warm caches
    start = time.perf_counter()
    for _ in range(20):
        render_part(kind, rng, (256, 256), CLASS_NAMES[kind][:3])
    per_image = (time.perf_counter() - start) / 20
    # ~1.5 ms on one core; the bound is loose because test machines share their CPUs.
    assert per_image < 0.02


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: render_part("wood", np.random.default_rng(0), (64, 64), []), "unknown synthetic kind"),
        (lambda: render_part("steel", np.random.default_rng(0), (64, 64), ["open"]), "unknown steel defect"),
        (lambda: render_part("pcb", np.random.default_rng(0), (8, 64), []), "at least"),
        (lambda: list(generate_samples("wood", 3)), "unknown synthetic kind"),
        (lambda: list(generate_samples("steel", -1)), "count"),
        (lambda: list(generate_samples("steel", 2.5)), "count"),
        (lambda: list(generate_samples("steel", 3, background_fraction=1.5)), "background_fraction"),
        (lambda: list(generate_samples("steel", 3, max_defects=0)), "max_defects"),
        (lambda: list(generate_samples("steel", 3, seed=-1)), "seed"),
    ],
)
def test_bad_arguments_raise_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_generate_samples_checks_arguments_before_iterating():
    with pytest.raises(ValueError):
        generate_samples("steel", -1)  # no list(): the error must not wait for the first sample


def test_zero_count_yields_nothing():
    assert _samples("pcb", 0) == []


# ---------------------------------------------------------------------------------------------
# Learnability: a small YOLO trained briefly from scratch finds the defects.

# Measured on 2 shared CPU cores, 40 epochs at 128 px in 86-113 s: val mAP50 0.66 / 0.63 / 0.64
# for three dataset seeds (this test's seeds give the first). Ultralytics' default optimizer
# choice (AdamW at lr 0.00125 for this run length) reaches only 0.39-0.51 in the same budget, so
# the recipe is pinned here. A generator whose defects blend into the texture scored 0.0-0.25.
_LEARN_EPOCHS = 40
_LEARN_RECIPE = {"optimizer": "AdamW", "lr0": 0.004}
_MIN_MAP50 = 0.4


def _write_yolo_split(root: Path, split: str, samples: list[SyntheticSample], names: tuple[str, ...]) -> None:
    images, labels = root / "images" / split, root / "labels" / split
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    for sample in samples:
        cv2.imwrite(str(images / f"{sample.name}.png"), sample.image)
        height, width = sample.image.shape
        lines = [
            f"{names.index(b.class_name)} {(b.xyxy[0] + b.xyxy[2]) / 2 / width:.6f} "
            f"{(b.xyxy[1] + b.xyxy[3]) / 2 / height:.6f} {b.width / width:.6f} {b.height / height:.6f}"
            for b in sample.boxes
        ]
        (labels / f"{sample.name}.txt").write_text("\n".join(lines), encoding="utf-8")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_steel_defects_are_learnable(tmp_path):
    from ultralytics import YOLO

    names = CLASS_NAMES["steel"]
    root = tmp_path / "steel"
    _write_yolo_split(root, "train", _samples("steel", 120, seed=1, size_wh=(128, 128)), names)
    _write_yolo_split(root, "val", _samples("steel", 40, seed=2, size_wh=(128, 128)), names)
    data = root / "data.yaml"
    data.write_text(
        f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n"
        + "".join(f"  {i}: {name}\n" for i, name in enumerate(names)),
        encoding="utf-8",
    )
    # val=False: Ultralytics still validates the last epoch (what is asserted); validating all 40 cost a third of
    # the test's time (val mAP50 0.641 with it off on the dev machine, well above the bar).
    metrics = YOLO("yolo11n.yaml").train(
        data=str(data), imgsz=128, epochs=_LEARN_EPOCHS, batch=16, workers=0, plots=False,
        device="cpu", val=False, project=str(tmp_path), name="t", exist_ok=True, verbose=False,
        seed=0, deterministic=True, **_LEARN_RECIPE,
    )
    assert metrics.box.map50 > _MIN_MAP50, f"val mAP50 {metrics.box.map50:.3f}"
