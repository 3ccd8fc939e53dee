"""The engine's hand-offs between threads (``cnn_course.ops._engine.threads``).

``parallel_signalled`` hands a share to a worker that waits spinning, in compiled code and
without the GIL, until the caller's own compiled share signals. These tests drive it with
compiled calls of ``spin_wait`` itself, so that the caller sits in compiled code (the GIL
released) while it waits for what a worker did: the hand-off must happen then, and the
workers must be placed off the caller's core.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from cnn_course.ops._engine import compiled, threads


@pytest.fixture
def wait(monkeypatch):
    """The compiled ``spin_wait`` (numba on)."""
    monkeypatch.delenv(compiled.ENV, raising=False)
    if compiled.unavailable():
        pytest.skip(f"compiled path unavailable: {compiled.unavailable()}")
    return compiled._kernels().spin_wait


@pytest.fixture
def fresh_pool(monkeypatch):
    """A pool of spinning workers made for this test (module settings patched by it), closed
    after it."""
    monkeypatch.setattr(threads, "_spinners", None)
    yield
    if threads._spinners is not None:
        threads._spinners.close()


def waits_for(wait, flag, go, seq):
    """The caller's share as the engine's kernels do it: signal ``go`` on entry, with the GIL
    released, then wait there (up to 10 s, never forever) until ``flag[0]`` is set."""
    return int(wait(flag, 0, 0, 10**10, threads._clock(), go, 0, seq))


def test_a_worker_starts_its_share_while_the_caller_is_in_compiled_code(wait, fresh_pool):
    """The caller's share signals and then waits, GIL released, for the flag only the
    worker's share sets: it is set by another thread, and the results come in order."""
    flag, who = np.zeros(1, dtype=np.int64), {}

    def share(part, go, seq):
        who[part.start] = threading.get_ident()
        if part.start == 0:
            return waits_for(wait, flag, go, seq)
        flag[0] = 7
        return -1

    with threads.limit(2):
        for _ in range(20):  # workers awake (spinning) and woken from sleep alike
            flag[0] = 0
            assert threads.parallel_signalled(share, 2, wait) == [7, -1]
            assert who[1] != threading.get_ident() == who[0]


def test_workers_that_sleep_are_woken(wait, fresh_pool, monkeypatch):
    """With no time to spin, the workers sleep between rounds and are woken for each."""
    monkeypatch.setattr(threads, "SPIN_S", 0.0)
    flag = np.zeros(1, dtype=np.int64)

    def share(part, go, seq):
        if part.start == 0:
            return waits_for(wait, flag, go, seq)
        flag[0] = 1
        return part.stop - part.start

    with threads.limit(2):
        for _ in range(5):
            flag[0] = 0
            assert threads.parallel_signalled(share, 5, wait) == [1, 3]
            deadline = time.monotonic() + 10
            while not threads._spinners.sleeping and time.monotonic() < deadline:
                time.sleep(0.001)
            assert threads._spinners.sleeping == 1


def test_every_share_runs_once_and_errors_reach_the_caller(wait, fresh_pool):
    """Shares cover the range once, in order, with 3 threads and uneven parts; a share that
    raises (a worker's, or the caller's own) raises in the caller, after every share has
    ended, and the next call works."""
    out = np.zeros(10, dtype=np.int64)

    def fill(part, go, seq):
        go[0] = seq  # no compiled call here: the workers start anyway, on the GIL's release
        out[part] += 1
        return (part.start, part.stop)

    with threads.limit(3):
        assert threads.parallel_signalled(fill, 10, wait) == [(0, 3), (3, 6), (6, 10)]
        np.testing.assert_array_equal(out, 1)

        def fail_late(part, go, seq):
            fill(part, go, seq)
            if part.start > 0:
                raise ValueError(f"share {part.start} failed")

        with pytest.raises(ValueError, match="share 3 failed"):
            threads.parallel_signalled(fail_late, 10, wait)
        np.testing.assert_array_equal(out, 2)  # every share ran, the failing ones included

        def fail_first(part, go, seq):
            fill(part, go, seq)
            if part.start == 0:
                raise KeyError("the caller's share")

        with pytest.raises(KeyError):
            threads.parallel_signalled(fail_first, 10, wait)
        np.testing.assert_array_equal(out, 3)  # no share outlived the call
        assert len(threads.parallel_signalled(fill, 10, wait)) == 3


