"""Which of several ways of doing the same work is the faster one now, from the times of the
calls themselves.

An inference plan's small batch (one image, say) can run every step split between the team's
threads or on the calling thread alone: the same sums, bit for bit. Which is faster is not a
property of the network alone. On this kind of VM the host sometimes places the two vCPUs far
apart for minutes at a time, within one process: a cache line's round trip between the threads
went from 0.05 to 0.4 us and a 64 KiB handoff from 1.7 to 4.2 us, and mobilenet-mini's image
from 93 us split (130 alone) to 205-224 split; onnxruntime's went from 108 to 278 the same way.
So the plan times both ways and keeps taking the faster, trying the other again now and then.
"""

from __future__ import annotations

import math
import threading
from collections import deque

# Calls of a way timed before the ways are compared, and calls of another way in a row when it
# is tried again: the first of them may find the helper threads asleep (woken, they join late),
# the second finds them spinning.
CALLS_IN_A_ROW = 2
# The times of a way that are compared (their best): a slower state shows after this many calls.
KEPT_TIMES = 3
# Calls between two tries of a way not taken: at most 2 in 64 calls of the slower way.
CALLS_BETWEEN_TRIES = 64


class Faster:
    """Picks one of `ways` ways (0, 1, ...) for each call and is told the call's seconds.

    Each way is first timed CALLS_IN_A_ROW times in turn, way 0 first; from then on a call takes
    the way whose best of its last KEPT_TIMES times is least, except that every
    CALLS_BETWEEN_TRIES calls another way (the others in turn) is tried CALLS_IN_A_ROW times.
    Safe to share between threads (a lock around the times)."""

    def __init__(self, ways: int = 2, between_tries: int | None = None):
        if ways < 1:
            raise ValueError(f"Faster: needs at least one way to choose from, got {ways}")
        self.ways = ways
        self.between_tries = between_tries or CALLS_BETWEEN_TRIES
        self.times = [deque(maxlen=KEPT_TIMES) for _ in range(ways)]
        self.calls = 0
        self.tries = 0  # tries made so far: which other way the next one takes
        self._trying, self._left = 0, 0  # the way being tried, and its calls still to come
        self._untimed = True  # some way has fewer than CALLS_IN_A_ROW times
        self._least = [math.inf] * ways  # each way's best kept time
        self._best = 0
        self._lock = threading.Lock()

    def best(self) -> int:
        """The way with the least best time among those timed (way 0 before any is)."""
        return self._best

    def pick(self) -> int:
        """The way for the next call (under a microsecond with `record`: it runs on every
        call; two threads counting at once may try a way once more or less, no harm)."""
        self.calls += 1
        if self._untimed:
            return next(way for way in range(self.ways) if len(self.times[way]) < CALLS_IN_A_ROW)
        if self._left:
            self._left -= 1
            return self._trying
        if self.calls % self.between_tries or self.ways == 1:
            return self._best
        self.tries += 1
        self._trying = (self._best + 1 + self.tries % (self.ways - 1)) % self.ways
        self._left = CALLS_IN_A_ROW - 1
        return self._trying

    def record(self, way: int, seconds: float) -> None:
        """The seconds a call of `way` took."""
        with self._lock:
            times = self.times[way]
            times.append(seconds)
            if self._untimed:
                self._untimed = any(len(times) < CALLS_IN_A_ROW for times in self.times)
            self._least[way] = min(times)
            self._best = self._least.index(min(self._least))
