"""A real redis-server that is up but refuses writes: ``maxmemory`` reached under
``noeviction`` answers every write with ``OOM command not allowed``.

* A producer's enqueue fails with :class:`guild.BrokerUnavailable` naming the
  refusal, and stores nothing of its batch.
* A worker waits the refusal out as it waits out an unreachable server: no crash,
  no restart, and every job runs once when Redis takes writes again.
"""

from __future__ import annotations

import collections
import socket
from collections.abc import Iterator

import pytest
import trio

import guild
from tests._redis_server import RedisServer, running_redis_server

from .._state_log import StateLog
from ..observability.helpers import eventually
from ._support import QUEUE, check_doubled, enqueue_batched, queue_stats, wait_for_done


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with running_redis_server() as server:
        yield server


def _config_set(server: RedisServer, name: str, value: str) -> None:
    # Over a socket of its own, as an operator would: the broker's connections are
    # the ones under test.
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(f"CONFIG SET {name} {value}\r\n".encode())
        assert sock.recv(64) == b"+OK\r\n"


def _full(server: RedisServer) -> None:
    """Every write is refused: a 1-byte limit is below what any server uses."""
    _config_set(server, "maxmemory-policy", "noeviction")
    _config_set(server, "maxmemory", "1")


def _roomy(server: RedisServer) -> None:
    _config_set(server, "maxmemory", "0")


async def test_an_enqueue_into_a_full_redis_is_refused_whole(redis_server: RedisServer) -> None:
    with trio.fail_after(30):
        async with guild.open_broker(redis_server.url) as broker:
            await enqueue_batched(broker, [0])
            _full(redis_server)
            with pytest.raises(guild.BrokerUnavailable) as refused:
                await enqueue_batched(broker, [1, 2, 3])
            assert "redis refuses enqueue: OOM command not allowed" in str(refused.value)
            # Reads still work, and show that nothing of the refused batch went in.
            assert (await queue_stats(broker)).ready == 1
            _roomy(redis_server)
            await enqueue_batched(broker, [1, 2, 3])
            assert (await queue_stats(broker)).ready == 4


async def test_a_worker_waits_out_a_full_redis_and_loses_nothing(
    redis_server: RedisServer,
) -> None:
    log = StateLog()
    app = guild.Guild(
        "refused",
        instruments=[log],
        supervision=guild.SupervisorOptions(
            max_restarts=1, period=600.0, backoff=guild.Backoff(initial=0.05, maximum=0.05)
        ),
    )
    runs: collections.Counter[int] = collections.Counter()
    release = trio.Event()

    @app.worker(QUEUE, concurrency=4, lease=120.0, timeout=None)
    async def work(job: guild.Job) -> object:
        runs[job.payload] += 1
        if job.payload < 4:
            await release.wait()
        return job.payload * 2

    with trio.fail_after(60):
        async with guild.open_broker(redis_server.url) as direct:
            jobs = await enqueue_batched(direct, list(range(20)))
            async with app.open(redis_server.url):
                await eventually(lambda: sum(runs.values()) == 4)
                # Four jobs finish while Redis refuses writes: their acks must
                # wait, and claims of the other sixteen must wait too.
                _full(redis_server)
                release.set()
                await eventually(lambda: app.workers()[QUEUE].broker_error is not None)
                error = app.workers()[QUEUE].broker_error
                assert error is not None and "OOM command not allowed" in str(error)
                await trio.sleep(1.0)
                assert sum(runs.values()) == 4, "a job was claimed while Redis refused writes"
                _roomy(redis_server)
                await wait_for_done(direct, 20)
                await eventually(lambda: app.workers()[QUEUE].broker_error is None)
            await check_doubled(direct, jobs)
    assert runs == collections.Counter(range(20)), "a job ran twice or never"
    assert log.count("crashed") == 0, log.errors()
    assert log.count("gave_up") == 0


async def test_a_broker_opens_on_a_full_redis_that_it_knew(redis_server: RedisServer) -> None:
    # Workers must be able to start against a full Redis: draining is what frees it.
    with trio.fail_after(30):
        async with guild.open_broker(redis_server.url) as broker:
            await enqueue_batched(broker, [0, 1])
        _full(redis_server)
        async with guild.open_broker(redis_server.url) as broker:
            assert (await queue_stats(broker)).ready == 2
