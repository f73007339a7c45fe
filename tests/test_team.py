"""The team of spinning helper threads (convnet.core.team): every chunk runs exactly once, the
helpers really share the work, and a second caller, a forked child or a sleeping helper never
makes a table hang or run twice."""

from __future__ import annotations

import multiprocessing
import platform
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

numba = pytest.importorskip("numba")

from convnet.core import backend, team  # noqa: E402
from convnet.core.atomics import fetch_add, float32_at, int64_at, load, pause, store  # noqa: E402

SIGNATURE = numba.void(numba.types.CPointer(numba.int64), numba.types.CPointer(numba.float64))


@numba.cfunc(SIGNATURE)
def add_range(ints, floats):
    """ints: out (address, size), start, stop, counts (address, size), chunk;
    out[start:stop] += floats[0]; counts[chunk] += 1."""
    out = numba.carray(float32_at(ints[0]), (ints[1],))
    for k in range(ints[2], ints[3]):
        out[k] += numba.float32(floats[0])
    counts = numba.carray(int64_at(ints[4]), (ints[5],))
    fetch_add(counts, ints[6], 1)


@numba.cfunc(SIGNATURE)
def meet(ints, floats):
    """ints: flags (address, size), chunk, spins. Chunk 1 raises its flag; chunk 0 waits (at
    most `spins` pauses) for it and records in flags[2] whether it came: only a second thread
    running at the same time can raise it."""
    flags = numba.carray(int64_at(ints[0]), (ints[1],))
    if ints[2] == 1:
        store(flags, 1, 1)
        return
    for _ in range(ints[3]):
        if load(flags, 1) == 1:
            store(flags, 2, 1)
            return
        pause()


@numba.cfunc(SIGNATURE)
def reverse_range(ints, floats):
    """ints: source (address, size), target (address, size), start, stop:
    target[k] = source[size - 1 - k] + 1 for start <= k < stop (reads other chunks' ranges)."""
    source = numba.carray(float32_at(ints[0]), (ints[1],))
    target = numba.carray(float32_at(ints[2]), (ints[3],))
    for k in range(ints[4], ints[5]):
        target[k] = source[ints[1] - 1 - k] + numba.float32(1)


@pytest.fixture
def two_threads():
    previous = backend.num_threads()
    backend.set_num_threads(2)
    yield
    backend.set_num_threads(previous)


def _adding(out, counts, pieces: int, value: float) -> team.Program:
    bounds = np.linspace(0, out.size, pieces + 1).astype(int)
    return team.Program([(add_range.address, [
        (out, int(bounds[k]), int(bounds[k + 1]), counts, k, value) for k in range(pieces)])])


def test_every_chunk_runs_once_each_time(two_threads):
    out = np.zeros(10_000, np.float32)
    counts = np.zeros(7, np.int64)
    chunks = _adding(out, counts, 7, 1.0)
    for done in range(1, 301):
        chunks.run()
        if done % 100 == 0:
            time.sleep(0.01)  # long enough for the helper to fall asleep: it must be woken
    np.testing.assert_array_equal(counts, np.full(7, 300))
    np.testing.assert_array_equal(out, np.full(10_000, 300, np.float32))


def test_each_step_starts_after_the_step_before_it_is_done(two_threads):
    """Four steps passing an array back and forth reversed, each chunk reading the ranges other
    chunks of the step before wrote: any chunk run early reads stale values."""
    size, pieces = 200_000, 4
    a, b = np.zeros(size, np.float32), np.zeros(size, np.float32)
    bounds = np.linspace(0, size, pieces + 1).astype(int)

    def step(source, target):
        return (reverse_range.address, [(source, target, int(bounds[k]), int(bounds[k + 1]))
                                        for k in range(pieces)])

    program = team.Program([step(a, b), step(b, a), step(a, b), step(b, a)])
    expected = np.zeros(size, np.float32)
    for _ in range(50):
        program.run()
        for _ in range(4):
            expected = expected[::-1] + 1
        np.testing.assert_array_equal(a, expected)
    program.run(shared=False)
    np.testing.assert_array_equal(a, expected + 4)


def test_a_helper_takes_chunks_at_the_same_time_as_the_caller(two_threads):
    flags = np.zeros(3, np.int64)
    spins = 200_000_000  # a few seconds at most; the helper answers in microseconds
    chunks = team.Program([(meet.address, [(flags, 0, spins), (flags, 1, spins)])])
    chunks.run()
    assert flags[1] == 1
    assert flags[2] == 1, "chunk 1 was not run while chunk 0 waited: no helper took it"


