"""Conformance checks of ``purge`` (the optional ``guild.brokers.Purgeable``).
Registered in ``_conformance.CHECKS``; each is skipped for a broker without it."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import trio

from .._codec import encode_result
from .._job import Job, JobStatus
from ..brokers._protocol import Broker, Purgeable

MakeBroker = Callable[[], AbstractAsyncContextManager[Broker]]
LIMIT = 30.0
FAR = 3600.0


class PurgeMissing(Exception):
    """The broker has no ``purge``."""


def _purgeable(broker: Broker) -> Purgeable:
    if not isinstance(broker, Purgeable):
        raise PurgeMissing(f"{type(broker).__name__} has no purge (guild.brokers.Purgeable)")
    return broker


async def _fill(broker: Broker, queue: str) -> dict[str, list[str]]:
    """Jobs of ``queue`` in every status: 3 ready, 2 delayed, 2 done, 1 dead,
    1 cancelled, 1 in flight. Returns their ids by status."""
    ids: dict[str, list[str]] = {}
    done = await broker.enqueue([Job(queue=queue, payload=f"d{i}") for i in range(2)])
    claimed = await broker.claim(queue, consumer="c", limit=2, lease=FAR)
    await broker.ack([(d, encode_result(d.job.payload)) for d in claimed])
    ids["done"] = [j.id for j in done]
    dead = await broker.enqueue([Job(queue=queue, payload="x", max_attempts=1)])
    (held,) = await broker.claim(queue, consumer="c", limit=1, lease=FAR)
    await broker.dead(held, error="boom")
    ids["dead"] = [dead[0].id]
    flying = await broker.enqueue([Job(queue=queue, payload="f")])
    await broker.claim(queue, consumer="c", limit=1, lease=FAR)
    ids["in_flight"] = [flying[0].id]
    cancelled = await broker.enqueue([Job(queue=queue, payload="c")])
    assert await broker.cancel([cancelled[0].id]) == [cancelled[0].id]
    ids["cancelled"] = [cancelled[0].id]
    ready = await broker.enqueue([Job(queue=queue, payload=f"r{i}") for i in range(3)])
    ids["ready"] = [j.id for j in ready]
    later = broker.now() + FAR
    delayed = await broker.enqueue(
        [Job(queue=queue, payload=f"l{i}", not_before=later) for i in range(2)]
    )
    ids["delayed"] = [j.id for j in delayed]
    return ids


async def _statuses(broker: Broker, ids: dict[str, list[str]]) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for group in ids.values():
        for job_id in group:
            info = await broker.job_info(job_id)
            found[job_id] = None if info is None else info.status.value
    return found


async def purge_by_status(make_broker: MakeBroker) -> None:
    """``purge(queue, statuses)`` deletes exactly the jobs of that queue in those
    statuses (record, result, dead letter), answers how many, never touches a job
    in flight or another queue's jobs, and leaves the done/cancelled totals."""
    with trio.fail_after(LIMIT):
        async with make_broker() as broker:
            purger = _purgeable(broker)
            ids = await _fill(broker, "q")
            other = await _fill(broker, "other")
            before = (await broker.stats(["q"]))["q"]
            steps = [
                (JobStatus.DONE, 2),
                (JobStatus.DEAD, 1),
                (JobStatus.CANCELLED, 1),
                (JobStatus.DELAYED, 2),
                (JobStatus.READY, 3),
            ]
            gone: set[str] = set()
            for status, count in steps:
                assert await purger.purge("q", [status]) == count, status
                gone.update(ids[status.value])
                for job_id in ids[status.value]:
                    assert await broker.job_info(job_id) is None, (status, job_id)
                    assert await broker.get_result(job_id) is None, (status, job_id)
                left = {i: s for i, s in (await _statuses(broker, ids)).items() if i not in gone}
                assert all(s is not None for s in left.values()), (status, left)
                assert await purger.purge("q", [status]) == 0, status
            assert await broker.list_dead("q") == []
            assert await broker.claim("q", consumer="c", limit=10, lease=30) == []
            info = await broker.job_info(ids["in_flight"][0])
            assert info is not None and info.status is JobStatus.IN_FLIGHT, info
            after = (await broker.stats(["q"]))["q"]
            assert (after.ready, after.delayed, after.in_flight, after.dead) == (0, 0, 1, 0)
            assert (after.done, after.cancelled) == (before.done, before.cancelled)
            untouched = await _statuses(broker, other)
            assert all(s is not None for s in untouched.values()), untouched
            assert len(await broker.list_dead("other")) == 1


async def purge_all_at_once(make_broker: MakeBroker) -> None:
    """Several statuses in one purge delete them all; an empty or unknown queue is 0."""
    with trio.fail_after(LIMIT):
        async with make_broker() as broker:
            purger = _purgeable(broker)
            await _fill(broker, "q")
            every = [
                JobStatus.READY,
                JobStatus.DELAYED,
                JobStatus.DONE,
                JobStatus.DEAD,
                JobStatus.CANCELLED,
            ]
            assert await purger.purge("q", every) == 9
            assert await purger.purge("nothing-here", every) == 0
            stats = (await broker.stats(["q"]))["q"]
            assert (stats.ready, stats.delayed, stats.in_flight, stats.dead) == (0, 0, 1, 0)


async def purge_older_than(make_broker: MakeBroker) -> None:
    """``older_than`` keeps younger jobs: a finished job's age runs from when it
    finished, a waiting one's from when it was enqueued."""
    with trio.fail_after(LIMIT):
        async with make_broker() as broker:
            purger = _purgeable(broker)
            (old,) = await broker.enqueue([Job(queue="q", payload="old")])
            claimed = await broker.claim("q", consumer="c", limit=1, lease=FAR)
            await broker.ack([(claimed[0], encode_result(1))])
            (waiting_old,) = await broker.enqueue([Job(queue="w", payload="old")])
            await trio.sleep(1.0)
            (young,) = await broker.enqueue([Job(queue="q", payload="young")])
            claimed = await broker.claim("q", consumer="c", limit=1, lease=FAR)
            await broker.ack([(claimed[0], encode_result(2))])
            (waiting_young,) = await broker.enqueue([Job(queue="w", payload="young")])
            assert await purger.purge("q", [JobStatus.DONE], older_than=FAR) == 0
            assert await purger.purge("q", [JobStatus.DONE], older_than=0.5) == 1
            assert await broker.job_info(old.id) is None
            assert await broker.get_result(young.id) is not None
            assert await purger.purge("w", [JobStatus.READY], older_than=0.5) == 1
            assert await broker.job_info(waiting_old.id) is None
            assert await broker.job_info(waiting_young.id) is not None
            assert await purger.purge("q", [JobStatus.DONE], older_than=0) == 1


async def purge_bad_arguments(make_broker: MakeBroker) -> None:
    """A purge of ``in_flight`` jobs, or with a negative ``older_than``, is a ValueError."""
    with trio.fail_after(LIMIT):
        async with make_broker() as broker:
            purger = _purgeable(broker)
            for statuses, older_than in (([JobStatus.IN_FLIGHT], None), ([JobStatus.DONE], -1.0)):
                try:
                    await purger.purge("q", statuses, older_than=older_than)
                except ValueError:
                    continue
                raise AssertionError(f"purge({statuses}, older_than={older_than}) was accepted")
