"""A handler that fails in an odd way fails its own job only, never the worker.

* ``sys.exit()`` (``SystemExit`` is no ``Exception``): before, it crossed the
  handler boundary and ended the worker with every job it held (``guild run``
  exited with ``unexpected SystemExit``), and the job came back to do it again.
* An exception whose ``__str__`` raises: describing it for the dead letter
  raised in the worker's own task.
* A message or ``Reject`` reason holding a lone surrogate: no broker can store it
  as text, and the failed write of the dead letter took the worker down.
* A ``BaseException`` that is no ``Exception`` (``GeneratorExit``, a class of the
  handler's own, a ``BaseExceptionGroup`` of them): before, it crossed the handler
  boundary and ended the worker with every job it held; the job came back (its
  attempt counted) and did it again, each time charging the jobs beside it.
* A ``KeyboardInterrupt`` the handler raises itself while SIGINT reaches the
  process through a signal receiver (``guild run``'s way): no Ctrl-C can be
  behind it, so it is the job's failure. Where SIGINT does raise
  ``KeyboardInterrupt`` (Trio's default), it still ends the worker: it may be real.
* A handler that catches the ``Cancelled`` of its timeout and then fails: before,
  settling it ran inside the spent cancel scope, was cut short, and the job stayed
  held (its lease renewed) until the worker drained. And one that catches it and
  returns: the next job on its handler task inherited the cancelled scope and was
  dead-lettered as timed out, although it had barely started.
* A message megabytes long (an exception's, a ``Reject`` reason): stored whole
  with every retry and in the dead letter (message and traceback); now cut to
  ``MAX_TEXT_CHARS``, its head and tail kept.
* A handler that changes its payload in place: on the memory broker each later
  run (and the dead letter) saw the changes; now every broker gives each run the
  payload as enqueued.

Each runs on a real broker of each kind, in real time (SQLite and Redis do I/O).
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import trio

import guild
from guild import Job, JobStatus, Result, Worker, WorkerSpec
from guild._codec import MAX_TEXT_CHARS
from guild.brokers import Broker
from tests._brokers import broker_of
from tests._redis_server import RedisServer, running_redis_server

KINDS = ["memory", "sqlite", "redis"]


class OwnBase(BaseException):
    """A handler's own ``BaseException`` subclass."""


class BrokenStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with running_redis_server() as server:
        yield server


Handler = Callable[[Job], Awaitable[object]]


async def _run_jobs(
    broker: Broker, handler: Handler, jobs: list[Job], *, concurrency: int = 2
) -> tuple[list[Result | None], Worker]:
    stored = await broker.enqueue(jobs)
    spec = WorkerSpec(queue="q", handler=handler, concurrency=concurrency, prefetch=8, lease=10.0)
    worker = Worker(spec, broker)
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.serve)
        results = [await broker.get_result(job.id, wait=20) for job in stored]
        worker.drain()
    return results, worker


def _raise(how: str) -> None:
    if how == "exit":
        sys.exit(5)
    if how == "broken-str":
        raise BrokenStr
    if how == "surrogate":
        raise ValueError("cannot read \udcff.txt")
    if how == "reject-surrogate":
        raise guild.Reject("bad input \udcfe")
    if how == "generator-exit":
        raise GeneratorExit
    if how == "own-base":
        raise OwnBase("gave up on the world")
    if how == "base-group":
        raise BaseExceptionGroup("several", [ValueError("one"), OwnBase("two")])
    raise KeyboardInterrupt


# (how the handler fails, the dead letter's error)
CASES = [
    ("exit", "SystemExit: 5 (gave up after 2 of 2 attempts)"),
    ("broken-str", "BrokenStr: <str() raised RuntimeError> (gave up after 2 of 2 attempts)"),
    ("surrogate", "ValueError: cannot read \\udcff.txt (gave up after 2 of 2 attempts)"),
    ("reject-surrogate", "rejected: bad input \\udcfe"),
    ("generator-exit", "GeneratorExit (gave up after 2 of 2 attempts)"),
    ("own-base", "OwnBase: gave up on the world (gave up after 2 of 2 attempts)"),
    (
        "base-group",
        "BaseExceptionGroup: several (2 sub-exceptions) (gave up after 2 of 2 attempts)",
    ),
    ("keyboard-interrupt", "KeyboardInterrupt (gave up after 2 of 2 attempts)"),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("how", "error"), CASES)
async def test_an_odd_failure_is_its_jobs_alone(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str, how: str, error: str
) -> None:
    ran: list[int] = []

    async def handler(job: Job) -> None:
        if job.payload == 0:
            _raise(how)
        ran.append(job.payload)

    jobs = [Job(queue="q", payload=n, max_attempts=2) for n in range(6)]
    # SIGINT taken by a receiver, as ``guild run`` does: a KeyboardInterrupt is
    # then only ever a handler's own.
    with trio.fail_after(30), trio.open_signal_receiver(signal.SIGINT):
        async with broker_of(kind, request, tmp_path) as broker:
            results, worker = await _run_jobs(broker, handler, jobs)
            letter = await broker.get_dead(results[0].job_id if results[0] else "")
    assert sorted(ran) == [1, 2, 3, 4, 5]
    first, *rest = results
    assert first is not None and first.status is JobStatus.DEAD
    assert first.error == error
    assert [r.status if r else None for r in rest] == [JobStatus.DONE] * 5
    assert letter is not None and letter.error == error
    assert worker.statistics().dead == 1


async def test_a_keyboard_interrupt_that_may_be_ctrl_c_still_ends_the_worker(
    memory_broker: Broker,
) -> None:
    # Trio's own SIGINT handling is in place: a real Ctrl-C raises KeyboardInterrupt
    # in whatever task runs, so the worker cannot tell it from the handler's.
    async def handler(job: Job) -> None:
        raise KeyboardInterrupt

    with pytest.RaisesGroup(KeyboardInterrupt, flatten_subgroups=True):
        await _run_jobs(memory_broker, handler, [Job(queue="q", payload=0)])


