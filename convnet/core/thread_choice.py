"""Whether a piece of work called again and again (a plan's batch, a training step's pass)
runs faster shared with the team's helper threads or on the calling thread alone, chosen by
timing both ways now and then.

On a VM the host may place the two vCPUs near each other (a cache line's round trip between
them 0.06-0.07 us, `bench.crosscore`) or far apart (0.30-0.35 us), and moves them between the
two for seconds to minutes. Far apart, work split between two threads can run slower than on
one, as every step's data crosses between the cores: alternated each second in one process,
near / far, mobilenet-mini's one image 158 / 463 us on two threads against 190 / 190 on one;
inception-mini's training step 26.8 / 42.3 ms against 39.5 / 39.8. Heavy work still gains from
the second thread there (vggish's training step 136 against 239 ms). So which way wins is the
work's and the moment's, and each caller keeps a `ThreadChoice` for its own work.

It runs the way that was faster when last timed, and tries the other way (a trial: a few
calls, see `TRIAL_CALLS`) once what a trial would lose, by the two ways' last timings, is
`TRIAL_SHARE` of the time since the other way last ran (at least `MIN_GAP` seconds and
`MIN_CALLS` of its own calls' time, at most `MAX_GAP` seconds) and it has timed `KEPT` calls
its own way (alone, after its first trial, only once sharing has run slower than at its best
for a while, `SHARING_SLOWED`); or at once when the other way's last timing is faster than
the way it runs (the placement changed). It takes the other way where it was faster by
`MARGIN`: by a fifth to go alone, a little to go back to sharing. Both ways run the same
chunks, so the sums and the results are the same bits either way (`team.run_alone`).

`run_chosen` applies a choice kept by its caller: an inference plan's runner keeps one for its
batch size, a model one for its training forward and one for its backward.
"""

from __future__ import annotations

import threading
import time
import weakref

from convnet.core import team
from convnet.core.backend import num_threads

# A trial's first call is not timed where calls are light (it moves the data into the cache),
# nor, in a trial of sharing, those that start within WARM_SECONDS: the helper sleeps while
# the caller works alone, and waking it takes a while (the GIL passed once, up to the
# interpreter's 5 ms switch interval): shared calls of bottleneck's one image after 40 alone
# ran 58 us, or 570-600 us for five, against 38 steady and 57 alone; after a 50 ms pause 300,
# 55, 43 and 40 us. Then it times up to TRIAL_CALLS calls or TRIAL_SECONDS of them, their
# median counting, and stops at the first that is slower by ABORT than the way it runs (a
# trial of one thread on vggish's training step costs one step, not five).
HEAVY_SECONDS = 2e-3
WARM_SECONDS = 6e-3
TRIAL_CALLS = 4
TRIAL_SECONDS = 5e-3
ABORT = 0.3
# The other way is tried again once a trial would cost this share of the time since it last
# ran, by what it took then: vggish's training backward (90 ms shared, 160 alone) tries one
# thread every 5 s; inception-mini's (14.5 ms shared near, 23 alone) every 0.6 s, which is
# also about how long it stays alone after the cores come near again
TRIAL_SHARE = 0.015
MIN_CALLS = 30  # and no sooner than this many calls its own way would take
MIN_GAP = 0.25  # seconds: nor sooner than this (a trial also slows the calls after it)
MAX_GAP = 20.0  # seconds: nor later (what it took then may have been a first call's compile)
# How much faster the other way must be to be taken: alone by a fifth (more than the shared
# way's slow stretch after a pause), shared by a little (noise does not flip it back)
MARGIN = {True: 0.20, False: 0.03}
KEPT = 8  # timings kept per way: their median is the way's estimate
# alone() weighs the timings at most this often (seconds): it runs before every call, and
# weighing them there each time made the choice add 2.8-2.9 us to a one-image call (lenet5
# 17.0 -> 19.8 us, bottleneck 39.5 -> 42.4); looking every millisecond, 1.1-1.4 us (lenet5)
LOOK_EVERY = 1e-3
# Running on the calling thread alone is tried once, then only while sharing runs this much
# slower than at its best (the placement changed; a process that starts in the far placement
# finds alone faster at its first trial): near, it never wins (vggish, resnet8, fcn-mini and
# unet-mini's training steps take twice as long alone, bottleneck's one image 1.5 times), and
# its trials cost 10-25% of a bench repetition of a training step, or slowed the calls after
# them on one image
SHARING_SLOWED = 0.25
# ...for this long (seconds): not a few slow calls after a pause or a hiccup of the host
# (resnet8's one image, near: repetitions of 0.18-0.27 ms against 0.13-0.15, alone 0.23)
SUSTAINED = 0.05
# After a trial that failed, the other way is tried at once again only when the way it runs
# has slowed by this much since (not on the failed trial's own timings)
SLOWED = 0.1


# Every choice alive in the process, for `calls_made` (a benchmark's record of which way its
# repetitions ran); the lock keeps a choice made on another thread from changing the set while
# it is read
_choices: weakref.WeakSet = weakref.WeakSet()
_choices_lock = threading.Lock()


def calls_made() -> tuple[int, int]:
    """(calls run shared, calls run alone) by every choice alive in the process, since each
    was made: `bench.worker` reports the difference over each repetition."""
    with _choices_lock:
        choices = list(_choices)
    shared = alone = 0
    for choice in choices:
        shared += choice.calls[False]
        alone += choice.calls[True]
    return shared, alone


