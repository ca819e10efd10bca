"""Redis-only behaviour beyond the conformance suite: the claim script's replay."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import guild
from guild.brokers import encode_result
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
    return [str(flat[i], "utf-8") for i in range(2, len(flat), _JOB_FIELDS)]


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
            # Something else took the stream's key: the error says so, and is not
            # mistaken for a lost consumer group.
            await (await broker.redis_client()).delete(["wrongtype:q:q:ready"])
            await (await broker.redis_client()).set("wrongtype:q:q:ready", "not a stream")
            with pytest.raises(
                guild.BrokerError,
                match="claim: Operation against a key holding the wrong kind of value",
            ):
                await broker.claim("q", consumer="c1", limit=1, lease=1.0)
        finally:
            await broker.aclose()
