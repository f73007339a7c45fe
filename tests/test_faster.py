"""convnet.core.faster: the faster of several ways, from the times of the calls."""

import pytest

from convnet.core.faster import CALLS_IN_A_ROW, KEPT_TIMES, Faster


def calls(chooser: Faster, count: int, seconds) -> list[int]:
    """The ways picked for `count` calls, each taking seconds[way]."""
    ways = []
    for _ in range(count):
        way = chooser.pick()
        chooser.record(way, seconds[way])
        ways.append(way)
    return ways


def test_each_way_is_timed_in_a_row_first_then_the_faster_is_taken():
    chooser = Faster(2, between_tries=1000)
    assert calls(chooser, 2 * CALLS_IN_A_ROW + 5, [2.0, 1.0]) == (
        [0] * CALLS_IN_A_ROW + [1] * CALLS_IN_A_ROW + [1] * 5)
    assert chooser.best() == 1


def test_the_way_not_taken_is_tried_again_in_a_row_every_so_many_calls():
    chooser = Faster(2, between_tries=10)
    ways = calls(chooser, 40, [1.0, 2.0])
    tried = [index + 1 for index, way in enumerate(ways) if way == 1]  # call numbers
    assert tried == [3, 4, 10, 11, 20, 21, 30, 31, 40]


def test_a_way_that_slows_down_loses_after_its_kept_times():
    chooser = Faster(2, between_tries=1000)
    calls(chooser, 10, [1.0, 2.0])
    ways = calls(chooser, KEPT_TIMES + 3, [3.0, 2.0])  # way 0 slower from now on
    assert ways == [0] * KEPT_TIMES + [1] * 3


def test_a_way_tried_again_and_found_faster_is_taken_from_then_on():
    chooser = Faster(2, between_tries=8)
    calls(chooser, 7, [2.0, 1.0])  # way 1 taken
    ways = calls(chooser, 4, [0.5, 1.0])  # call 8 tries way 0 again, twice: now faster
    assert ways == [0, 0, 0, 0]
    assert chooser.best() == 0


def test_the_first_call_of_a_try_may_be_slow_the_best_of_the_row_counts():
    """The first call of a way tried again may wake helpers that were asleep: the best of the
    kept times decides."""
    chooser = Faster(2, between_tries=8)
    calls(chooser, 7, [2.0, 1.0])
    first = chooser.pick()
    chooser.record(first, 5.0)  # slow: woke the helpers
    assert calls(chooser, 3, [0.5, 1.0]) == [0, 0, 0]


def test_three_ways_are_tried_in_turn():
    chooser = Faster(3, between_tries=5)
    ways = calls(chooser, 3 * CALLS_IN_A_ROW + 20, [1.0, 2.0, 3.0])
    tried = [way for way in ways[3 * CALLS_IN_A_ROW:] if way != 0]
    assert tried == [2, 2, 1, 1, 2, 2, 1, 1][: len(tried)] and len(tried) >= 6


def test_one_way_is_always_taken_and_no_way_is_refused():
    chooser = Faster(1)
    assert calls(chooser, 200, [1.0]) == [0] * 200
    with pytest.raises(ValueError, match="at least one way"):
        Faster(0)

