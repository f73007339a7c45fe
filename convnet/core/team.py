"""The helper threads that share a batch's work with the calling thread: compiled chunks
(a `Program`) with a handoff of about a microsecond, and Python chunks (`run_chunks`).

Handed over through Python (a pool thread woken from sleep, the GIL passed along), a split of
two small chunks cost 24-49 us back to back on this kind of VM and 86-247 us after 10 ms idle,
as much as a whole step of a small network on one image. The helpers instead wait in compiled
code, without the GIL, spinning on a control vector for a while (SPIN_SECONDS) after each piece
of work before they sleep, as onnxruntime's threads do; there they also see a Python job posted
and leave the spin to take its chunks.

A `Program` is steps one after the other, each a few chunks, each chunk a C function's address
and its arguments. The calling thread publishes the program's table of chunks and takes chunks
too, in order, each taken by one thread with a compare-and-swap; a thread that takes a chunk of
a step first waits until the step before it is done, so a run of kernels goes with no Python
between them. A helper that is asleep is woken and joins late; one that never comes leaves
every chunk to the caller, so nothing waits on a thread not there. One caller at a time has the
helpers: a second (two requests to a server at once), or work started inside a chunk, runs its
chunks on its own thread.

The control vector (int64): STATE holds generation << 32 | the next chunk's index; TABLE and
COUNT the published table's address and its chunks; DONE and COUNTS the addresses of the
program's per-step counters (chunks finished, chunks) and STEPS their length; STOP tells the
helpers to leave; JOB numbers the Python jobs posted, ACTIVE counts the helpers in one, WAITING
is 1 while the caller sleeps until they leave it; then one slot per helper, 1 while it sleeps.
"""

from __future__ import annotations

import atexit
import itertools
import os
import threading
import time

import numpy

from convnet.core import kernels
from convnet.core.backend import num_threads

STATE, TABLE, COUNT, DONE, COUNTS, STEPS, STOP, JOB, ACTIVE, WAITING, ASLEEP = range(11)

# How long a helper spins for the next step before it sleeps: more than the Python between
# two steps (a few us) or two calls on one image (tens of us); less than a millisecond of a core.
SPIN_SECONDS = 500e-6

