"""One model shared by several camera threads: one call at a time, frames waiting meanwhile go in as one batch,
and every caller gets the detections of its own frame (or the error of the call that ran it)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from yolodefect.detections import Detections
from yolodefect.stream.detector import SharedDetector


class SlowModel:
    """Finds one box whose x is the frame's pixel value; records every call's batch size; runs one call at a time."""

    class_names = ["scratch"]

    def __init__(self, seconds: float = 0.05, fail_on: int | None = None):
        self.seconds = seconds
        self.fail_on = fail_on
        self.batch_sizes: list[int] = []
        self.running = 0
        self.overlapped = False

    def _one(self, image: np.ndarray) -> Detections:
        value = float(image[0, 0, 0])
        if value == self.fail_on:
            raise RuntimeError(f"model failed on frame {value:.0f}")
        return Detections(np.array([[value, 0.0, value + 1, 1.0]]), np.array([0.9]), np.array([0]))

    def _timed(self, images: list[np.ndarray]) -> list[Detections]:
        self.running += 1
        self.overlapped |= self.running > 1
        try:
            time.sleep(self.seconds)
            self.batch_sizes.append(len(images))
            return [self._one(image) for image in images]
        finally:
            self.running -= 1

    def __call__(self, image: np.ndarray) -> Detections:
        return self._timed([image])[0]

    def predict_many(self, images: list[np.ndarray]) -> list[Detections]:
        return self._timed(images)


def frame(value: int, size: int = 8) -> np.ndarray:
    return np.full((size, size, 3), value, np.uint8)


def call_together(shared: SharedDetector, images: list[np.ndarray]) -> list[Detections | BaseException]:
    results: list[Detections | BaseException | None] = [None] * len(images)

    def run(index: int) -> None:
        try:
            results[index] = shared(images[index])
        except BaseException as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(images))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return results  # type: ignore[return-value]


def test_frames_waiting_while_the_model_runs_go_in_as_one_batch_each_caller_gets_its_own() -> None:
    model = SlowModel()
    shared = SharedDetector(model)
    first = threading.Thread(target=shared, args=(frame(1),))
    first.start()
    time.sleep(0.01)  # the model is busy with frame 1: frames 2-4 wait and go in together
    results = call_together(shared, [frame(2), frame(3), frame(4)])
    first.join()

    assert [float(r.xyxy[0, 0]) for r in results] == [2.0, 3.0, 4.0]
    assert model.batch_sizes == [1, 3]
    assert not model.overlapped  # never two calls at once
    assert shared.batches == {1: 1, 3: 1}


def test_frames_of_another_size_are_not_batched_with_them() -> None:
    model = SlowModel()
    shared = SharedDetector(model)
    first = threading.Thread(target=shared, args=(frame(1),))
    first.start()
    time.sleep(0.01)
    results = call_together(shared, [frame(2), frame(3, size=16), frame(4)])
    first.join()
    assert [float(r.xyxy[0, 0]) for r in results] == [2.0, 3.0, 4.0]
    assert sorted(model.batch_sizes) == [1, 1, 2]  # frames 2 and 4 together, the 16 px frame alone


def test_an_error_reaches_every_caller_of_that_batch_and_the_next_call_works() -> None:
    model = SlowModel(fail_on=3)
    shared = SharedDetector(model)
    first = threading.Thread(target=shared, args=(frame(1),))
    first.start()
    time.sleep(0.01)
    results = call_together(shared, [frame(2), frame(3)])
    first.join()
    assert all(isinstance(r, RuntimeError) and "frame 3" in str(r) for r in results)
    assert float(shared(frame(5)).xyxy[0, 0]) == 5.0


def test_a_model_without_batches_still_runs_one_call_at_a_time() -> None:
    model = SlowModel()
    model.predict_many = None  # type: ignore[assignment]  # e.g. a custom detector
    shared = SharedDetector(model)
    results = call_together(shared, [frame(v) for v in range(1, 6)])
    assert [float(r.xyxy[0, 0]) for r in results] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert model.batch_sizes == [1] * 5 and not model.overlapped


@pytest.mark.slow
def test_the_real_model_gives_a_batch_the_boxes_it_gives_each_frame() -> None:
    import cv2

    from yolodefect.data.synth import CLASS_NAMES, render_part
    from yolodefect.shipped import require_shipped_model
    from yolodefect.stream.detector import UltralyticsDetector

    detector = UltralyticsDetector(require_shipped_model(), imgsz=320, conf_floor=0.1)
    images = []
    for seed in (1, 2):
        gray, _ = render_part("steel", np.random.default_rng(seed), (320, 320), CLASS_NAMES["steel"][:2])
        images.append(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
    alone = [detector(image) for image in images]
    together = detector.predict_many(images)
    assert sum(len(d) for d in alone) >= 2  # the planted defects are found: the comparison has boxes to compare
    for one, batched in zip(alone, together):
        assert len(one) == len(batched)
        np.testing.assert_allclose(one.xyxy, batched.xyxy, atol=0.5)
        np.testing.assert_array_equal(one.class_id, batched.class_id)


def test_with_a_batch_wait_two_cameras_calling_in_turn_share_batches_a_lone_camera_never_waits() -> None:
    model = SlowModel(seconds=0.02)
    shared = SharedDetector(model, batch_wait_ms=200)
    results: dict[str, list[float]] = {"a": [], "b": []}

    def camera(name: str, base: int) -> None:
        for i in range(5):
            time.sleep(0.003)  # the camera's own work between frames: without waiting they would alternate
            results[name].append(float(shared(frame(base + i)).xyxy[0, 0]))

    threads = [threading.Thread(target=camera, args=("a", 10)), threading.Thread(target=camera, args=("b", 20))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == {"a": [10.0, 11.0, 12.0, 13.0, 14.0], "b": [20.0, 21.0, 22.0, 23.0, 24.0]}
    assert model.batch_sizes.count(2) >= 4  # nearly every pair went in together

    lone = SharedDetector(SlowModel(seconds=0.0), batch_wait_ms=500)
    started = time.monotonic()
    for i in range(5):
        lone(frame(i))
    assert time.monotonic() - started < 0.5  # one camera: no call waited for a batch
