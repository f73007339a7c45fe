"""The choice between running work shared with the team's helpers and on the calling thread
alone (convnet.core.thread_choice): on a simulated clock it follows the faster way as the cores'
placement changes, first calls do not mislead it, trials stay a small share of the time; and
running alone hands nothing to a helper and gives the same bits."""

from __future__ import annotations

import threading

import numpy as np
import pytest

numba = pytest.importorskip("numba")

import convnet as cn  # noqa: E402
from convnet.core import team, thread_choice  # noqa: E402
from convnet.core.thread_choice import ThreadChoice  # noqa: E402
from tests.test_team import meet, two_threads  # noqa: E402, F401 - (a fixture)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def simulate(choice: ThreadChoice, clock: Clock, seconds: float, shared: float,
             alone: float) -> tuple[int, int]:
    """Calls for `seconds` of the simulated clock, each taking `shared` or `alone` seconds
    by the way chosen; returns (calls made alone, calls)."""
    end, calls, alone_calls = clock.now + seconds, 0, 0
    while clock.now < end:
        way = choice.alone()
        took = alone if way else shared
        clock.now += took
        choice.record(way, took)
        calls += 1
        alone_calls += way
    return alone_calls, calls


def test_it_follows_the_faster_way_as_the_placement_changes():
    clock = Clock()
    choice = ThreadChoice(clock)
    # near: 158 us shared, 190 alone (mobilenet-mini's one image): tried once
    alone, calls = simulate(choice, clock, 5.0, 158e-6, 190e-6)
    assert not choice.alone_now and 0 < alone <= thread_choice.TRIAL_CALLS + 1
    # far: 463 us shared; within a tenth of a second it runs alone
    alone, calls = simulate(choice, clock, 0.1, 463e-6, 190e-6)
    assert choice.alone_now
    alone, calls = simulate(choice, clock, 5.0, 463e-6, 190e-6)
    assert choice.alone_now and alone > 0.97 * calls
    # near again: back to shared within a second
    simulate(choice, clock, 1.0, 158e-6, 190e-6)
    assert not choice.alone_now


def test_calls_made_counts_each_way_over_every_live_choice():
    """What bench.worker reports per repetition: the calls each way, summed over choices."""
    clock = Clock()
    before = thread_choice.calls_made()
    first, second = ThreadChoice(clock), ThreadChoice(clock)
    alone_first, calls_first = simulate(first, clock, 1.0, 463e-6, 190e-6)  # goes alone
    alone_second, calls_second = simulate(second, clock, 0.5, 158e-6, 190e-6)
    assert alone_first > calls_first // 2 and 0 < alone_second < calls_second // 2
    shared, alone = (after - earlier for after, earlier
                     in zip(thread_choice.calls_made(), before, strict=True))
    assert alone == alone_first + alone_second
    assert shared + alone == calls_first + calls_second
    assert first.calls == [calls_first - alone_first, alone_first]


def test_heavy_work_that_gains_from_the_helper_stays_shared_and_trials_cost_little():
    """vggish's training backward: 90 ms shared, 160 alone, near or far."""
    clock = Clock()
    choice = ThreadChoice(clock)
    alone, calls = simulate(choice, clock, 60.0, 0.070, 0.160)  # near: tried alone once
    assert alone == 1
    alone, calls = simulate(choice, clock, 600.0, 0.090, 0.160)  # far: tried, not taken
    assert not choice.alone_now and alone > 0
    lost = alone * (0.160 - 0.090)
    assert lost < 0.02 * 600.0, f"trials lost {lost:.1f} s of 600"
    # a trial of a way clearly slower stops at its first call (heavy calls: no warm-up)
    longest = run = 0
    for _ in range(2000):
        way = choice.alone()
        took = 0.160 if way else 0.090
        clock.now += took
        choice.record(way, took)
        run = run + 1 if way else 0
        longest = max(longest, run)
    assert longest == 1


def test_a_way_fast_now_and_then_but_slow_mostly_is_not_taken():
    """Far apart, shared calls of vggish's one image took 190 us now and then and 460-610
    mostly; alone 350."""
    rng = np.random.default_rng(5)
    clock = Clock()
    choice = ThreadChoice(clock)
    simulate(choice, clock, 5.0, 200e-6, 350e-6)  # near first
    for alone_takes in (350e-6, 360e-6, 330e-6):
        alone_calls = calls = 0
        for _ in range(40_000):
            alone = choice.alone()
            took = alone_takes if alone else (190e-6 if rng.random() < 0.2 else 500e-6)
            clock.now += took
            choice.record(alone, took)
            alone_calls += alone
            calls += 1
        assert alone_calls > 0.95 * calls, (alone_takes, alone_calls / calls)


def test_a_slow_first_call_does_not_keep_it_off_the_faster_way():
    """The first call compiles for seconds: what it took is not the way's speed."""
    clock = Clock()
    choice = ThreadChoice(clock)
    clock.now += 0.6
    choice.record(choice.alone(), 0.6)  # (shared: the first way)
    simulate(choice, clock, 30.0, 0.010, 0.014)
    assert not choice.alone_now
    alone, calls = simulate(choice, clock, 30.0, 0.010, 0.014)
    assert alone < 0.05 * calls


