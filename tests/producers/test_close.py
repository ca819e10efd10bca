"""Closing: context managers, idempotence, no thread left, BrokerClosed afterwards."""

from __future__ import annotations

import asyncio
import threading

import pytest

import guild
from tests._redis_server import free_port


def client_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("guild-client")]


def test_with_block_closes_and_leaves_no_thread(url: str) -> None:
    with guild.Client(url) as client:
        assert len(client_threads()) == 1
        client.enqueue("q", 1)
    assert client_threads() == []
    with pytest.raises(guild.BrokerClosed):
        client.enqueue("q", 1)
    with pytest.raises(guild.BrokerClosed):
        client.status("any")
    client.close()  # idempotent
    assert client_threads() == []


def test_a_call_in_flight_when_the_client_closes_gets_broker_closed(sqlite_url: str) -> None:
    client = guild.Client(sqlite_url)
    job = client.enqueue("nobody-serves-this", 1)
    outcome: list[BaseException | object] = []
    waiting = threading.Event()

    def wait_for_result() -> None:
        waiting.set()
        try:
            outcome.append(client.result(job, wait=3600))
        except BaseException as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=wait_for_result)
    waiter.start()
    waiting.wait()
    # The waiter may not have submitted yet: either way it must end with BrokerClosed.
    client.close()
    waiter.join(timeout=30)
    assert not waiter.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], guild.BrokerClosed), outcome
    assert client_threads() == []


def test_asyncio_async_with_closes_and_leaves_no_thread(url: str) -> None:
    async def main() -> guild.AsyncClient:
        async with guild.AsyncClient(url) as client:
            assert len(client_threads()) == 1
            await client.enqueue("q", 1)
        return client

    client = asyncio.run(main())
    assert client_threads() == []

    async def after() -> None:
        await client.enqueue("q", 1)

    with pytest.raises(guild.BrokerClosed):
        asyncio.run(after())


@pytest.mark.parametrize("url", ["memory://", "memory://x"])
def test_memory_is_refused_with_a_typed_error(url: str) -> None:
    with pytest.raises(guild.UnknownBrokerURL, match="memory:// lives inside one process"):
        guild.Client(url)
    with pytest.raises(guild.UnknownBrokerURL, match="memory:// lives inside one process"):
        guild.AsyncClient(url)
    assert client_threads() == []


def test_a_malformed_url_is_refused() -> None:
    with pytest.raises(guild.UnknownBrokerURL, match="unknown scheme"):
        guild.Client("postgres://db")


def test_an_unreachable_redis_is_broker_unavailable_and_no_thread_stays() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(guild.BrokerUnavailable):
        guild.Client(url)
    assert client_threads() == []

    async def main() -> None:
        async with guild.AsyncClient(url):
            pass

    with pytest.raises(guild.BrokerUnavailable):
        asyncio.run(main())
    assert client_threads() == []


def test_a_missing_sqlite_directory_is_refused(tmp_path: object) -> None:
    with pytest.raises(guild.UnknownBrokerURL, match="does not exist"):
        guild.Client(f"sqlite:///{tmp_path}/no/such/dir/jobs.db")


def test_bad_arguments_are_refused_before_anything_is_stored(sqlite_url: str) -> None:
    with guild.Client(sqlite_url) as client:
        with pytest.raises(guild.PayloadEncodeError):
            client.enqueue_many("q", [1, {"bad": {1, 2}}])
        with pytest.raises(guild.InvalidQueueName):
            client.enqueue("", 1)
        with pytest.raises(ValueError, match="delay must be a finite number"):
            client.enqueue("q", 1, delay=float("nan"))
        with pytest.raises(ValueError, match="wait must be a finite number"):
            client.result("x", wait=-1)
    from ._stats import queue_stats

    assert queue_stats(sqlite_url, "q").ready == 0