SOURCE = '''"""convnet's team of helper threads, compiled side (written by convnet.core.team)."""
import numba

from convnet.core.atomics import (call_task, compare_swap, fetch_add, int64_at, load, pause,
                                  store)

STATE, TABLE, COUNT, DONE, COUNTS, STEPS, STOP, JOB, ACTIVE, WAITING, ASLEEP = range(11)
MASK = (1 << 32) - 1  # the chunk index in STATE
ROW = 32  # bytes of a table row: the function's address, its ints', its floats', its step
OPTIONS = dict(nogil=True, cache=True)


@numba.njit(**OPTIONS)
def counters(control):
    """The published program's per-step counters: chunks done, chunks."""
    steps = load(control, STEPS)
    return (numba.carray(int64_at(load(control, DONE)), (steps,)),
            numba.carray(int64_at(load(control, COUNTS)), (steps,)))


@numba.njit(**OPTIONS)
def take(control):
    """Run chunks of the published table until none is left, each after its step's
    predecessor is done."""
    while True:
        state = load(control, STATE)
        if (state & MASK) >= load(control, COUNT):
            return
        if compare_swap(control, STATE, state, state + 1):
            row = int64_at(load(control, TABLE) + ROW * (state & MASK))
            step = row[3]
            done, counts = counters(control)
            if step > 0:
                while load(done, step - 1) < counts[step - 1]:
                    pause()
            call_task(row[0], row[1], row[2])
            fetch_add(done, step, 1)


@numba.njit(**OPTIONS)
def asleep(control):
    """How many helpers are asleep."""
    count = 0
    for slot in range(ASLEEP, control.shape[0]):
        count += load(control, slot)
    return count


@numba.njit(**OPTIONS)
def publish(control, table, count, done, counts):
    """Make the program (its table of `count` chunks, its per-step counters `done`, zeroed
    here, and `counts`) the one to take; returns how many helpers are asleep."""
    generation = (load(control, STATE) >> 32) + 1
    store(control, STATE, (generation << 32) | MASK)  # nothing to take while the rest changes
    for step in range(done.shape[0]):
        store(done, step, 0)
    store(control, TABLE, table)
    store(control, COUNT, count)
    store(control, DONE, done.ctypes.data)
    store(control, COUNTS, counts.ctypes.data)
    store(control, STEPS, done.shape[0])
    store(control, STATE, generation << 32)
    return asleep(control)


@numba.njit(**OPTIONS)
def address(array):
    """The address of the array's first element: 0.2-0.3 us a call, where NumPy's ctypes
    took 1.7 (most of making a program)."""
    return array.ctypes.data


@numba.njit(**OPTIONS)
def point(ints, firsts, array):
    """ints[first] and ints[first + 1]: the address and size of `array`, for each first (a
    program's step readdressed in 0.3 us, where NumPy's ctypes took 0.9 for the address)."""
    for first in firsts:
        ints[first] = array.ctypes.data
        ints[first + 1] = array.size


@numba.njit(**OPTIONS)
def finish(control):
    """Take chunks with the helpers, then wait until the last step (and so every step) is
    done."""
    take(control)
    done, counts = counters(control)
    last = done.shape[0] - 1
    while last >= 0 and load(done, last) < counts[last]:
        pause()


@numba.njit(**OPTIONS)
def run(control, table, count, done, counts):
    """publish, then finish unless a helper is asleep (the caller wakes it first): returns
    the helpers asleep."""
    asleep = publish(control, table, count, done, counts)
    if asleep == 0:
        finish(control)
    return asleep


@numba.njit(**OPTIONS)
def run_all(table, count):
    """Every chunk of a table in order, on the calling thread."""
    for index in range(count):
        row = int64_at(table + ROW * index)
        call_task(row[0], row[1], row[2])


@numba.njit(**OPTIONS)
def serve(control, slot, spins, seen):
    """A helper's loop: take chunks as they come. When a Python job other than number `seen`
    is posted, count itself in ACTIVE and return the job's number (the helper takes its
    chunks in Python, then comes back); after `spins` idle pauses, mark the slot asleep and
    return -1 (unless work came meanwhile)."""
    store(control, slot, 0)
    idle = 0
    while load(control, STOP) == 0:
        job = load(control, JOB)
        if job != seen:
            fetch_add(control, ACTIVE, 1)
            return job
        if (load(control, STATE) & MASK) < load(control, COUNT):
            take(control)
            idle = 0
        elif idle < spins:
            pause()
            idle += 1
        else:
            store(control, slot, 1)
            if ((load(control, STATE) & MASK) < load(control, COUNT)
                    or load(control, JOB) != seen):
                store(control, slot, 0)  # work came after all: stay
                idle = 0
            else:
                return -1
    return -1


@numba.njit(**OPTIONS)
def post(control):
    """Post a new Python job (the caller has made it the team's); returns how many helpers
    are asleep."""
    store(control, WAITING, 0)
    fetch_add(control, JOB, 1)
    return asleep(control)


@numba.njit(**OPTIONS)
def leave(control):
    """A helper is done with the Python job it joined: True when it was the last one in it
    and the caller sleeps until they all leave (the helper wakes it)."""
    return fetch_add(control, ACTIVE, -1) == 1 and load(control, WAITING) == 1


@numba.njit(**OPTIONS)
def wait_helpers(control, spins):
    """Spin until every helper that joined the Python job has left it: True if they did
    within `spins` pauses, else False with WAITING set (the caller then sleeps)."""
    for _ in range(spins):
        if load(control, ACTIVE) == 0:
            return True
        pause()
    store(control, WAITING, 1)
    return load(control, ACTIVE) == 0


@numba.njit(**OPTIONS)
def spin(count):
    for _ in range(count):
        pause()
'''


