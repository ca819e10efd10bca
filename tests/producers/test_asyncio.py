"""guild.AsyncClient under asyncio: an in-process worker, and a `guild run` in another process."""

from __future__ import annotations

import asyncio

import pytest

import guild

from .apps import guild_run_process, running_worker


def test_round_trip_under_asyncio(url: str) -> None:
    async def main() -> tuple[object, object, guild.JobStatus]:
        async with guild.AsyncClient(url) as client:
            job = await client.enqueue("double", 5)
            many = await client.enqueue_many("double", [10, 20])
            results = await asyncio.gather(*(client.result(j, wait=30) for j in [job, *many]))
            values = [r.value for r in results if r is not None]
            return values, await client.status(many[0]), await client.status(job)

    with running_worker(url):
        values, status, first = asyncio.run(main())
    assert values == [10, 20, 40]
    assert status is first is guild.JobStatus.DONE


def test_an_asyncio_producer_feeds_a_guild_run_in_another_process(url: str) -> None:
    async def main() -> list[object]:
        async with guild.AsyncClient(url) as client:
            jobs = await client.enqueue_many("thumbnails", [{"url": f"u{i}"} for i in range(5)])
            results = [await client.result(job, wait=60) for job in jobs]
            return [r.value if r is not None else None for r in results]

    with guild_run_process(url):
        values = asyncio.run(main())
    assert values == [{"thumbnail": f"thumb-u{i}"} for i in range(5)]


def test_cancelling_the_awaiting_task_stops_the_wait(sqlite_url: str) -> None:
    async def main() -> guild.JobStatus:
        async with guild.AsyncClient(sqlite_url) as client:
            job = await client.enqueue("nobody-serves-this", 1)
            waiting = asyncio.create_task(client.result(job, wait=3600))
            await asyncio.sleep(0.05)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            # The client goes on serving after a cancelled call.
            return await client.status(job)

    assert asyncio.run(main()) is guild.JobStatus.READY


def test_errors_are_guilds_under_asyncio(sqlite_url: str) -> None:
    async def main() -> None:
        async with guild.AsyncClient(sqlite_url) as client:
            with pytest.raises(guild.UnknownJob):
                await client.status("missing")
            with pytest.raises(guild.PayloadEncodeError):
                await client.enqueue("q", {"not json": object()})
            with pytest.raises(guild.InvalidQueueName):
                await client.enqueue(" padded ", 1)

    asyncio.run(main())
