"""Cancelling through the clients: a waiting job never runs and reads cancelled."""

from __future__ import annotations

import asyncio

import guild

from .apps import running_worker


def test_cancel_a_ready_and_a_delayed_job(url: str) -> None:
    with guild.Client(url) as client:
        ready = client.enqueue("nobody-serves-this", 1)
        delayed = client.enqueue("nobody-serves-this", 2, delay=3600)
        assert client.cancel([ready, delayed.id, "no-such-job"]) == [ready.id, delayed.id]
        for job in (ready, delayed):
            assert client.status(job) is guild.JobStatus.CANCELLED
            result = client.result(job)
            assert result is not None and result.status is guild.JobStatus.CANCELLED
        # A finished job is left out of a second cancel.
        assert client.cancel(ready) == []


def test_cancel_under_asyncio(url: str) -> None:
    async def main() -> tuple[list[str], guild.JobStatus]:
        async with guild.AsyncClient(url) as client:
            job = await client.enqueue("nobody-serves-this", 1, delay=60)
            return await client.cancel(job), await client.status(job)

    cancelled, status = asyncio.run(main())
    assert len(cancelled) == 1 and status is guild.JobStatus.CANCELLED


def test_cancel_a_running_job(url: str) -> None:
    with running_worker(url), guild.Client(url) as client:
        job = client.enqueue("sleepy", 1)
        while client.status(job) is not guild.JobStatus.IN_FLIGHT:
            client.result(job, wait=0.05)  # a pause that ends early if it finishes
        assert client.cancel(job) == [job.id]
        result = client.result(job, wait=30)
        assert result is not None and result.status is guild.JobStatus.CANCELLED