class Program:
    """Steps for the team, one after the other: `steps` is a list of (task, chunks), where
    `task` is the address of a C function void f(int64 *ints, double *floats) and each chunk
    a sequence of its arguments: arrays (given as their address and shape among the ints, in
    order), ints and floats. The arrays must outlive the program (it keeps them)."""

    def __init__(self, steps: list):
        rows, ints, floats = [], [], []
        self._keep = []  # what the addresses point into
        self._firsts = []  # per step, where each chunk's ints start (`readdress` rewrites them)
        addresses = {}  # id -> address of the arrays seen: the chunks of a step share most
        address_of = _compiled().address
        for step, (task, chunks) in enumerate(steps):
            self._firsts.append([])
            for args in chunks:
                first, first_float = len(ints), len(floats)
                for arg in args:
                    if isinstance(arg, numpy.ndarray):
                        address = addresses.get(id(arg))
                        if address is None:
                            if not arg.flags.c_contiguous:
                                raise ValueError("team.Program: array arguments must be "
                                                 "C-contiguous")
                            address = addresses[id(arg)] = address_of(arg)
                            self._keep.append(arg)
                        ints.append(address)
                        ints += arg.shape
                    elif isinstance(arg, (float, numpy.floating)):
                        floats.append(float(arg))
                    else:
                        ints.append(int(arg))
                self._firsts[step].append(first)
                rows.append((task, first, first_float, step))
        # every chunk's ints in one array, its floats in another, each row pointing into them
        self.ints = numpy.array(ints + [0], numpy.int64)
        self.floats = numpy.array(floats + [0.0], numpy.float64)
        self.table = numpy.array(rows, numpy.int64).reshape(len(rows), 4)
        self.table[:, 1] = self.table[:, 1] * 8 + self.ints.ctypes.data
        self.table[:, 2] = self.table[:, 2] * 8 + self.floats.ctypes.data
        self.address = self.table.ctypes.data
        self.count = len(rows)
        self.counts = numpy.array([len(chunks) for _, chunks in steps], numpy.int64)
        self.done = numpy.zeros(len(steps), numpy.int64)

    def readdress(self, step: int, array: numpy.ndarray) -> None:
        """Point the first argument of every chunk of `step` (a flat C-contiguous array) at
        `array` instead, which the caller keeps alive while the program runs: a step that
        reads a new input array at each call, without making the program again."""
        firsts = self._firsts[step]
        if type(firsts) is list:  # (made on the first readdress: most programs have none)
            firsts = self._firsts[step] = numpy.array(firsts, numpy.int64)
        _compiled().point(self.ints, firsts, array)

    def run(self, shared: bool = True) -> None:
        """Every chunk: shared with the team's helpers, or on the calling thread alone (in
        order) when not `shared` (an inference runner of one thread)."""
        if self.count == 0:  # nothing to publish (and no last step to wait for)
            return
        if shared and not runs_alone():
            _team().run(self)
        else:
            _compiled().run_all(self.address, self.count)


# Set in a thread while the chunks it starts run on it alone: while it takes a Python job's
# chunks (an inference plan splits a batch between threads, and a layer's NumPy forward inside
# one part splits again), or inside `run_alone`.
_working = threading.local()


def runs_alone() -> bool:
    """Whether the chunks the calling thread starts run on it alone (inside a chunk or
    `run_alone`)."""
    return getattr(_working, "alone", False)


def _inline(chunks) -> bool:
    """Whether chunks run on the calling thread: one chunk, one thread, inside a chunk or
    `run_alone`."""
    return len(chunks) == 1 or num_threads() == 1 or runs_alone()


def run_alone(function, *args):
    """function(*args) with every chunk and program it starts run on the calling thread, in
    order: the same chunks as with the team (so the same sums), none handed to a helper
    (`convnet.core.thread_choice`: where the cores are far apart, handing over can cost more
    than it saves)."""
    before = runs_alone()
    _working.alone = True
    try:
        return function(*args)
    finally:
        _working.alone = before


def run_chunks(work, chunks) -> list:
    """[work(chunk) for chunk in chunks], spread over the team's threads.

    The calling thread takes chunks too, and every thread takes the next chunk as soon as it
    is free: a helper that comes late finds less (or nothing) left to do, so small batches are
    never slower than on one thread. Inside a chunk's work, while another thread has the team,
    or where Numba cannot be imported, the chunks run inline. Raises what a chunk raised,
    once every chunk taken is done.
    """
    if _inline(chunks):
        return [work(chunk) for chunk in chunks]
    team = _team()
    if team is None:
        return [work(chunk) for chunk in chunks]
    return team.run_chunks(_Job(work, chunks))


def run_task(kernel, task, chunks: list) -> None:
    """kernel(*args) for every args in `chunks`, spread over the team's threads as one Program
    of `task` (the kernel's C-callable twin, taking the same arguments: arrays, ints, floats).
    A chunk alone, one thread, or work started inside a chunk: the kernel is called directly
    (making a program costs 25-30 us for a two-chunk convolution's seven arrays)."""
    if _inline(chunks):
        for args in chunks:
            kernel(*args)
        return
    Program([(task.address, chunks)]).run()


class _Job:
    """Python chunks: work(chunk) for each, every chunk taken once by the next thread free."""

    def __init__(self, work, chunks):
        self.work, self.chunks = work, chunks
        self.results = [None] * len(chunks)
        self.order = itertools.count()  # next() on a count is atomic: each index taken once
        self.error: BaseException | None = None

    def take(self) -> None:
        run_alone(self._take)  # (work inside a chunk splits no further)

    def _take(self) -> None:
        try:
            while (index := next(self.order)) < len(self.chunks):
                self.results[index] = self.work(self.chunks[index])
        except BaseException as error:  # noqa: BLE001 - raised on the caller's thread
            self.error = self.error or error


