"""``RedisBroker.enqueue_and_wait``: the enqueue, the await script and the BLPOP
sent as one pipeline, and what happens when the enqueue does not store the job
(a refusal, a key another job holds) or the caller stops waiting."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

import guild
from guild.brokers import encode_result
from guild.brokers.redis import RedisBroker
from tests._redis_server import RedisServer, running_redis_server


@pytest.fixture
def server() -> Iterator[RedisServer]:
    # One per test: some change its config (maxmemory) or flush its scripts.
    with running_redis_server() as running:
        yield running


def _command(server: RedisServer, *words: str) -> bytes:
    # Over a socket of its own, as an operator would: the broker's are under test.
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall((" ".join(words) + "\r\n").encode())
        return sock.recv(65536)


@asynccontextmanager
async def _broker(server: RedisServer) -> AsyncIterator[RedisBroker]:
    broker = await RedisBroker.open(server.url, prefix="ew")
    try:
        yield broker
    finally:
        await broker.aclose()


async def _ack_next(broker: RedisBroker, queue: str = "q") -> None:
    """Stand in for a worker: take the next job of ``queue``, answer payload * 2."""
    (delivery,) = await broker.claim(queue, consumer="c", limit=1, lease=30, wait=20)
    await broker.ack([(delivery, encode_result(delivery.job.payload * 2))])


async def test_the_result_comes_back_from_one_pipeline(server: RedisServer) -> None:
    sent: list[list[str]] = []
    with trio.fail_after(30):
        async with _broker(server) as caller, _broker(server) as worker:
            # Loads the enqueue script and reads the canary shares (once a second).
            await caller.enqueue([guild.Job(queue="warm-up")])
            wire: Any = caller._wire
            execute = wire.execute

            async def spy(*commands: Any, blocks: float = 0.0) -> list[Any]:
                sent.append([str(command[0]) for command in commands])
                return await execute(*commands, blocks=blocks)

            wire.execute = spy
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_ack_next, worker)
                job = guild.Job(queue="q", payload=21)
                stored, result = await caller.enqueue_and_wait(job, wait=20)
    assert stored.id == job.id
    assert result is not None and (result.job_id, result.value) == (job.id, 42)
    # One round trip: the enqueue, the await script and the BLPOP, in one write.
    assert sent == [["EVALSHA", "EVAL", "BLPOP"]]


async def test_a_key_held_by_a_running_job_waits_for_that_job(server: RedisServer) -> None:
    with trio.fail_after(30):
        async with _broker(server) as broker:
            (holder,) = await broker.enqueue([guild.Job(queue="q", payload=5, key="k")])
            (taken,) = await broker.claim("q", consumer="c", limit=1, lease=30)
            got: list[tuple[guild.Job, guild.Result | None]] = []

            async def waiter() -> None:
                duplicate = guild.Job(queue="q", payload=99, key="k")
                got.append(await broker.enqueue_and_wait(duplicate, wait=20))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiter)
                await trio.sleep(0.3)
                assert got == []  # still waiting: the holder has not finished
                await broker.ack([(taken, encode_result("from the holder"))])
    ((job, result),) = got
    assert job.id == holder.id
    assert result is not None and (result.job_id, result.value) == (holder.id, "from the holder")


async def test_a_refused_enqueue_raises_at_once_not_after_the_wait(server: RedisServer) -> None:
    async with _broker(server) as broker:
        await broker.enqueue([guild.Job(queue="q", payload=0)])  # the queue's stream exists
        _command(server, "CONFIG", "SET", "maxmemory-policy", "noeviction")
        _command(server, "CONFIG", "SET", "maxmemory", "1")
        with trio.fail_after(5), pytest.raises(guild.BrokerUnavailable) as refused:
            await broker.enqueue_and_wait(guild.Job(queue="q", payload=1), wait=60)
        assert "OOM command not allowed" in str(refused.value)
        _command(server, "CONFIG", "SET", "maxmemory", "0")
        assert (await broker.stats(["q"]))["q"].ready == 1
        await broker.claim("q", consumer="other", limit=1, lease=30)  # job 0, out of the way
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_ack_next, broker)
                _, result = await broker.enqueue_and_wait(guild.Job(queue="q", payload=4), wait=20)
        assert result is not None and result.value == 8


async def test_an_enqueue_failing_in_its_script_raises_at_once(server: RedisServer) -> None:
    async with _broker(server) as broker:
        # The set of queues written over with a string: the script's SADD fails.
        _command(server, "SET", "ew:queues", "not-a-set")
        with trio.fail_after(5), pytest.raises(guild.BrokerError) as refused:
            await broker.enqueue_and_wait(guild.Job(queue="q", payload=1), wait=60)
        assert "WRONGTYPE" in str(refused.value) or "ew:queues" in str(refused.value)


async def test_an_enqueue_failing_after_the_jobs_hash_raises_at_once_and_leaves_nothing(
    server: RedisServer,
) -> None:
    async with _broker(server) as broker:
        await broker.enqueue([guild.Job(queue="q", payload=0)])
        # The queue's stream written over with a string: the script has written
        # the job's hash (and its key) when its XADD fails.
        _command(server, "DEL", "ew:q:q:ready")
        _command(server, "SET", "ew:q:q:ready", "not-a-stream")
        before = _command(server, "KEYS", "ew:job:*")
        job = guild.Job(queue="q", payload=1, key="once")
        with trio.fail_after(5), pytest.raises(guild.BrokerDataError) as refused:
            await broker.enqueue_and_wait(job, wait=60)
        assert str(refused.value) == (
            "redis: enqueue to 'q': the key ew:q:q:ready holds a string, not a stream"
            " (another program's key under guild's prefix?)"
        )
        # Nothing of it is left: no job nothing claims, no key naming it.
        assert _command(server, "KEYS", "ew:job:*") == before
        assert _command(server, "EXISTS", "ew:key:q:once") == b":0\r\n"
        _command(server, "DEL", "ew:q:q:ready")
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_ack_next, broker)
                stored, result = await broker.enqueue_and_wait(
                    guild.Job(queue="q", payload=4, key="once"), wait=20
                )
        assert stored.payload == 4 and result is not None and result.value == 8


async def test_the_wait_ends_with_none_and_the_job_stays_ready(server: RedisServer) -> None:
    async with _broker(server) as broker:
        started = trio.current_time()
        with trio.fail_after(10):
            job, result = await broker.enqueue_and_wait(guild.Job(queue="idle"), wait=0.5)
        assert result is None and trio.current_time() - started >= 0.45
        assert (await broker.stats(["idle"]))["idle"].ready == 1
        assert await broker.get_result(job.id) is None


async def test_a_flushed_script_cache_still_answers(server: RedisServer) -> None:
    with trio.fail_after(30):
        async with _broker(server) as broker:
            _command(server, "SCRIPT", "FLUSH")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_ack_next, broker)
                _, result = await broker.enqueue_and_wait(guild.Job(queue="q", payload=3), wait=20)
    assert result is not None and result.value == 6


async def test_a_caller_cancelled_mid_wait_leaves_the_broker_usable(server: RedisServer) -> None:
    with trio.fail_after(30):
        async with _broker(server) as broker:
            with trio.move_on_after(0.3) as waited:
                await broker.enqueue_and_wait(guild.Job(queue="q", payload=1), wait=60)
            assert waited.cancelled_caught
            # The cancelled job was stored: a worker takes it, then the next one.
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_ack_next, broker)
                nursery.start_soon(_ack_next, broker)
                _, result = await broker.enqueue_and_wait(guild.Job(queue="q", payload=2), wait=20)
    assert result is not None and result.value == 4


@pytest.mark.parametrize("url_of", ["sqlite", "redis"])
async def test_the_app_and_clients_return_the_result(
    server: RedisServer, tmp_path: Any, url_of: str
) -> None:
    url = server.url if url_of == "redis" else f"sqlite:{tmp_path / 'jobs.db'}"
    app = guild.Guild("ew")

    @app.worker("squares")
    async def square(job: guild.Job) -> int:
        value: int = job.payload
        return value * value

    with trio.fail_after(60):
        async with guild.open_broker(url) as broker, trio.open_nursery() as nursery:
            await nursery.start(app.run, broker)
            result = await app.enqueue_and_wait("squares", 7, wait=20, broker=broker)
            assert result is not None and result.value == 49
            async with guild.AsyncClient(url) as client:
                result = await client.enqueue_and_wait("squares", 8, wait=20, key="eight")
                again = await client.enqueue_and_wait("squares", 0, wait=20, key="eight")
            assert result is not None and result.value == 64
            assert again is not None and (again.job_id, again.value) == (result.job_id, 64)
            with guild.Client(url) as sync_client:
                found = await trio.to_thread.run_sync(
                    lambda: sync_client.enqueue_and_wait("squares", 9, wait=20)
                )
            assert found is not None and found.value == 81
            with pytest.raises(ValueError, match="wait"):
                await app.enqueue_and_wait("squares", 1, wait=-1, broker=broker)
            nursery.cancel_scope.cancel()
