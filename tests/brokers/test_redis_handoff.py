"""The Redis broker's handoff to idle workers: a claim that leaves the queue dry
registers its consumer as idle, and a script that makes a job ready claims it for
that consumer and pushes it to the consumer's inbox (the BLPOP the worker waits
in). What is handed is held by its lease, so a worker killed before or after it
pops a job loses nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio

import guild
from guild.brokers import encode_result
from guild.brokers.redis import RedisBroker, _unpack
from tests._redis_server import RedisServer, running_redis_server
from tests.brokers._handoff import (
    claiming,
    fields,
    idle,
    idle_count,
    kill,
    register_idle,
    soon,
    spawn_victim,
)


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with running_redis_server() as running:
        yield running


class TestHandoff:
    async def test_an_idle_claim_wakes_with_the_job_itself(self, server: RedisServer) -> None:
        broker = await RedisBroker.open(server.url, prefix="handoff-wake")
        try:
            async with claiming(broker, consumer="w", limit=4) as got:
                assert await idle(broker) == ["w"]
                [job] = await broker.enqueue(
                    [guild.Job(queue="q", payload={"n": 1, "s": "é:-\x00"})]
                )
            assert [(d.job.id, d.job.payload, d.job.attempt, d.started) for d in got] == [
                (job.id, {"n": 1, "s": "é:-\x00"}, 1, True)
            ]
            # Claimed in the enqueue's own script: in flight under a lease.
            assert await fields(broker, job.id, "status", "consumer", "attempt") == [
                "in_flight",
                "w",
                "1",
            ]
            stats = (await broker.stats(["q"]))["q"]
            assert (stats.ready, stats.in_flight) == (0, 1)
            await broker.ack([(got[0], encode_result("ok"))])
            result = await broker.get_result(job.id, wait=1)
            assert result is not None and result.value == "ok"
        finally:
            await broker.aclose()

    async def test_a_batch_is_handed_in_claim_order(self, server: RedisServer) -> None:
        broker = await RedisBroker.open(server.url, prefix="handoff-order")
        try:
            low = guild.Job(queue="q", payload=1, priority=guild.Priority.LOW)
            normal = guild.Job(queue="q", payload=2)
            high = guild.Job(queue="q", payload=3, priority=guild.Priority.HIGH)
            extra = guild.Job(queue="q", payload=4)
            async with claiming(broker, consumer="w", limit=3) as got:
                await broker.enqueue([low, normal, high, extra])
            # One handoff of as many as it had room for, in claim order: high
            # first, then normal ones oldest first; the rest stays ready.
            assert [d.job.id for d in got] == [high.id, normal.id, extra.id]
            stats = (await broker.stats(["q"]))["q"]
            assert (stats.ready, stats.in_flight) == (1, 3)
            assert await idle(broker) == []
        finally:
            await broker.aclose()

    async def test_a_worker_killed_before_it_pops_loses_nothing(self, server: RedisServer) -> None:
        broker = await RedisBroker.open(server.url, prefix="handoff-dead-idle")
        victim = spawn_victim(server.url, "handoff-dead-idle", lease=1.0)
        try:
            await soon(lambda: idle_count(broker, 1))
            kill(victim)
            # Its registration outlives it: the job is handed to it, claimed under
            # its lease, and never popped.
            [job] = await broker.enqueue([guild.Job(queue="q", payload="x")])
            assert await fields(broker, job.id, "status", "consumer") == ["in_flight", "victim"]
            # Once the lease runs out, the next claim takes it back: run alone, as
            # a job whose process died.
            got = await broker.claim("q", consumer="rescuer", limit=4, lease=30, wait=10)
            assert [(d.job.id, d.interrupted) for d in got] == [(job.id, True)]
            [started] = await broker.start(got)
            assert started.job.attempt == 2
        finally:
            kill(victim)
            await broker.aclose()

    async def test_a_worker_killed_after_it_pops_loses_nothing(self, server: RedisServer) -> None:
        broker = await RedisBroker.open(server.url, prefix="handoff-dead-popped")
        victim = spawn_victim(server.url, "handoff-dead-popped", lease=1.0)
        try:
            await soon(lambda: idle_count(broker, 1))
            [job] = await broker.enqueue([guild.Job(queue="q", payload="x")])
            assert victim.stdout is not None
            line = ""
            while not line.startswith("got"):  # (its log lines come first)
                line = await trio.to_thread.run_sync(victim.stdout.readline)
            assert line.split() == ["got", job.id]
            kill(victim)
            got = await broker.claim("q", consumer="rescuer", limit=4, lease=30, wait=10)
            assert [(d.job.id, d.interrupted) for d in got] == [(job.id, True)]
        finally:
            kill(victim)
            await broker.aclose()

    async def test_release_consumers_gives_back_what_a_dead_idle_worker_was_handed(
        self, server: RedisServer
    ) -> None:
        broker = await RedisBroker.open(server.url, prefix="handoff-release")
        victim = spawn_victim(server.url, "handoff-release", lease=60.0)
        try:
            await soon(lambda: idle_count(broker, 1))
            kill(victim)
            [job] = await broker.enqueue([guild.Job(queue="q", payload="x")])
            assert await fields(broker, job.id, "consumer") == ["victim"]
            # What a supervisor does for a killed child: its run is not counted.
            assert await broker.release_consumers("vic") == 1
            assert await idle(broker) == []
            got = await broker.claim("q", consumer="rescuer", limit=4, lease=30, wait=0)
            assert [(d.job.id, d.job.attempt, d.interrupted) for d in got] == [(job.id, 1, False)]
        finally:
            kill(victim)
            await broker.aclose()

    async def test_stop_claiming_gives_back_what_was_not_taken(self, server: RedisServer) -> None:
        broker = await RedisBroker.open(server.url, prefix="handoff-stop")
        try:
            assert await broker.claim("q", consumer="w", limit=2, lease=30, wait=0.0) == []
            assert await idle(broker) == []  # wait=0 registers nobody
            # A claim that may wait registers; cancelled, it leaves that behind.
            await register_idle(broker, start=None, wait_for=0.5)
            assert await idle(broker) == ["w"]
            [job] = await broker.enqueue([guild.Job(queue="q", payload="x")])
            assert await fields(broker, job.id, "status", "consumer") == ["in_flight", "w"]
            await broker.stop_claiming("q", "w")
            assert await idle(broker) == []
            assert await fields(broker, job.id, "status", "attempt") == ["ready", "0"]
            got = await broker.claim("q", consumer="other", limit=2, lease=30, wait=0)
            assert [(d.job.id, d.job.attempt) for d in got] == [(job.id, 1)]
        finally:
            await broker.aclose()

    async def test_a_worker_round_trip_takes_the_handoff_path(self, server: RedisServer) -> None:
        broker = await RedisBroker.open(server.url, prefix="handoff-app")
        app = guild.Guild("handoff")

        @app.worker("q", concurrency=2)
        async def double(job: guild.Job) -> object:
            assert isinstance(job.payload, int)
            return job.payload * 2

        try:
            async with app.open(broker):
                await soon(lambda: idle_count(broker, 1))
                for n in range(5):
                    job = await app.enqueue("q", n, broker=broker)
                    result = await broker.get_result(job.id, wait=5)
                    assert result is not None and result.value == n * 2
        finally:
            await broker.aclose()


class TestInboxElement:
    def test_fields_are_length_prefixed_and_binary_safe(self) -> None:
        # As the Lua's pack writes it: lease expiry, then fields; '-' is missing.
        element = b"4:12.52:ab-3:\x00:-0:"
        assert _unpack(element) == (12.5, [b"ab", None, b"\x00:-", b""])


class TestWorkerRegistration:
    async def test_a_worker_that_stops_claiming_is_handed_nothing(
        self, server: RedisServer
    ) -> None:
        broker = await RedisBroker.open(server.url, prefix="handoff-full")
        app = guild.Guild("handoff-full")
        release = trio.Event()
        running: list[object] = []

        # Capacity 8; it claims again only while at least 2 (a quarter) are free.
        @app.worker("q", concurrency=4, prefetch=4)
        async def block(job: guild.Job) -> object:
            running.append(job.payload)
            await release.wait()
            return job.payload

        try:
            async with app.open(broker):
                await soon(lambda: idle_count(broker, 1))
                await app.enqueue_many("q", list(range(7)), broker=broker)
                await soon(lambda: len(running) == 4)
                # Handed 7 of its 8: with 1 free it stops claiming, and says so,
                # though its registration had room for one more.
                await soon(lambda: _nobody_idle(broker))
                last = await app.enqueue("q", 7, broker=broker)
                assert await fields(broker, last.id, "status") == ["ready"]
                release.set()
                result = await broker.get_result(last.id, wait=5)
                assert result is not None and result.value == 7
        finally:
            await broker.aclose()

    async def test_a_retry_made_ready_now_is_handed_too(self, server: RedisServer) -> None:
        broker = await RedisBroker.open(server.url, prefix="handoff-retry")
        try:
            [job] = await broker.enqueue([guild.Job(queue="q", payload="x")])
            [first] = await broker.claim("q", consumer="a", limit=1, lease=30)
            async with claiming(broker, consumer="b", limit=2) as got:
                await broker.retry(first, at=broker.now(), error="again")
            assert [(d.job.id, d.job.attempt) for d in got] == [(job.id, 2)]
        finally:
            await broker.aclose()


async def _nobody_idle(broker: RedisBroker) -> bool:
    return not await idle(broker)
