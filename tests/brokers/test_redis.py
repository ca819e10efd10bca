"""Redis-only behaviour beyond the conformance suite: the claim script's replay."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import trio

import guild
from guild.brokers import encode_result
from guild.brokers._redis_errors import WrongTypeError
from guild.brokers.redis import _JOB_FIELDS, RedisBroker, _deliveries
from tests._redis_server import RedisServer, running_redis_server


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with running_redis_server() as running:
        yield running


async def _claim_script(broker: RedisBroker, token: str, limit: int) -> list[str]:
    now = broker.now()
    flat = await broker._call(
        # start every job taken; 5 attempts for jobs that set none
        "claim",
        ["q", repr(now), 60_000, 5_000, repr(now + 30), "c1", limit, token, limit, 5],
    )
    return _claimed_ids(flat)


class TestClaimReplay:
    """A claim whose reply was lost, asked again with its token, gets the same jobs."""

    async def test_same_token_same_jobs(self, server: RedisServer) -> None:
        broker = await RedisBroker.open(server.url, prefix="replay")
        try:
            jobs = await broker.enqueue([guild.Job(queue="q", payload=i) for i in range(5)])
            assert await broker.claim("q", consumer="c1", limit=0, lease=1.0) == []
            first = await _claim_script(broker, "token-1", 2)
            assert first == [jobs[0].id, jobs[1].id]
            # The same call again (its reply was lost): the same two, not two more.
            assert await _claim_script(broker, "token-1", 2) == first
            stats = (await broker.stats(["q"]))["q"]
            assert (stats.in_flight, stats.ready) == (2, 3)
            # A job finished since is not handed out again.
            await broker.ack([(d, encode_result(None)) for d in await _held(broker, jobs[0].id)])
            assert await _claim_script(broker, "token-1", 2) == [jobs[1].id]
            # A new token is a new claim.
            assert await _claim_script(broker, "token-2", 2) == [jobs[2].id, jobs[3].id]
        finally:
            await broker.aclose()


async def _held(broker: RedisBroker, job_id: str) -> list[guild.Delivery]:
    now = broker.now()
    flat = await broker._call(
        "claim", ["q", repr(now), 60_000, 5_000, repr(now + 30), "c1", 5, "token-1", 5, 5]
    )
    taken, _ = _deliveries(flat[2:], "q", "c1", now + 30)
    return [d for d in taken if d.job.id == job_id]


class TestClaimErrors:
    async def test_a_read_error_other_than_nogroup_is_reported_as_it_is(
        self, server: RedisServer
    ) -> None:
        broker = await RedisBroker.open(server.url, prefix="wrongtype")
        try:
            assert await broker.claim("q", consumer="c1", limit=1, lease=1.0) == []
            # Something else took the stream's key: the error says so, naming the
            # key, and is not mistaken for a lost consumer group.
            await (await broker.redis_client()).delete(["wrongtype:q:q:ready"])
            await (await broker.redis_client()).set("wrongtype:q:q:ready", "not a stream")
            # (A claim more than five seconds after the last also counts the queue
            # for its watch, which reports the key and goes on to the claim.)
            with pytest.raises(WrongTypeError) as refused:
                await broker.claim("q", consumer="c1", limit=1, lease=1.0)
            assert str(refused.value) == (
                "redis: claim from 'q': the key wrongtype:q:q:ready holds a string, not a"
                " stream (another program's key under guild's prefix?)"
            )
        finally:
            await broker.aclose()


class TestLargeBatches:
    """A claim and an ack of thousands of jobs: the scripts pass their per-batch
    commands (XACK, XDEL, ZADD, ZREM, RPUSH) in chunks, since one call with every
    job's arguments would overflow Lua's stack (about 8000 values)."""

    async def test_claim_and_ack_of_4500_jobs(self, server: RedisServer) -> None:
        broker = await RedisBroker.open(server.url, prefix="large")
        client = await broker.redis_client()
        try:
            jobs = await broker.enqueue([guild.Job(queue="q", payload=i) for i in range(4500)])
            taken = await broker.claim("q", consumer="c1", limit=4500, lease=60.0)
            assert sorted(d.job.id for d in taken) == sorted(j.id for j in jobs)
            assert {d.job.attempt for d in taken} == {1}
            stats = (await broker.stats(["q"]))["q"]
            assert (stats.ready, stats.in_flight) == (0, 4500)
            assert await client.zcard("large:q:q:leases") == 4500
            assert await client.xlen("large:q:q:ready") == 0
            assert await broker.extend(taken[:10], lease=120.0) != []
            await broker.ack([(d, encode_result(d.job.payload)) for d in taken])
            stats = (await broker.stats(["q"]))["q"]
            assert (stats.in_flight, stats.done) == (0, 4500)
            assert await client.zcard("large:q:q:leases") == 0
            result = await broker.get_result(jobs[4321].id)
            assert result is not None and result.value == 4321
        finally:
            await broker.aclose()

    async def test_an_ack_wakes_each_waiter_with_its_own_jobs_result(
        self, server: RedisServer
    ) -> None:
        # The ack reads every job's waiter count at once, in chunks of 1000 keys:
        # waiters on both sides of a chunk's edge, two on one job, none on the rest.
        broker = await RedisBroker.open(server.url, prefix="waiters")
        client = await broker.redis_client()
        try:
            jobs = await broker.enqueue([guild.Job(queue="q", payload=i) for i in range(1200)])
            taken = await broker.claim("q", consumer="c1", limit=1200, lease=60.0)
            watched = [jobs[3].id, jobs[999].id, jobs[1000].id, jobs[1000].id, jobs[1199].id]
            got: list[tuple[str, object]] = []

            async def wait_for(job_id: str) -> None:
                result = await broker.get_result(job_id, wait=20)
                assert result is not None
                got.append((job_id, result.value))

            async with trio.open_nursery() as nursery:
                for job_id in watched:
                    nursery.start_soon(wait_for, job_id)
                counts = {jobs[3].id: b"1", jobs[999].id: b"1", jobs[1000].id: b"2"}
                counts[jobs[1199].id] = b"1"
                with trio.fail_after(10):
                    # Polled: the waiters count themselves in Redis, which signals nothing.
                    while await _waiting(client, "waiters", counts) != counts:  # noqa: ASYNC110
                        await trio.sleep(0.01)
                await broker.ack([(d, encode_result([d.job.payload, "x"])) for d in taken])
            assert sorted(got) == sorted(
                [(jobs[3].id, [3, "x"]), (jobs[999].id, [999, "x"])]
                + [(jobs[1000].id, [1000, "x"])] * 2
                + [(jobs[1199].id, [1199, "x"])]
            )
            assert await client.get(f"waiters:waiting:{jobs[1000].id}") is None
        finally:
            await broker.aclose()


async def _waiting(client: Any, prefix: str, counts: dict[str, bytes]) -> dict[str, bytes | None]:
    """The waiter count Redis holds for each job of ``counts``."""
    return {job_id: await client.get(f"{prefix}:waiting:{job_id}") for job_id in counts}


class TestLeaseScores:
    """A lease's score is its expiry rounded up to a second (cheap for Redis to
    sort); the job hash's exact expiry decides whether it is live."""

    async def test_a_lease_ends_at_its_exact_expiry_not_its_score(
        self, server: RedisServer
    ) -> None:
        async with _claimed_at_a_quarter(server, "leasescore") as (broker, job, t, flat):
            client = await broker.redis_client()
            # The lease ends at t + 0.5 (.75 past a second), scored at the next whole second.
            taken, _ = _deliveries(flat[2:], "q", "c1", t + 0.5)
            assert [d.job.id for d in taken] == [job.id]
            assert await client.zscore("leasescore:q:q:leases", job.id) == t + 0.75
            receipt = taken[0].receipt
            # Before its expiry: live, renewable, not taken by another claim, which
            # is told the exact expiry as the next time something falls due.
            flat = await _claim_at(broker, "c2", t + 0.45, t + 1.0, "token-b")
            assert len(flat) == 2 and float(flat[0]) == t + 0.5
            assert await _extend_at(broker, t + 0.45, t + 0.5, job.id, receipt) == [job.id]
            # Renewed to t + 0.95 (scored t + 0.75); past that, with its score
            # still ahead: expired, so not renewed, and the next claim takes it.
            assert await _extend_at(broker, t + 0.96, t + 1.5, job.id, receipt) == []
            flat = await _claim_at(broker, "c2", t + 0.96, t + 2.0, "token-c")
            assert _claimed_ids(flat) == [job.id]

    async def test_an_exact_score_from_an_older_guild_is_read_as_it_is(
        self, server: RedisServer
    ) -> None:
        async with _claimed_at_a_quarter(server, "leaseold") as (broker, job, t, flat):
            client = await broker.redis_client()
            assert len(flat) == 2 + _JOB_FIELDS
            # As guilds before rounded scores stored it: the exact expiry as the
            # score, and in the hash a later one (a score is what they went by).
            await client.zadd("leaseold:q:q:leases", {job.id: t + 0.3})
            flat = await _claim_at(broker, "c2", t + 0.29, t + 1.0, "token-b")
            assert len(flat) == 2 and float(flat[0]) == t + 0.3
            flat = await _claim_at(broker, "c2", t + 0.31, t + 1.0, "token-c")
            assert _claimed_ids(flat) == [job.id]


