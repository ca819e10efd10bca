"""guild.AsyncClient under Trio: the broker opens in the caller's own run, no thread."""

from __future__ import annotations

import threading

import pytest
import trio

import guild

from .apps import app


async def test_round_trip_in_one_trio_run(url: str) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(app.run, url)
            async with guild.AsyncClient(url) as client:
                # Under Trio the client starts no thread of its own.
                assert not [t for t in threading.enumerate() if t.name.startswith("guild-client")]
                job = await client.enqueue("double", [1])
                result = await client.result(job, wait=30)
                assert result is not None and result.value == [1, 1]
                assert await client.status(job) is guild.JobStatus.DONE
            nursery.cancel_scope.cancel()


async def test_trio_errors_and_close(sqlite_url: str) -> None:
    client = guild.AsyncClient(sqlite_url)
    with pytest.raises(guild.BrokerClosed, match="is not open"):
        await client.enqueue("q", 1)
    async with client:
        with pytest.raises(guild.UnknownJob):
            await client.result("missing")
    with pytest.raises(guild.BrokerClosed, match="is closed"):
        await client.enqueue("q", 1)
    with pytest.raises(guild.BrokerClosed, match="opened before"):
        async with client:
            pass
