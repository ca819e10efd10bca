"""A failed ``RedisBroker.open`` leaves nothing open: code that catches
``BrokerUnavailable`` goes on with a sound Trio run (it used to end in
``RuntimeError: Nursery stack corrupted``, since the client's task group was
entered and never exited)."""

from __future__ import annotations

import pytest
import trio
import trio.lowlevel

import guild
from guild.brokers.redis import RedisBroker
from tests._redis_server import RedisServer, free_port


async def _child(done: list[str]) -> None:
    await trio.lowlevel.checkpoint()
    done.append("child")


@pytest.mark.parametrize("scheme", ["redis", "redis+cluster"])
async def test_caught_unavailable_leaves_trio_sound(scheme: str, redis_server: RedisServer) -> None:
    closed = f"{scheme}://127.0.0.1:{free_port()}"
    with trio.fail_after(60):
        for _ in range(3):
            with pytest.raises(guild.BrokerUnavailable, match=r"127\.0\.0\.1"):
                await RedisBroker.open(closed)
            with pytest.raises(guild.BrokerUnavailable):
                async with guild.open_broker(closed):
                    pytest.fail("opened a broker on a closed port")
        # Nurseries and a real broker still work in the same run afterwards.
        done: list[str] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_child, done)
        async with guild.open_broker(redis_server.url) as broker:
            (job,) = await broker.enqueue([guild.Job(queue="after-outage", payload=1)])
            assert (await broker.stats(["after-outage"]))["after-outage"].ready >= 1
    assert done == ["child"]
    assert job.queue == "after-outage"