def test_one_thread_runs_every_chunk_itself():
    previous = backend.num_threads()
    backend.set_num_threads(1)
    try:
        out = np.zeros(100, np.float32)
        counts = np.zeros(4, np.int64)
        _adding(out, counts, 4, 2.0).run()
        np.testing.assert_array_equal(counts, np.ones(4))
        np.testing.assert_array_equal(out, np.full(100, 2, np.float32))
    finally:
        backend.set_num_threads(previous)


def test_two_callers_at_once_each_get_their_own_table_done(two_threads):
    """While one thread's table holds the team, the other's runs on its caller alone."""
    results = {}

    def caller(name: str, value: float):
        out = np.zeros(5_000, np.float32)
        counts = np.zeros(5, np.int64)
        chunks = _adding(out, counts, 5, value)
        for _ in range(400):
            chunks.run()
        results[name] = (out, counts)

    threads = [threading.Thread(target=caller, args=(name, value))
               for name, value in (("a", 1.0), ("b", 3.0))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a caller hung"
    for name, value in (("a", 1.0), ("b", 3.0)):
        out, counts = results[name]
        np.testing.assert_array_equal(counts, np.full(5, 400))
        np.testing.assert_array_equal(out, np.full(5_000, 400 * value, np.float32))


def _run_in_child(queue):
    out = np.zeros(1_000, np.float32)
    counts = np.zeros(3, np.int64)
    _adding(out, counts, 3, 1.0).run()
    queue.put((counts.tolist(), float(out.sum())))


def test_a_forked_child_runs_tables_without_the_parents_helpers(two_threads):
    out = np.zeros(100, np.float32)
    _adding(out, np.zeros(2, np.int64), 2, 1.0).run()  # the parent's team is running
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_run_in_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        pytest.fail("a forked child hung running a table")
    assert child.exitcode == 0
    assert queue.get(timeout=5) == ([1, 1, 1], 1000.0)


@pytest.mark.parametrize("steps", [[], [(0, [])], [(0, []), (0, [])]])
def test_a_program_without_chunks_returns_at_once(steps, two_threads):
    """(An inference segment of a Flatten and a Dropout has no kernel: its program has no
    chunks and no last step to wait for.)"""
    before = team._team().control[team.STATE] >> 32
    finished = []
    worker = threading.Thread(target=lambda: (team.Program(steps).run(), finished.append(1)),
                              daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert finished, "an empty program never returned"
    assert team._team().control[team.STATE] >> 32 == before, "an empty program was published"


def test_arrays_must_be_contiguous():
    with pytest.raises(ValueError, match="C-contiguous"):
        team.Program([(add_range.address, [(np.zeros((4, 4), np.float32)[:, 1],)])])


# -- Python chunks (run_chunks) on the same helpers ------------------------------------------
def test_a_helper_takes_python_chunks_at_the_same_time_as_the_caller(two_threads):
    """Chunk 0 waits for chunk 1's event: only a helper running chunk 1 meanwhile sets it."""
    for _ in range(20):
        came = threading.Event()

        def work(chunk, came=came):
            if chunk == 1:
                came.set()
                return "set"
            return came.wait(timeout=10)

        assert team.run_chunks(work, [0, 1]) == [True, "set"]


def test_python_chunks_and_programs_take_turns_on_the_helpers(two_threads):
    """Tables and Python jobs one after the other, with pauses long enough for the helper to
    fall asleep between some: every chunk runs once, none is lost or run twice."""
    out = np.zeros(10_000, np.float32)
    counts = np.zeros(3, np.int64)
    program = _adding(out, counts, 3, 1.0)
    seen = []
    for turn in range(1, 301):
        program.run()
        assert team.run_chunks(lambda c, t=turn: seen.append(c) or c * t, [1, 2, 3]) == [
            turn, 2 * turn, 3 * turn]
        if turn % 100 == 0:
            time.sleep(0.01)
    np.testing.assert_array_equal(counts, np.full(3, 300))
    np.testing.assert_array_equal(out, np.full(10_000, 300, np.float32))
    assert sorted(seen) == sorted([1, 2, 3] * 300)


def _on_a_helper(helper_work):
    """Two chunks that meet at a barrier, so that they run at the same time on two threads
    (the helper may take either); the one on the helper then runs helper_work(). Returns
    [the helper's thread], the results."""
    caller, meet, where = threading.get_ident(), threading.Barrier(2, timeout=10), []

    def chunk(c):
        meet.wait()  # raises BrokenBarrierError unless a helper runs the other chunk
        if threading.get_ident() == caller:
            return "caller"
        where.append(threading.get_ident())
        return helper_work()

    return where, sorted(team.run_chunks(chunk, [0, 1]), key=str)


def test_the_caller_waits_for_a_helper_chunk_that_outlasts_the_spin(two_threads):
    """A helper's chunk that runs for 50 ms (far past SPIN_SECONDS): the caller sleeps until
    it is done and only then returns its result."""
    finished = []

    def work():
        time.sleep(0.05)
        finished.append(1)
        return "helper"

    for _ in range(5):
        finished.clear()
        where, results = _on_a_helper(work)
        assert len(where) == 1 and where != [threading.get_ident()]
        assert results == ["caller", "helper"]
        assert finished == [1]


def test_what_a_helper_chunk_raises_is_raised_on_the_caller(two_threads):
    def work():
        raise KeyError("the helper's chunk")

    for _ in range(5):
        with pytest.raises(KeyError, match="the helper's chunk"):
            _on_a_helper(work)
    assert team.run_chunks(lambda c: c, [0, 1, 2]) == [0, 1, 2]  # the team still works


def test_a_program_inside_a_python_chunk_runs_on_that_thread(two_threads):
    """A chunk that runs a Program (a plan's part of a batch running kernels) runs it on its
    own thread: the caller holds the team."""
    results = []

    def work(chunk):
        out = np.zeros(1_000, np.float32)
        counts = np.zeros(4, np.int64)
        _adding(out, counts, 4, float(chunk)).run()
        return counts.tolist(), float(out.sum())

    worker = threading.Thread(target=lambda: results.append(team.run_chunks(work, [1, 2, 3])),
                              daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "a program inside a chunk hung"
    assert results == [[([1, 1, 1, 1], 1000.0), ([1, 1, 1, 1], 2000.0),
                        ([1, 1, 1, 1], 3000.0)]]


def test_two_callers_of_python_chunks_at_once_each_get_their_results(two_threads):
    results = {}

    def caller(name: str):
        results[name] = [team.run_chunks(lambda c, t=turn: (name, c, t), [0, 1, 2])
                         for turn in range(300)]

    threads = [threading.Thread(target=caller, args=(name,), daemon=True) for name in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a caller hung"
    for name in "ab":
        assert results[name] == [[(name, c, turn) for c in range(3)] for turn in range(300)]


def test_a_finished_python_job_holds_none_of_its_arrays(two_threads):
    """The team lets go of a job once it is done: kept until the next job, its work's arrays
    (a step's activations) raised unet-mini's training peak by 25-37 MB."""
    import weakref

    array = np.zeros(1_000)
    results = np.zeros(2)
    gone = weakref.ref(array)
    team.run_chunks(lambda c, a=array, r=results: r.__setitem__(c, a.sum()), [0, 1])
    del array
    assert gone() is None, "the team still holds the finished job's arrays"


ARENAS = """
import ctypes, sys, tempfile, threading
import numpy
from convnet.core import backend
if sys.argv[1] == "one":
    assert backend.keep_freed_memory()
def work():
    kept = [numpy.ones(1 << 18) for _ in range(8)]  # 2 MiB each: malloc's heap, not mmap
    del kept
thread = threading.Thread(target=work)
thread.start()
thread.join()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
with tempfile.NamedTemporaryFile("r") as out:
    stream = libc.fopen(out.name.encode(), b"w")
    libc.malloc_info(0, ctypes.c_void_p(stream))
    libc.fclose(ctypes.c_void_p(stream))
    print(out.read().count("<heap nr="))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc arenas are glibc's")
def test_every_thread_allocates_from_one_malloc_arena():
    """What a helper thread allocates comes from the one arena training's freed memory is
    kept in (a thread of its own arena took fresh pages for an inference lane's buffers)."""
    def heaps(mode):
        done = subprocess.run([sys.executable, "-c", ARENAS, mode], capture_output=True,
                              text=True, check=True)
        return int(done.stdout.strip())

    assert heaps("default") >= 2  # without the setting, the thread gets an arena of its own
    assert heaps("one") == 1
