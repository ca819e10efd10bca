"""Lanes, shares and records in each broker: routing by the stored share, moving a
lane back with none lost, compare-and-set writes."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import attrs
import pytest
import trio

from guild import Job
from guild.rollout._machine import CanaryPhase, CanaryPolicy, CanaryState
from guild.rollout._store import CanaryRecord, hand_back_dead, load, load_all, move_lane, save

MakeBroker = Callable[[], AbstractAsyncContextManager[Any]]


def goes_to_lane(job_id: str, share: float) -> bool:
    """The routing rule as docs/rollout.md states it, written out again."""
    digest = hashlib.blake2b(job_id.encode(), digest_size=8, person=b"guild-canary").digest()
    return int.from_bytes(digest, "big") < share * 2**64


async def start_at(broker: Any, queue: str, stage: int) -> CanaryRecord:
    record = CanaryRecord(
        queue=queue, state=CanaryState(phase=CanaryPhase.SOAKING, stage=stage, since=broker.now())
    )
    saved = await save(broker, record)
    assert saved is not None
    return saved


async def drain(broker: Any, queue: str) -> list[str]:
    ids: list[str] = []
    while True:
        got = await broker.claim(queue, consumer="t", limit=100, lease=30)
        if not got:
            return ids
        ids += [d.job.id for d in got]
        await broker.ack([(d, "null") for d in got])


async def test_enqueue_routes_the_share_and_a_rollback_moves_it_back(
    make_broker: MakeBroker,
) -> None:
    async with make_broker() as broker:
        await start_at(broker, "q", 1)  # 50 %
        await trio.sleep(1.1)  # past a Redis producer's cached view of the shares
        jobs = [Job(queue="q", payload=i) for i in range(300)]
        stored = await broker.enqueue(jobs)
        want_lane = {j.id for j in jobs if goes_to_lane(j.id, 0.5)}
        assert {j.id for j in stored if j.queue == "q@canary"} == want_lane
        assert 100 < len(want_lane) < 200
        stats = await broker.stats(["q", "q@canary"])
        assert stats["q@canary"].ready == len(want_lane)
        assert stats["q"].ready == 300 - len(want_lane)

        # One lane job is held by a canary worker, one waits delayed.
        held = (await broker.claim("q@canary", consumer="c", limit=1, lease=30))[0]
        later = Job(queue="q@canary", payload="later", not_before=broker.now() + 3600)
        await broker.enqueue([later])

        record = await load(broker, "q")
        assert record.state is not None
        rolled = attrs.evolve(
            record, state=attrs.evolve(record.state, phase=CanaryPhase.ROLLED_BACK)
        )
        assert await save(broker, rolled) is not None
        moved = await move_lane(broker, "q")
        assert moved == len(want_lane) - 1 + 1  # every waiting one, the delayed one too
        stats = await broker.stats(["q", "q@canary"])
        assert (stats["q@canary"].ready, stats["q@canary"].delayed) == (0, 0)
        assert stats["q@canary"].in_flight == 1
        assert stats["q"].delayed == 1

        # The held job's retry lands in the lane; the next sweep hands it back too.
        await broker.retry(held, at=broker.now(), error="boom")
        assert await move_lane(broker, "q") == 1
        ran = await drain(broker, "q")
        assert sorted(ran) == sorted(j.id for j in jobs)
        await trio.sleep(1.1)
        after = await broker.enqueue([Job(queue="q", payload="x")])
        assert after[0].queue == "q"  # share 0: nothing goes to the lane


async def test_moved_jobs_keep_their_order(make_broker: MakeBroker) -> None:
    async with make_broker() as broker:
        jobs = [Job(queue="q@canary", payload=i) for i in range(20)]
        for job in jobs:
            await broker.enqueue([job])
        assert await move_lane(broker, "q") == 20
        assert await drain(broker, "q") == [j.id for j in jobs]


async def test_writes_compare_and_set(make_broker: MakeBroker) -> None:
    async with make_broker() as broker:
        first = await start_at(broker, "q", 0)
        assert first.version == 1
        assert await save(broker, CanaryRecord(queue="q")) is None  # version 0 is taken
        policy = CanaryPolicy(soak=2.0)
        second = await save(broker, attrs.evolve(first, policy=policy))
        assert second is not None and second.version == 2
        assert await save(broker, attrs.evolve(first, policy=CanaryPolicy())) is None
        found = await load_all(broker)
        assert list(found) == ["q"]
        assert found["q"].policy == policy and found["q"].version == 2
        assert (await load(broker, "other")).version == 0


async def test_a_rollback_requeues_the_lanes_dead_letters_on_the_queue(
    make_broker: MakeBroker,
) -> None:
    async with make_broker() as broker:
        stable_dead = (await broker.enqueue([Job(queue="q", payload="stable's own")]))[0]
        held = (await broker.claim("q", consumer="s", limit=1, lease=30))[0]
        await broker.dead(held, error="stable failed it")
        killed = (await broker.enqueue([Job(queue="q@canary", payload=1, max_attempts=1)]))[0]
        held = (await broker.claim("q@canary", consumer="c", limit=1, lease=30))[0]
        await broker.dead(held, error="v2 broke it")
        assert await hand_back_dead(broker, "q") == 1
        assert await hand_back_dead(broker, "q") == 0
        assert [d.job.id for d in await broker.list_dead()] == [stable_dead.id]
        again = await broker.claim("q", consumer="s", limit=10, lease=30)
        assert [(d.job.id, d.job.queue, d.job.attempt) for d in again] == [(killed.id, "q", 1)]


LONG_WAIT = 3600.0
"""A claim's wait no test sits out: a claimer that got its job before the guard
below ran out was woken by the move, not by its wait ending."""


@pytest.mark.parametrize("delay", [None, 0.3], ids=["ready", "delayed"])
async def test_a_move_wakes_an_idle_claimer_of_the_queue(
    make_broker: MakeBroker, delay: float | None
) -> None:
    """As an enqueue does: a stable worker waiting in its claim (Redis: registered
    as idle until its wait ends) gets the moved job, ready or delayed, when it is
    due, not when its wait is over."""
    async with make_broker() as broker:
        at = None if delay is None else broker.now() + delay
        [job] = await broker.enqueue([Job(queue="q@canary", payload=1, not_before=at)])
        got: list[str] = []

        async def stable() -> None:
            found = await broker.claim("q", consumer="s", limit=1, lease=30, wait=LONG_WAIT)
            got.extend(d.job.id for d in found)

        # A guard against a hang, far above any wake-up and far below LONG_WAIT.
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stable)
                await trio.sleep(0.2)  # the claim finds q empty and waits
                assert await move_lane(broker, "q") == 1
        assert got == [job.id]