def test_started_in_the_far_placement_it_finds_alone_faster():
    clock = Clock()
    choice = ThreadChoice(clock)
    simulate(choice, clock, 1.0, 560e-6, 370e-6)  # vggish's one image, far from the start
    alone, calls = simulate(choice, clock, 5.0, 560e-6, 370e-6)
    assert choice.alone_now and alone > 0.95 * calls


def test_a_few_slow_calls_after_a_pause_do_not_send_it_alone():
    """After the bench's 50 ms pauses, shared calls of one image run slow for a few calls
    (300, 55, 43, 40 us against 38 steady; alone 57)."""
    clock = Clock()
    choice = ThreadChoice(clock)
    alone_calls = 0
    for _ in range(200):
        for took in [300e-6, 150e-6, 120e-6, 100e-6, 90e-6, 80e-6, 70e-6, 60e-6] + [38e-6] * 400:
            alone = choice.alone()
            took = 57e-6 if alone else took
            clock.now += took
            choice.record(alone, took)
            alone_calls += alone
        clock.now += 0.05
    assert alone_calls <= thread_choice.TRIAL_CALLS + 1  # (its first trial)


def test_noise_of_a_few_percent_does_not_flip_it():
    rng = np.random.default_rng(0)
    clock = Clock()
    choice = ThreadChoice(clock)
    flips, way = 0, choice.alone_now
    for _ in range(20_000):
        alone = choice.alone()
        took = 100e-6 * (1.10 if alone else 1.0) * (1 + 0.02 * rng.random())
        clock.now += took
        choice.record(alone, took)
        flips += choice.alone_now != way
        way = choice.alone_now
    assert flips == 0


@pytest.mark.usefixtures("two_threads")
def test_run_alone_hands_no_chunk_to_a_helper():
    flags = np.zeros(3, np.int64)
    program = team.Program([(meet.address, [(flags, 0, 2_000_000), (flags, 1, 2_000_000)])])
    team.run_alone(program.run)
    assert flags[1] == 1, "chunk 1 never ran"
    assert flags[2] == 0, "chunk 1 ran while chunk 0 waited: a helper took it"
    where = team.run_alone(team.run_chunks, lambda _: threading.get_ident(), list(range(6)))
    assert set(where) == {threading.get_ident()}


def _model():
    cn.manual_seed(3)
    return cn.Sequential(cn.Conv2d(3, 16, 3, padding=1), cn.ReLU(), cn.MaxPool2d(2),
                         cn.Conv2d(16, 16, 3, padding=1), cn.ReLU(),
                         cn.Flatten(), cn.Linear(16 * 8 * 8, 10))


@pytest.mark.usefixtures("two_threads")
def test_a_plan_gives_the_same_bits_alone_and_shared():
    cn.manual_seed(4)
    model = cn.Sequential(cn.Conv2d(8, 32, 3, padding=1), cn.ReLU(),
                          cn.Conv2d(32, 32, 3, padding=1), cn.ReLU(), cn.MaxPool2d(2),
                          cn.Flatten(), cn.Linear(32 * 32 * 32, 10)).eval()
    x = np.random.default_rng(1).standard_normal((1, 8, 64, 64)).astype(np.float32)
    with cn.no_grad():
        shared = [model.forward(x) for _ in range(5)][-1]  # (the first few load the kernels)
        (plan,) = model.__dict__["_inference_plans"].values()
        (runner,) = plan._runners[(1, 2)]
        assert runner.shares, "the plan hands none of this image to the helper"
        alone = team.run_alone(model.forward, x)
    np.testing.assert_array_equal(alone, shared)


@pytest.mark.usefixtures("two_threads")
def test_a_training_step_gives_the_same_bits_alone_and_shared():
    x = np.random.default_rng(2).standard_normal((16, 3, 16, 16)).astype(np.float32)
    y = np.arange(16) % 10
    def step(model, loss):
        loss.forward(model.forward(x), y)
        model.backward(loss.backward(), input_grad=False)
        return [p.grad.copy() for p in model.parameters()]

    grads = [step(_model().train(), cn.CrossEntropyLoss()),
             team.run_alone(step, _model().train(), cn.CrossEntropyLoss())]
    for shared, alone in zip(*grads, strict=True):
        np.testing.assert_array_equal(alone, shared)


@pytest.mark.usefixtures("two_threads")
def test_a_model_keeps_a_choice_for_its_training_passes():
    model = _model().train()
    x = np.zeros((4, 3, 16, 16), np.float32)
    model.forward(x)
    model.backward(np.ones((4, 10), np.float32), input_grad=False)
    assert isinstance(model.__dict__.get("_forward_choice"), ThreadChoice)
    assert isinstance(model.__dict__.get("_backward_choice"), ThreadChoice)
    # a call inside another is timed as part of it: it keeps no choice of its own
    inner: dict = {}
    outer: dict = {}
    assert thread_choice.run_chosen(
        outer, "pass", lambda: thread_choice.run_chosen(inner, "pass", lambda: 7)) == 7
    assert "pass" in outer and not inner