@contextlib.asynccontextmanager
async def _claimed_at_a_quarter(
    server: RedisServer, prefix: str
) -> AsyncIterator[tuple[RedisBroker, guild.Job, float, list[bytes]]]:
    """A broker with one job on ``q``, claimed by ``c1`` at a clock ``t`` a quarter
    past a whole second with a lease to ``t + 0.5``; yields the broker, the job,
    ``t`` and the claim script's reply."""
    broker = await RedisBroker.open(server.url, prefix=prefix)
    try:
        (job,) = await broker.enqueue([guild.Job(queue="q", payload=1)])
        assert await broker.claim("q", consumer="c0", limit=0, lease=1.0) == []
        t = float(int(broker.now())) + 0.25
        yield broker, job, t, await _claim_at(broker, "c1", t, t + 0.5, "token-a")
    finally:
        await broker.aclose()


def _claimed_ids(flat: list[bytes]) -> list[str]:
    """The ids of the jobs a claim script's reply hands out."""
    return [str(flat[i], "utf-8") for i in range(2, len(flat), _JOB_FIELDS)]


async def _claim_at(
    broker: RedisBroker, consumer: str, now: float, lease_expires: float, token: str
) -> list[bytes]:
    flat: list[bytes] = await broker._call(
        "claim",
        ["q", repr(now), 60_000, 5_000, repr(lease_expires), consumer, 1, token, 1, 5],
    )
    return flat


async def _extend_at(
    broker: RedisBroker, now: float, lease_expires: float, job_id: str, receipt: str
) -> list[str]:
    renewed = await broker._call("extend", [repr(now), repr(lease_expires), job_id, receipt])
    return [str(i, "utf-8") for i in renewed]