def test_one_thread_or_one_item_runs_in_the_caller(wait, fresh_pool):
    seen = []

    def share(part, go, seq):
        seen.append((part, threading.get_ident()))

    with threads.limit(1):
        threads.parallel_signalled(share, 8, wait)
    with threads.limit(2):
        threads.parallel_signalled(share, 1, wait)
    me = threading.get_ident()
    assert seen == [(slice(0, 8), me), (slice(0, 1), me)]
    assert threads._spinners is None  # no worker was started for them


def test_without_a_spin_wait_the_shares_go_to_the_pool(fresh_pool):
    """Where the system has no ``sched_yield``/``clock_gettime`` the same call works through
    the sleeping pool: every share once, in order, the scratch signal written by none."""

    def share(part, go, seq):
        go[0] = seq
        return (part.start, part.stop, threading.get_ident())

    with threads.limit(2):
        got = threads.parallel_signalled(share, 5, None)
    assert [g[:2] for g in got] == [(0, 2), (2, 5)]
    assert got[0][2] == threading.get_ident()
    assert threads._spinners is None


def test_a_second_calling_thread_runs_its_shares_itself(wait, fresh_pool):
    """While one thread's call holds the workers, another thread's call runs serially (it
    neither waits for the workers nor takes the first call's shares)."""
    done, other = np.zeros(1, dtype=np.int64), {}

    def square(part, go, seq):
        go[0] = seq
        return [i * i for i in range(part.start, part.stop)]

    def second_caller():
        with threads.limit(2):
            other["result"] = threads.parallel_signalled(square, 6, wait)
        done[0] = 1

    def first(part, go, seq):
        if part.start == 0:
            thread = threading.Thread(target=second_caller)
            thread.start()
            got = waits_for(wait, done, go, seq)  # the GIL released meanwhile
            thread.join()
            return got
        return "worker"

    with threads.limit(2):
        assert threads.parallel_signalled(first, 2, wait) == [1, "worker"]
    assert other["result"] == [[0, 1, 4], [9, 16, 25]]


@pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs a system that places threads, and two cores",
)
def test_workers_are_kept_off_the_callers_core(wait, fresh_pool):
    """Before a hand-off the workers are allowed every core but the caller's."""
    if threads._getcpu is None:
        pytest.skip("sched_getcpu is not available")

    def share(part, go, seq):
        go[0] = seq
        return threads._placed

    with threads.limit(2):
        caller_core = threads.parallel_signalled(share, 2, wait)[0]
        workers = [t for t, pool in threads._workers.items() if pool is threads._spinners]
    assert caller_core >= 0 and len(workers) == 1
    allowed = os.sched_getaffinity(workers[0])
    assert caller_core not in allowed
    assert allowed == os.sched_getaffinity(0) - {caller_core}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_spinning_workers_work_in_a_forked_child(wait, fresh_pool):
    """A child forked while the workers spin has none of them: it starts its own."""

    def share(part, go, seq):
        go[0] = seq
        return part.stop - part.start

    with threads.limit(2):
        assert threads.parallel_signalled(share, 4, wait) == [2, 2]
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports by its exit status
            ok = threads.parallel_signalled(share, 4, wait) == [2, 2]
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_share_longer_than_the_spin_is_waited_for_to_its_end(wait, fresh_pool, monkeypatch):
    """A worker's share that outlasts SPIN_S: the caller sleeps until it ends, and a late
    signal of one round's end is never taken for the next one's (every round returns the
    worker's own result, its output complete)."""
    monkeypatch.setattr(threads, "SPIN_S", 0.004)
    out, round_ = np.zeros(2, dtype=np.int64), [0]
    spin_ns = threads._spin_ns

    def late() -> int:  # a worker signals the end of its share late: after the caller woke
        if threading.current_thread().name.startswith("cnn_course-spin"):
            time.sleep(0.001)
        return spin_ns()

    monkeypatch.setattr(threads, "_spin_ns", late)

    def share(part, go, seq):
        go[0] = seq
        if part.start == 1:
            time.sleep(0.006)  # longer than the spin
            out[1] = round_[0]
        else:
            time.sleep(0.002)  # the worker meanwhile signals the end of the last round
        return round_[0]

    with threads.limit(2):
        for r in range(1, 21):
            round_[0] = r
            assert threads.parallel_signalled(share, 2, wait) == [r, r]
            assert out[1] == r
