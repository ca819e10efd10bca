"""Event builders shared by the observability tests."""

from __future__ import annotations

from collections.abc import Callable

import trio

from guild import Job
from guild.observability import JobFinished, Outcome, WorkerStateChanged


def finished(
    worker: str = "w",
    outcome: Outcome = Outcome.DONE,
    duration: float = 0.01,
    *,
    queue: str | None = None,
    job: Job | None = None,
) -> JobFinished:
    """A finished attempt of a fresh job (or of ``job``)."""
    job = job or Job(queue=queue or worker, payload=None, attempt=1)
    error = None if outcome is Outcome.DONE else "ValueError: boom"
    return JobFinished(worker=worker, job=job, outcome=outcome, duration=duration, error=error)


def state(
    worker: str, name: str, *, at: float = 0.0, error: str | None = None
) -> WorkerStateChanged:
    """A supervisor state change."""
    return WorkerStateChanged(worker=worker, state=name, at=at, last_error=error)


async def eventually(predicate: Callable[[], bool], *, step: float = 0.01) -> None:
    """Wait until ``predicate()`` holds (bound the wait with ``trio.fail_after``).

    For conditions that another task makes true across real I/O, where no
    event exists to wait on (a server noticing a client, say).
    """
    for _ in iter(int, 1):
        if predicate():
            return
        await trio.sleep(step)
