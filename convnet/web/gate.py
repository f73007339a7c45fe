"""Taking turns with the engine: convnet's `no_grad()` is one switch for the whole process, so
a trainer thread and the page's computations must not run forward passes at the same time (an
explanation under no_grad would leave the trainer's step without its caches, and the trainer's
validation under no_grad would leave a saliency map without them).

The trainer holds the gate while it trains and opens it between steps when a request is
waiting; each request computes while it holds the gate.
"""

from __future__ import annotations

import contextlib
import threading
import time

MAX_PAUSE_S = 2.0  # a trainer lets waiting requests through for at most this long per step


class EngineGate:
    def __init__(self):
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._waiting = 0

    @contextlib.contextmanager
    def turn(self):
        """For a request: wait for the gate, compute, let go."""
        with self._count_lock:
            self._waiting += 1
        try:
            self._lock.acquire()
        finally:
            with self._count_lock:
                self._waiting -= 1
        try:
            yield
        finally:
            self._lock.release()

    def hold(self) -> None:
        """For a trainer: take the gate before training."""
        self._lock.acquire()

    def let_through(self) -> None:
        """For a trainer holding the gate, between steps: let waiting requests compute."""
        if not self._waiting:
            return
        self._lock.release()
        deadline = time.monotonic() + MAX_PAUSE_S
        while self._waiting and time.monotonic() < deadline:
            time.sleep(0.002)
        self._lock.acquire()

    def release(self) -> None:
        """For a trainer: give the gate back when training ends."""
        self._lock.release()


ENGINE_GATE = EngineGate()
