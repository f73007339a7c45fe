"""How far apart the host has placed two of this machine's cores right now: the round trip of
one cache line between two threads spinning on it.

On a VM the host may move the vCPUs (for minutes at a time): on the 2-vCPU bench machine of
2026-12-03 the round trip was 0.05-0.07 us most of the time and 0.20-0.48 us for stretches,
and every system's work split between two threads slowed with it (one image of
mobilenet-mini: onnxruntime 108 -> 278 us). `bench.run` records it before and after each
network, so that a run's figures can be read against the state they were measured in.

    python -m bench.crosscore
"""

from __future__ import annotations

import functools
import threading
import time

import numpy as np


@functools.cache
def _player():
    """The compiled player (Numba loaded on first use, not when bench.run is imported)."""
    import numba

    from convnet.core.atomics import load, pause, store

    @numba.njit(nogil=True, cache=True)
    def player(flag, me, rounds):
        """Wait for the flag to say `me`, hand it to the other thread; `rounds` times."""
        for _ in range(rounds):
            while load(flag, 0) != me:
                pause()
            store(flag, 0, 1 - me)

    return player


def round_trip_us(rounds: int = 20_000, tries: int = 3) -> float:
    """The best over `tries` of the mean round trip (microseconds) of a cache line between the
    calling thread and another one (each spinning until the line says its turn)."""
    player = _player()
    best = float("inf")
    for _ in range(tries):
        flag = np.zeros(8, np.int64)  # (a line of its own)
        started = threading.Event()

        def other_side(flag=flag, started=started):
            started.set()
            player(flag, 1, rounds)

        other = threading.Thread(target=other_side)
        other.start()
        started.wait()  # (the thread's start is not timed)
        start = time.perf_counter()
        player(flag, 0, rounds)
        other.join()
        best = min(best, (time.perf_counter() - start) / rounds * 1e6)
    return best


if __name__ == "__main__":
    round_trip_us(100, 1)  # compiled (or loaded from Numba's cache) first
    print(f"cross-core round trip {round_trip_us():.3f} us")
