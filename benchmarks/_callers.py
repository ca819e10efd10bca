"""N calls from C threads at once, timed: the threaded enqueue of both halves of
``bench_vs_huey.py``. Standard library only, since ``huey_side.py`` imports it under
an interpreter that has Huey but not guild."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def shares(n: int, callers: int) -> list[range]:
    """The job numbers each of ``callers`` enqueues: ``range(n)`` split evenly."""
    bounds = [n * k // callers for k in range(callers + 1)]
    return [range(bounds[k], bounds[k + 1]) for k in range(callers)]


def timed_threads(call: Callable[[int], object], n: int, callers: int) -> dict[str, int]:
    """``call(i)`` for each i of ``range(n)``, split among ``callers`` threads (this one
    when 1): ``t0`` and ``t1`` (monotonic ns) around the calls, and ``cpu_ns`` (the
    process's CPU time over them)."""

    def run(share: range, go: threading.Barrier | None) -> None:
        if go is not None:
            go.wait()
        for i in share:
            call(i)

    if callers == 1:
        c0, t0 = time.process_time_ns(), time.monotonic_ns()
        run(range(n), None)
    else:
        # Started, then released together, so thread start-up is not timed.
        go = threading.Barrier(callers + 1)
        threads = [threading.Thread(target=run, args=(s, go)) for s in shares(n, callers)]
        for thread in threads:
            thread.start()
        c0, t0 = time.process_time_ns(), time.monotonic_ns()
        go.wait()
        for thread in threads:
            thread.join()
    t1, c1 = time.monotonic_ns(), time.process_time_ns()
    return {"t0": t0, "t1": t1, "cpu_ns": c1 - c0}