class _Team:
    def __init__(self, helpers: int):
        self.module = _compiled()
        self.job: _Job | None = None  # the Python job posted last
        self.left = threading.Condition()  # the caller sleeps on it for a helper to leave
        self.control = numpy.zeros(ASLEEP + helpers, numpy.int64)
        self.control[ASLEEP:] = 1
        self.helpers = helpers
        self.busy = threading.Lock()
        self.wakes = [threading.Event() for _ in range(helpers)]
        self.spins = _spins_for(self.module, SPIN_SECONDS)
        self.threads = [threading.Thread(target=self._serve, args=(slot,), daemon=True,
                                         name=f"convnet-team-{slot}")
                        for slot in range(helpers)]
        for thread in self.threads:
            thread.start()

    def _serve(self, helper: int) -> None:
        slot, wake = ASLEEP + helper, self.wakes[helper]
        seen = 0
        while True:
            wake.wait()
            wake.clear()
            while not self.control[STOP]:
                job = self.module.serve(self.control, slot, self.spins, seen)
                if job < 0:
                    break
                seen = job
                # the job posted last: a newer one than `job` at worst, never an older one
                # (a helper coming late to a finished job finds no chunk left in it, or none)
                posted = self.job
                if posted is not None:
                    posted.take()
                del posted  # else this frame holds the job's arrays while the helper sleeps
                if self.module.leave(self.control):
                    with self.left:
                        self.left.notify()
            if self.control[STOP]:
                return

    def _wake_sleepers(self) -> None:
        for helper, wake in enumerate(self.wakes):
            if self.control[ASLEEP + helper]:
                wake.set()

    def run_chunks(self, job: _Job) -> list:
        if self.helpers == 0 or not self.busy.acquire(blocking=False):
            job.take()
        else:
            try:
                self.job = job
                if self.module.post(self.control):
                    self._wake_sleepers()
                job.take()
                if not self.module.wait_helpers(self.control, self.spins):
                    with self.left:  # a helper's chunk runs long: sleep until it is done
                        while self.control[ACTIVE]:
                            self.left.wait()
            finally:
                # let the job go: it holds its work's arrays (a step's activations) and results
                self.job = None
                self.busy.release()
        if job.error is not None:
            raise job.error
        return job.results

    def run(self, program: Program) -> None:
        # A second thread running steps at the same time (two requests to a server) runs its
        # chunks on its own: the control vector serves one table at a time.
        if self.helpers == 0 or program.count == 1 or not self.busy.acquire(blocking=False):
            self.module.run_all(program.address, program.count)
            return
        try:
            if self.module.run(self.control, program.address, program.count, program.done,
                               program.counts):
                self._wake_sleepers()
                self.module.finish(self.control)
        finally:
            self.busy.release()

    def stop(self) -> None:
        self.control[STOP] = 1
        for wake in self.wakes:
            wake.set()
        for thread in self.threads:
            thread.join(timeout=1)


def _spins_for(module, seconds: float) -> int:
    """Pauses that take about `seconds` on this CPU (a pause is 10-150 cycles by model)."""
    module.spin(1)
    count = 20_000
    start = time.perf_counter()
    module.spin(count)
    per_pause = max((time.perf_counter() - start) / count, 1e-9)
    return max(1, int(seconds / per_pause))


_lock = threading.Lock()
_current: _Team | None = None
_module = None


def _compiled():
    """The compiled side (compiled once per machine, loaded once per process)."""
    global _module
    if _module is None:
        _module = kernels.import_source("convnet_team", SOURCE)
    return _module


def _team() -> _Team | None:
    """The team for backend.num_threads() threads (the caller and num_threads() - 1 helpers),
    started on first use and again when the thread count changes; None where Numba cannot be
    imported (Python chunks then run on the calling thread)."""
    global _current
    helpers = num_threads() - 1
    team = _current
    if team is None or team.helpers != helpers:
        with _lock:
            if _current is None or _current.helpers != helpers:
                if _current is not None:
                    _current.stop()
                    _current = None
                try:
                    _current = _Team(helpers)
                except ImportError:
                    return None
            team = _current
    return team


def _stop() -> None:
    if _current is not None:
        _current.stop()


def _forget_after_fork() -> None:
    """A forked child has none of the helpers: start a team afresh on first use."""
    global _current, _lock
    _current, _lock = None, threading.Lock()


atexit.register(_stop)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
