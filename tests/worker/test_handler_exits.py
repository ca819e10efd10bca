"""A handler's odd way of failing fails its own job, never the worker.

* ``sys.exit()`` (``SystemExit`` is no ``Exception``): before, it crossed the
  handler boundary and ended the worker with every job it held (``guild run``
  exited with ``unexpected SystemExit``), and the job came back to do it again.
* An exception whose ``__str__`` raises: describing it for the dead letter
  raised in the worker's own task.
* A message or ``Reject`` reason holding a lone surrogate: no broker can store it
  as text, and the failed write of the dead letter took the worker down.

Each runs on a real broker of each kind, in real time (SQLite and Redis do I/O).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

import guild
from guild import Job, JobStatus, Worker, WorkerSpec
from tests._brokers import broker_of
from tests._redis_server import RedisServer, running_redis_server


class BrokenStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


def _fail(how: str) -> None:
    if how == "exit":
        sys.exit(5)
    if how == "broken-str":
        raise BrokenStr
    if how == "surrogate":
        raise ValueError("cannot read \udcff.txt")
    raise guild.Reject("bad input \udcfe")


# (how the handler fails, the dead letter's error)
CASES = [
    ("exit", "SystemExit: 5 (gave up after 2 of 2 attempts)"),
    ("broken-str", "BrokenStr: <str() raised RuntimeError> (gave up after 2 of 2 attempts)"),
    ("surrogate", "ValueError: cannot read \\udcff.txt (gave up after 2 of 2 attempts)"),
    ("reject-surrogate", "rejected: bad input \\udcfe"),
]


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with running_redis_server() as server:
        yield server


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
@pytest.mark.parametrize(("how", "error"), CASES)
async def test_the_job_is_dead_lettered_and_the_rest_run(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str, how: str, error: str
) -> None:
    ran: list[int] = []

    async def handler(job: Job) -> None:
        if job.payload == 0:
            _fail(how)
        ran.append(job.payload)

    with trio.fail_after(30):
        async with broker_of(kind, request, tmp_path) as broker:
            jobs = await broker.enqueue(
                [Job(queue="q", payload=n, max_attempts=2) for n in range(6)]
            )
            spec = WorkerSpec(queue="q", handler=handler, concurrency=2, lease=10.0)
            worker = Worker(spec, broker)
            async with trio.open_nursery() as nursery:
                await nursery.start(worker.serve)
                results = [await broker.get_result(job.id, wait=20) for job in jobs]
                worker.drain()
            letter = await broker.get_dead(jobs[0].id)
    assert sorted(ran) == [1, 2, 3, 4, 5]
    first, *rest = results
    assert first is not None and first.status is JobStatus.DEAD
    assert first.error == error
    assert [r.status if r else None for r in rest] == [JobStatus.DONE] * 5
    assert letter is not None and letter.error == error