def _swallows_its_timeout(then: Callable[[], object]) -> Handler:
    """A handler whose job 0 catches the ``Cancelled`` of its timeout and carries
    on past its deadline to ``then()``; the others return their payload."""

    async def handler(job: Job) -> object:
        if job.payload == 0:
            with contextlib.suppress(trio.Cancelled):
                await trio.sleep(60)
            return then()
        await trio.lowlevel.checkpoint()  # a cancel left over would land here
        return job.payload

    return handler


def _late_then_timely(count: int) -> list[Job]:
    """Job 0 with a 0.5 s timeout, then jobs 1 to ``count`` with 60 s."""
    jobs = [Job(queue="q", payload=0, max_attempts=1, timeout=0.5)]
    return jobs + [
        Job(queue="q", payload=n, max_attempts=1, timeout=60) for n in range(1, count + 1)
    ]


def _fail_late() -> object:
    raise ValueError("failed after its timeout")


@pytest.mark.parametrize("kind", KINDS)
async def test_a_handler_that_swallows_its_timeout_and_fails_is_settled(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str
) -> None:
    handler = _swallows_its_timeout(_fail_late)
    with trio.fail_after(30):
        async with broker_of(kind, request, tmp_path) as broker:
            results, worker = await _run_jobs(broker, handler, _late_then_timely(3), concurrency=1)
            stats = await broker.stats("q")
    first, *rest = results
    assert first is not None and first.status is JobStatus.DEAD
    assert first.error == "ValueError: failed after its timeout (gave up after 1 of 1 attempts)"
    assert [(r.status, r.value) if r else None for r in rest] == [
        (JobStatus.DONE, n) for n in range(1, 4)
    ]
    assert stats["q"].in_flight == 0 and stats["q"].dead == 1
    assert worker.statistics().held == 0


@pytest.mark.parametrize("kind", KINDS)
async def test_the_job_after_one_that_swallowed_its_timeout_keeps_its_own_deadline(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str
) -> None:
    handler = _swallows_its_timeout(lambda: "late")
    with trio.fail_after(30):
        async with broker_of(kind, request, tmp_path) as broker:
            results, _ = await _run_jobs(broker, handler, _late_then_timely(4), concurrency=1)
    assert [(r.status, r.value) if r else None for r in results] == [
        (JobStatus.DONE, "late"),
        *[(JobStatus.DONE, n) for n in range(1, 5)],
    ]


class Megabytes(Exception):
    def __str__(self) -> str:
        return "m" * 10_000_000


@pytest.mark.parametrize("kind", KINDS)
async def test_a_message_megabytes_long_is_stored_cut(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str
) -> None:
    # Before, the 10 MB message went whole into the record with every retry and
    # the dead letter (twice: message and traceback), 20 MB a failure.
    async def handler(job: Job) -> None:
        if job.payload == 0:
            raise Megabytes
        raise guild.Reject("r" * 20_000_000)

    jobs = [Job(queue="q", payload=n, max_attempts=2) for n in range(2)]
    with trio.fail_after(60):
        async with broker_of(kind, request, tmp_path) as broker:
            results, _ = await _run_jobs(broker, handler, jobs)
            letters = [await broker.get_dead(r.job_id) if r else None for r in results]
    cut = f" [... {10_000_000 - MAX_TEXT_CHARS:,} characters cut ...] "
    raised, rejected = letters
    assert raised is not None and raised.traceback is not None
    assert raised.error == (
        "Megabytes: "
        + "m" * (MAX_TEXT_CHARS // 2)
        + cut
        + "m" * (MAX_TEXT_CHARS // 2)
        + " (gave up after 2 of 2 attempts)"
    )
    assert len(raised.traceback) <= MAX_TEXT_CHARS + 100
    assert raised.traceback.rstrip().endswith("m" * 100)
    assert rejected is not None and rejected.error.startswith("rejected: rrr")
    assert len(rejected.error) <= MAX_TEXT_CHARS + 100


@pytest.mark.parametrize("kind", KINDS)
async def test_a_handler_that_changes_its_payload_changes_no_later_run(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str
) -> None:
    # SQLite and Redis hand each run a payload decoded afresh; the memory broker
    # handed out the one object it held, so each run saw the changes of the runs
    # before it, and so did the dead letter.
    seen: list[object] = []

    async def handler(job: Job) -> None:
        assert isinstance(job.payload, dict)
        seen.append(json.loads(json.dumps(job.payload)))
        job.payload["runs"] = int(job.payload.get("runs", 0)) + 1
        job.payload["items"].append("more")
        raise ValueError("again")

    enqueued = {"items": ["a"]}
    jobs = [Job(queue="q", payload=enqueued, max_attempts=3)]
    spec_retry = guild.RetryPolicy(base=0.0, max_delay=0.0, jitter=0.0)
    with trio.fail_after(30):
        async with broker_of(kind, request, tmp_path) as broker:
            stored = await broker.enqueue(jobs)
            spec = WorkerSpec(queue="q", handler=handler, lease=10.0, retry=spec_retry)
            worker = Worker(spec, broker)
            async with trio.open_nursery() as nursery:
                await nursery.start(worker.serve)
                result = await broker.get_result(stored[0].id, wait=20)
                worker.drain()
            letter = await broker.get_dead(stored[0].id)
    assert result is not None and result.status is JobStatus.DEAD
    assert seen == [{"items": ["a"]}] * 3
    assert letter is not None and letter.job.payload == {"items": ["a"]}