class ThreadChoice:
    """The choice for one piece of work: `alone()` before each call says how to run it,
    `record(alone, seconds)` after it says what it took."""

    def __init__(self, clock=time.perf_counter):
        self._clock = clock
        self.alone_now = False  # the way chosen: shared with the team first
        self.calls = [0, 0]  # calls recorded, shared and alone
        self._times: tuple[list, list] = ([], [])  # recent seconds, shared and alone
        self._estimates: list = [None, None]  # their medians, kept as they change
        now = clock()
        self._ran = [now, now]  # when each way last ran
        self._trial = False  # a trial of the other way under way
        self._skip = False  # the trial's next call is not timed
        self._warm_until = 0.0  # nor calls that start before this
        self._timed: list[float] = []  # the trial's timed calls
        # the way's estimate when a trial last failed: another at once only once it is slower
        self._after_trial: float | None = None
        self._best: float | None = None  # the shared way's best estimate
        self._slow_since: float | None = None  # since when it has been slower than that
        self._look_at = 0.0  # when alone() next weighs the timings
        with _choices_lock:
            _choices.add(self)

    def estimate(self, alone: bool) -> float | None:
        """The way's recent seconds a call (the median of those kept), None before it has
        run. Not the fastest: in the far placement shared calls of vggish's one image took
        190 us now and then and 460-610 mostly, and the fastest of eight kept it shared."""
        return self._estimates[alone]

    def _keep(self, alone: bool, seconds: float | None = None, forget: bool = False) -> None:
        """Add a timing of the way (or `forget` its timings), and work out its median."""
        times = self._times[alone]
        if forget:
            times.clear()
        elif seconds is not None:
            times.append(seconds)
        del times[:-KEPT]  # (never raises, whatever another thread did meanwhile)
        ordered = sorted(times)
        self._estimates[alone] = ((ordered[(len(ordered) - 1) // 2] + ordered[len(ordered) // 2])
                                  / 2 if ordered else None)

    def _better(self, way: bool, than: float | None) -> bool:
        """Whether `way`'s estimate is faster than `than` by the margin to take it."""
        mine = self.estimate(way)
        return mine is not None and (than is None or mine < than * (1 - MARGIN[way]))

    def alone(self) -> bool:
        """Whether the next call runs on the calling thread alone."""
        other = not self.alone_now
        if self._trial:
            return other
        now = self._clock()
        if now < self._look_at:  # (most calls: the Python here is part of every call's cost)
            return self.alone_now
        self._look_at = now + LOOK_EVERY
        self._keep(self.alone_now)  # the calls since the last look
        if len(self._times[self.alone_now]) < KEPT:  # (a first call may compile for seconds)
            return self.alone_now
        mine, theirs = self.estimate(self.alone_now), self.estimate(other)
        if mine is None:  # (another thread switched the way meanwhile)
            return self.alone_now
        if not self.alone_now and self._times[True]:
            # timed alone before: alone is tried again only once sharing has slowed a while
            self._best = mine if self._best is None else min(self._best, mine)
            if mine <= self._best * (1 + SHARING_SLOWED):
                self._slow_since = None
                return False
            if self._slow_since is None:
                self._slow_since = now
            if now - self._slow_since < SUSTAINED:
                return False
        light = mine < HEAVY_SECONDS
        loss = 0.0 if theirs is None else (theirs - mine) * ((TRIAL_CALLS + 1) if light else 1)
        gap = min(MAX_GAP, max(MIN_GAP, MIN_CALLS * mine, loss / TRIAL_SHARE))
        slowed = self._after_trial is None or mine > self._after_trial * (1 + SLOWED)
        if (slowed and self._better(other, mine)) or now - self._ran[other] >= gap:
            self._trial, self._skip, self._timed = True, light, []
            self._warm_until = now + (0.0 if other else WARM_SECONDS)
            self._keep(other, forget=True)  # what it took before is stale
            return other
        return self.alone_now

    def record(self, alone: bool, seconds: float) -> None:
        """The call just made (`alone` as `alone()` said) took `seconds`."""
        self.calls[alone] += 1
        if alone == self.alone_now:  # kept as it comes: alone() looks at it now and then
            self._times[alone].append(seconds)
            return
        now = self._clock()
        self._ran[alone] = now
        if self._skip or now - seconds < self._warm_until:  # warming up: not timed
            self._skip = False
            return
        self._timed.append(seconds)
        self._keep(alone, seconds)
        mine = self.estimate(self.alone_now)
        slower = seconds > mine * (1 + ABORT)
        if slower or len(self._timed) >= TRIAL_CALLS or sum(self._timed) >= TRIAL_SECONDS:
            self._trial = False
            if not slower and self._better(alone, mine):
                self._ran[self.alone_now] = now
                self.alone_now, self._after_trial = alone, None
            else:
                self._after_trial = mine


_chosen = threading.local()  # .inside: a run_chosen call is under way on this thread


def run_chosen(owner: dict, key: str, function, *args):
    """function(*args), shared with the team or on the calling thread alone as the
    ThreadChoice in owner[key] (made on first use) finds faster, timed for it. Inside
    another run_chosen call (a model inside a model), with one thread, or where the calling
    thread runs alone anyway (a helper's chunk, `team.run_alone`), it just calls
    function(*args): there is no choice to make, or the outer call's timing covers it."""
    if getattr(_chosen, "inside", False) or num_threads() == 1 or team.runs_alone():
        return function(*args)
    choice = owner.get(key)
    if choice is None:
        choice = owner[key] = ThreadChoice()
    alone = choice.alone()
    _chosen.inside = True
    try:
        start = time.perf_counter()
        result = team.run_alone(function, *args) if alone else function(*args)
        choice.record(alone, time.perf_counter() - start)
    finally:
        _chosen.inside = False
    return result
