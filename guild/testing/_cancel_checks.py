"""Conformance checks of job cancellation (``Broker.cancel``; see "Cancellation"
in ``guild.brokers._protocol``). Registered in ``_conformance.CHECKS``."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import trio

from .._codec import encode_result
from .._job import Job, JobStatus
from ..brokers._protocol import Broker

MakeBroker = Callable[[], AbstractAsyncContextManager[Broker]]
LIMIT = 20.0
LEASE = 0.4


async def _payloads(broker: Broker, queue: str) -> list[Any]:
    got = await broker.claim(queue, consumer="c", limit=1000, lease=30)
    return [d.job.payload for d in got]


async def _assert_cancelled(broker: Broker, job_id: str, attempts: int) -> None:
    result = await broker.get_result(job_id)
    assert result is not None, f"job {job_id} has no result after its cancel"
    assert result.status is JobStatus.CANCELLED, result
    assert result.error == "cancelled", result
    assert not result.ok
    assert result.attempts == attempts, f"attempts {result.attempts}, expected {attempts}"


async def cancel_waiting(make_broker: MakeBroker) -> None:
    """A ready or delayed job cancelled is never claimed; its result says CANCELLED;
    unknown and finished ids are left out of the answer; stats count it."""
    with trio.fail_after(LIMIT):
        async with make_broker() as broker:
            r0, r1, r2 = await broker.enqueue([Job(queue="q", payload=i) for i in range(3)])
            (late,) = await broker.enqueue(
                [Job(queue="q", payload="late", not_before=broker.now() + 0.3)]
            )
            answered = await broker.cancel([r0.id, "no-such-job", late.id, r2.id])
            assert answered == [r0.id, late.id, r2.id], answered
            assert await _payloads(broker, "q") == [1]
            await trio.sleep(0.5)  # the delayed one's time has come: still nothing
            assert await _payloads(broker, "q") == []
            for job in (r0, late, r2):
                await _assert_cancelled(broker, job.id, 0)
            assert await broker.cancel([r0.id, late.id]) == []  # already ended
            stats = (await broker.stats(["q"]))["q"]
            assert (stats.ready, stats.delayed, stats.in_flight, stats.cancelled) == (0, 0, 1, 3)
            assert stats.done == 0 and stats.dead == 0
            assert await broker.list_dead("q") == []
            assert r1.id not in await broker.cancel_requested([r1.id])


async def cancel_wakes_waiter(make_broker: MakeBroker) -> None:
    """get_result waiting on a job hears of its cancel."""
    with trio.fail_after(LIMIT):
        async with make_broker() as broker:
            (job,) = await broker.enqueue([Job(queue="q", payload=1)])
            found: list[Any] = []

            async def waiter() -> None:
                found.append(await broker.get_result(job.id, wait=10))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiter)
                await trio.sleep(0.2)
                assert await broker.cancel([job.id]) == [job.id]
            assert found[0] is not None and found[0].status is JobStatus.CANCELLED


async def cancel_running(make_broker: MakeBroker) -> None:
    """A started job gets a request its holder reads, then finishes it cancelled;
    ack, retry and dead of it change nothing after."""
    with trio.fail_after(LIMIT):
        async with make_broker() as broker:
            jobs = await broker.enqueue([Job(queue="q", payload=i) for i in range(2)])
            held = await broker.claim("q", consumer="c", limit=2, lease=30)
            ids = [d.job.id for d in held]
            assert await broker.cancel_requested(ids) == set()
            assert await broker.cancel([jobs[0].id]) == [jobs[0].id]
            # Still in flight, with its request standing: asking again answers it again.
            assert await broker.cancel([jobs[0].id]) == [jobs[0].id]
            assert (await broker.stats(["q"]))["q"].in_flight == 2
            assert await broker.get_result(jobs[0].id) is None
            assert await broker.cancel_requested(ids) == {jobs[0].id}
            assert await broker.cancel_requested([jobs[1].id]) == set()
            await broker.finish_cancelled([held[0]])
            await _assert_cancelled(broker, jobs[0].id, 1)
            assert await broker.cancel_requested(ids) == set()
            await broker.ack([(held[0], encode_result("late"))])
            await broker.retry(held[0], at=broker.now(), error="E")
            await broker.dead(held[0], error="E")
            await _assert_cancelled(broker, jobs[0].id, 1)
            assert await _payloads(broker, "q") == []
            stats = (await broker.stats(["q"]))["q"]
            assert (stats.in_flight, stats.cancelled, stats.dead, stats.done) == (1, 1, 0, 0)
            assert await broker.cancel([jobs[0].id]) == []


async def cancel_not_run_again(make_broker: MakeBroker) -> None:
    """A job with a cancel request that is retried, released or whose lease expires
    ends cancelled instead of running again; an ack before the cancel lands wins."""
    with trio.fail_after(LIMIT):
        async with make_broker() as broker:
            jobs = await broker.enqueue([Job(queue="q", payload=i) for i in range(4)])
            held = await broker.claim("q", consumer="c", limit=3, lease=30)
            assert [d.job.payload for d in held] == [0, 1, 2]
            assert await broker.cancel([j.id for j in jobs[:3]]) == [j.id for j in jobs[:3]]
            await broker.retry(held[0], at=broker.now(), error="failed meanwhile")
            await broker.release([held[1]])
            await broker.ack([(held[2], encode_result("finished first"))])
            await _assert_cancelled(broker, jobs[0].id, 1)
            # Its run had started: it counts, as it will not run again.
            await _assert_cancelled(broker, jobs[1].id, 1)
            done = await broker.get_result(jobs[2].id)
            assert (
                done is not None
                and done.status is JobStatus.DONE
                and done.value == ("finished first")
            )
            assert await broker.cancel_requested([d.job.id for d in held]) == set()
            # Only the job nobody cancelled runs.
            (last,) = await broker.claim("q", consumer="c", limit=5, lease=LEASE)
            assert last.job.payload == 3
            assert await broker.cancel([jobs[3].id]) == [jobs[3].id]
            await trio.sleep(LEASE + 0.2)  # its holder died: the lease runs out
            assert await broker.claim("q", consumer="c", limit=5, lease=30) == []
            await _assert_cancelled(broker, jobs[3].id, 1)
            assert (await broker.stats(["q"]))["q"].cancelled == 3


async def cancel_unstarted(make_broker: MakeBroker) -> None:
    """A claimed but unstarted (prefetched) job cancelled ends at once: its holder's
    start leaves it out, so it never runs."""
    with trio.fail_after(LIMIT):
        async with make_broker() as broker:
            (job,) = await broker.enqueue([Job(queue="q", payload=1)])
            (delivery,) = await broker.claim("q", consumer="c", limit=1, lease=30, start=0)
            assert not delivery.started
            assert await broker.cancel([job.id]) == [job.id]
            assert await broker.start([delivery]) == []
            await _assert_cancelled(broker, job.id, 0)
            assert await broker.cancel_requested([job.id]) == set()
            assert (await broker.stats(["q"]))["q"].in_flight == 0


async def cancel_dead_wins(make_broker: MakeBroker) -> None:
    """A run that ends in the dead letters before its cancel lands stays dead, and
    a dead letter requeued later runs without the old request."""
    with trio.fail_after(LIMIT):
        async with make_broker() as broker:
            (job,) = await broker.enqueue([Job(queue="q", payload=1)])
            (held,) = await broker.claim("q", consumer="c", limit=1, lease=30)
            assert await broker.cancel([job.id]) == [job.id]
            await broker.dead(held, error="E")
            result = await broker.get_result(job.id)
            assert result is not None and result.status is JobStatus.DEAD
            assert await broker.requeue_dead([job.id]) == 1
            (again,) = await broker.claim("q", consumer="c", limit=1, lease=30)
            assert await broker.cancel_requested([job.id]) == set()
            await broker.ack([(again, encode_result("ran"))])
            result = await broker.get_result(job.id)
            assert result is not None and result.status is JobStatus.DONE
