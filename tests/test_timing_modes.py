"""The two ways `measure` times models: "alone" (deployment-true, one model running continuously, as on the line)
and "interleaved" (blocks of 5 runs per model), with same-run speed-ups per round.

The runners are fakes on a fake clock: each call advances the clock by what the model would cost, so every
figure below is exact, and the test runs in milliseconds.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Callable

import pytest

from yolodefect.errors import YoloDefectError
from yolodefect.inference import timing
from yolodefect.inference.timing import ALONE, INTERLEAVED, Runner, measure, speedup


class FakeMachine:
    """A clock plus the state a real CPU has between calls: which model ran last."""

    def __init__(self) -> None:
        self.now_ms = 0.0
        self.last: str | None = None
        self.calls: list[str] = []

    def perf_counter(self) -> float:
        return self.now_ms / 1000.0

    def runner(self, label: str, runtime: str, cost_ms: Callable[[FakeMachine, str], float], **kwargs) -> Runner:
        def run() -> None:
            self.now_ms += cost_ms(self, label)
            self.calls.append(label)
            self.last = label

        return Runner(label, runtime, run, **kwargs)


@pytest.fixture()
def machine(monkeypatch: pytest.MonkeyPatch) -> FakeMachine:
    fake = FakeMachine()
    monkeypatch.setattr(timing, "time", types.SimpleNamespace(perf_counter=fake.perf_counter))
    return fake


def woken_costs_more(machine: FakeMachine, label: str) -> float:
    """1 ms when the model ran just before (its thread pool is awake), 5 ms when another model ran in between."""
    return 1.0 if machine.last == label else 5.0


def test_alone_runs_each_model_consecutively_after_its_own_warm_up_in_alternating_rounds(machine: FakeMachine) -> None:
    entered: list[str] = []

    def context(label: str) -> Callable[[], contextlib.AbstractContextManager]:
        @contextlib.contextmanager
        def held():
            entered.append(label)
            yield

        return held

    runners = [machine.runner(label, "onnxruntime 1 CPU", woken_costs_more, context=context(label))
               for label in ("a", "b")]
    latency = measure(runners, runs=4, warmup=2, threads=2, mode=ALONE, rounds=3)

    assert machine.calls == (["a"] * 6 + ["b"] * 6) * 3  # 2 warm-up + 4 timed, per model, per round
    assert entered == ["a", "b"] * 3  # e.g. torch's thread count is set around each model's own runs
    for label in ("a", "b"):
        assert latency[label].mode == ALONE and latency[label].rounds == 3
        assert latency[label].runs == 12 and latency[label].warmup == 2
        assert latency[label].round_medians_ms == (1.0, 1.0, 1.0)
        assert latency[label].to_dict()["round_medians_ms"] == [1.0, 1.0, 1.0]


def test_interleaving_pays_the_wake_up_that_a_model_running_alone_never_pays(machine: FakeMachine) -> None:
    runners = [machine.runner(label, "openvino 2026 CPU", woken_costs_more) for label in ("a", "b")]
    alone = measure(runners, runs=10, warmup=1, threads=2, mode=ALONE, rounds=2)
    machine.calls.clear()
    interleaved = measure(runners, runs=10, warmup=1, threads=2, mode=INTERLEAVED)

    # interleaved: 1 warm-up each, then blocks of 5 (a, b, a, b): 12 calls per model, 10 of them timed
    assert machine.calls == ["a", "b"] + (["a"] * 5 + ["b"] * 5) * 2
    for label in ("a", "b"):
        # alone: every timed run finds its model awake, as on a station that runs one model continuously
        assert (alone[label].median_ms, alone[label].mean_ms, alone[label].p95_ms) == (1.0, 1.0, 1.0)
        assert alone[label].runs == 20
        # interleaved: the first run of every block of 5 is woken after the other model ran
        assert interleaved[label].mode == INTERLEAVED and interleaved[label].rounds == 1
        assert interleaved[label].runs == 10
        assert interleaved[label].mean_ms == pytest.approx((5.0 + 4 * 1.0) / 5)
        assert interleaved[label].p95_ms > 4.0
        assert interleaved[label].round_medians_ms == (interleaved[label].median_ms,)


def test_the_same_run_speed_up_is_the_median_of_the_per_round_ratios(machine: FakeMachine) -> None:
    runs = 3
    # A costs 4 ms and B 2 ms, except while the machine is loaded: B's whole second round runs 3x slower
    # (another job started and stopped); in every other round B is 2x faster than A.
    def cost(fake: FakeMachine, label: str) -> float:
        if label == "a":
            return 4.0
        b_calls = fake.calls.count("b")
        return 6.0 if runs <= b_calls < 2 * runs else 2.0

    runners = [machine.runner("a", "onnxruntime 1 CPU", cost), machine.runner("b", "openvino 2026 CPU", cost)]
    latency = measure(runners, runs=runs, warmup=0, threads=2, mode=ALONE, rounds=3)

    assert latency["a"].round_medians_ms == (4.0, 4.0, 4.0)
    assert latency["b"].round_medians_ms == (2.0, 6.0, 2.0)
    assert speedup(latency["a"], latency["b"]) == 2.0  # per round 2.0, 0.67, 2.0: the median
    assert speedup(latency["b"], latency["a"]) == 0.5
    assert speedup(latency["a"], latency["a"]) == 1.0


def test_speed_ups_are_formed_within_one_mode_and_modes_are_explicit(machine: FakeMachine) -> None:
    runners = [machine.runner(label, "onnxruntime 1 CPU", woken_costs_more) for label in ("a", "b")]
    alone = measure(runners, runs=2, warmup=1, threads=1, mode=ALONE, rounds=2)
    interleaved = measure(runners, runs=2, warmup=1, threads=1)
    assert interleaved["a"].mode == INTERLEAVED  # the default is unchanged
    assert speedup(interleaved["a"], interleaved["b"]) == pytest.approx(
        interleaved["a"].median_ms / interleaved["b"].median_ms)
    with pytest.raises(YoloDefectError, match="same-run speed-up"):
        speedup(alone["a"], interleaved["b"])
    with pytest.raises(YoloDefectError, match="latency mode 'together'"):
        measure(runners, runs=2, warmup=1, threads=1, mode="together")
    with pytest.raises(YoloDefectError, match="at least 1 round"):
        measure(runners, runs=2, warmup=1, threads=1, mode=ALONE, rounds=0)
