"""Crash windows of the Redis handoff to idle workers, with real redis-servers
and real processes: a worker killed while registered idle, a Redis restart that
forgets every registration, a handed job cancelled before its worker pops it, a
delayed job falling due while every worker idles, and two worker processes
sharing one queue. Each bound asserted here is the one docs/brokers.md states
("Handed jobs and crashes")."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

import guild
from guild.brokers.redis import RedisBroker
from tests._poll import until
from tests._redis_server import RedisServer, running_redis_server
from tests.brokers._handoff import (
    claiming,
    fields,
    idle,
    idle_count,
    kill,
    register_idle,
    soon,
    spawn,
    spawn_victim,
)

# An app's claim wait (WorkerSpec.claim_wait's default): how long a registration lasts.
_CLAIM_WAIT = 1.0


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with running_redis_server() as running:
        yield running


def _app_process(url: str, prefix: str, log: Path, *, lease: float) -> subprocess.Popen[str]:
    """A worker process on queue q (concurrency 4) that appends each payload it
    runs to ``log`` (O_APPEND: whole lines from any number of processes)."""
    return spawn(
        f"""
        import os
        import trio
        import guild
        from guild.brokers.redis import RedisBroker

        app = guild.Guild("crash")

        @app.worker("q", concurrency=4, lease={lease})
        async def record(job):
            fd = os.open({str(log)!r}, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                os.write(fd, f"{{os.getpid()}} {{job.payload}}\\n".encode())
            finally:
                os.close(fd)
            return job.payload

        async def main():
            broker = await RedisBroker.open({url!r}, prefix={prefix!r})
            async with app.open(broker):
                await trio.sleep_forever()

        trio.run(main)
        """
    )


def _runs(log: Path) -> list[tuple[str, str]]:
    """(pid, payload) per run logged."""
    if not log.exists():
        return []
    runs = []
    for line in log.read_text().splitlines():
        pid, payload = line.split()
        runs.append((pid, payload))
    return runs


class TestKilledWhileIdle:
    async def test_jobs_handed_to_a_dead_idle_worker_run_elsewhere_within_the_lease(
        self, server: RedisServer
    ) -> None:
        # The victim registers idle for a minute, then dies; its registration
        # outlives it, so jobs are handed to it. Its lease (2 s), not the
        # registration (60 s), bounds their wait: a live worker claims again
        # within its claim wait of the lease running out, and takes them back.
        broker = await RedisBroker.open(server.url, prefix="crash-idle")
        victim = spawn_victim(server.url, "crash-idle", lease=2.0)
        app = guild.Guild("crash-idle")
        done: list[str] = []

        @app.worker("q", concurrency=2)
        async def run(job: guild.Job) -> object:
            done.append(str(job.payload))
            return job.payload

        try:
            await soon(lambda: _has_idle(broker, "victim"))
            kill(victim)
            async with app.open(broker):
                # Both registered: the live one first in line (its registration
                # ends sooner), with room for its capacity; the rest of the batch
                # overflows to the dead one.
                await soon(lambda: idle_count(broker, 2))
                payloads = [f"j{n}" for n in range(12)]
                jobs = await app.enqueue_many("q", payloads, broker=broker)
                handed_to_victim = [
                    j.id for j in jobs if await fields(broker, j.id, "consumer") == ["victim"]
                ]
                # lease 2 s + the live worker's claim wait + slack for a loaded machine.
                with trio.fail_after(2.0 + _CLAIM_WAIT + 5):
                    for job in jobs:
                        result = await broker.get_result(job.id, wait=10)
                        assert result is not None and result.value == job.payload
                assert handed_to_victim  # the window under test was reached
                assert sorted(done) == sorted(payloads)  # each once
                # Whatever went to the dead worker came back as an interrupted run.
                for job_id in handed_to_victim:
                    assert await fields(broker, job_id, "attempt") == ["2"]
        finally:
            kill(victim)
            await broker.aclose()


class TestRedisRestart:
    async def test_idle_workers_register_again_after_redis_forgets_them(
        self, server: RedisServer
    ) -> None:
        # Without persistence a restart loses the registrations, the inboxes and
        # the consumer group; the worker's BLPOP loses its connection, and it
        # claims (and registers) afresh once Redis is back.
        broker = await RedisBroker.open(server.url, prefix="crash-restart")
        app = guild.Guild("crash-restart")

        @app.worker("q", concurrency=2)
        async def run(job: guild.Job) -> object:
            return job.payload

        try:
            async with app.open(broker):
                await soon(lambda: idle_count(broker, 1))
                client = await broker.redis_client()
                await client.set("crash-restart:sentinel", "1")
                await trio.to_thread.run_sync(server.stop)
                await trio.to_thread.run_sync(server.start)
                # Everything was forgotten (the worker may register again at any
                # moment after the restart, so its registration is no witness).
                assert await client.get("crash-restart:sentinel") is None
                with trio.fail_after(15):
                    await until(lambda: idle_count(broker, 1))
                    for n in range(3):
                        job = await app.enqueue("q", n, broker=broker)
                        result = await broker.get_result(job.id, wait=10)
                        assert result is not None and result.value == n
        finally:
            await broker.aclose()


class TestStopping:
    async def test_an_app_that_stops_leaves_no_registration_behind(
        self, server: RedisServer
    ) -> None:
        broker = await RedisBroker.open(server.url, prefix="crash-stop")
        app = guild.Guild("crash-stop")

        @app.worker("q", concurrency=2)
        async def run(job: guild.Job) -> object:
            return job.payload

        try:
            async with app.open(broker):
                await soon(lambda: idle_count(broker, 1))
            # Its claimer was cancelled in its BLPOP, and ended its registration
            # on the way out: a job enqueued now waits, ready, for the next worker.
            assert await idle(broker) == []
            job = await app.enqueue("q", "after", broker=broker)
            assert await fields(broker, job.id, "status") == ["ready"]
        finally:
            await broker.aclose()

    async def test_a_dropped_blpop_reply_waits_out_its_lease_then_runs_elsewhere(
        self, server: RedisServer
    ) -> None:
        # The window docs/brokers.md names: a worker cancelled just as its BLPOP
        # reply arrives drops the reply. Stood in for here by popping the inbox
        # on another connection and dropping what came. The job is in flight,
        # in no inbox: stop_claiming cannot give it back, its lease (1.5 s) does.
        broker = await RedisBroker.open(server.url, prefix="crash-inflight")
        try:
            await register_idle(broker, lease=1.5)
            [job] = await broker.enqueue([guild.Job(queue="q", payload="x")])
            inbox = "crash-inflight:q:q:inbox:w"
            assert await (await broker.redis_client()).blpop([inbox], timeout=1) is not None
            await broker.stop_claiming("q", "w")
            assert await fields(broker, job.id, "status") == ["in_flight"]
            with trio.fail_after(1.5 + 5):
                again = await broker.claim("q", consumer="other", limit=2, lease=30, wait=10)
            assert [(d.job.id, d.interrupted) for d in again] == [(job.id, True)]
        finally:
            await broker.aclose()

    async def test_a_claim_cancelled_before_its_job_arrives_gives_it_back_uncounted(
        self, server: RedisServer
    ) -> None:
        broker = await RedisBroker.open(server.url, prefix="crash-unpopped")
        try:
            await register_idle(broker)
            with trio.move_on_after(0.2):  # its BLPOP, cancelled
                await broker.claim("q", consumer="w", limit=2, lease=30, wait=60, start=1)
            # Still registered in Redis: handed, and left in the inbox.
            [job] = await broker.enqueue([guild.Job(queue="q", payload="x")])
            assert await fields(broker, job.id, "status") == ["in_flight"]
            await broker.stop_claiming("q", "w")  # as the claimer does on its way out
            assert await fields(broker, job.id, "status") == ["ready"]
            again = await broker.claim("q", consumer="other", limit=2, lease=30, wait=0)
            assert [(d.job.id, d.job.attempt, d.interrupted) for d in again] == [(job.id, 1, False)]
        finally:
            await broker.aclose()


class TestCancelHanded:
    async def test_a_handed_job_cancelled_before_it_is_popped_never_runs(
        self, server: RedisServer
    ) -> None:
        broker = await RedisBroker.open(server.url, prefix="crash-cancel")
        try:
            # Registered idle with one handler to start (the case of a worker
            # with an idle handler): a handoff starts the job.
            await register_idle(broker)
            assert await idle(broker) == ["w"]
            [job] = await broker.enqueue([guild.Job(queue="q", payload="x")])
            assert await fields(broker, job.id, "status") == ["in_flight"]
            assert await broker.cancel([job.id]) == [job.id]
            # The worker comes back to claim: it must not get the job to run.
            got = await broker.claim("q", consumer="w", limit=2, lease=30, wait=0, start=1)
            assert [d.job.id for d in got] == []
            assert await fields(broker, job.id, "status") == ["cancelled"]
            # It never ran: its handoff's attempt is taken back.
            assert await fields(broker, job.id, "attempt") == ["0"]
        finally:
            await broker.aclose()

    async def test_a_handed_job_cancelled_before_the_blpop_is_not_run(
        self, server: RedisServer
    ) -> None:
        broker = await RedisBroker.open(server.url, prefix="crash-cancel-pop")
        try:
            await register_idle(broker)
            [job] = await broker.enqueue([guild.Job(queue="q", payload="x")])
            assert await broker.cancel([job.id]) == [job.id]
            # Still registered (as this process counts it): it waits in BLPOP.
            with trio.fail_after(5):
                got = await broker.claim("q", consumer="w", limit=2, lease=30, wait=0.5, start=1)
            assert [d.job.id for d in got] == []
            assert await fields(broker, job.id, "status") == ["cancelled"]
        finally:
            await broker.aclose()


class TestPriorities:
    async def test_high_handed_first_then_normal_backlog_in_order(
        self, server: RedisServer
    ) -> None:
        broker = await RedisBroker.open(server.url, prefix="crash-prio")
        try:
            high = guild.Job(queue="q", payload="high", priority=guild.Priority.HIGH)
            normals = [guild.Job(queue="q", payload=f"n{i}") for i in range(3)]
            async with claiming(broker, consumer="w", limit=1) as got:
                await broker.enqueue([high])
                await broker.enqueue(normals)
            assert [d.job.id for d in got] == [high.id]
            rest = await broker.claim("q", consumer="w", limit=5, lease=30)
            assert [d.job.id for d in rest] == [j.id for j in normals]
        finally:
            await broker.aclose()


class TestDelayedWhileIdle:
    async def test_a_delayed_job_starts_about_when_due_with_every_worker_idle(
        self, server: RedisServer
    ) -> None:
        # Nobody enqueues anything else: the only claims are the idle worker's
        # own, and its registration (claim_wait) is what brings it back to
        # promote the job. Bound: due (3 s) + claim_wait + slack.
        broker = await RedisBroker.open(server.url, prefix="crash-delay")
        app = guild.Guild("crash-delay")
        started: list[float] = []

        @app.worker("q", concurrency=2)
        async def run(job: guild.Job) -> object:
            started.append(trio.current_time())
            return job.payload

        try:
            async with app.open(broker):
                await soon(lambda: idle_count(broker, 1))
                enqueued = trio.current_time()
                job = await app.enqueue("q", "later", delay=3.0, broker=broker)
                with trio.fail_after(3.0 + _CLAIM_WAIT + 5):
                    result = await broker.get_result(job.id, wait=20)
                assert result is not None and result.value == "later"
                assert started[0] - enqueued >= 3.0  # not before it was due
        finally:
            await broker.aclose()


class TestTwoProcesses:
    async def test_a_thousand_jobs_one_by_one_each_run_once_by_both(
        self, server: RedisServer, tmp_path: Path
    ) -> None:
        broker = await RedisBroker.open(server.url, prefix="crash-two")
        log = tmp_path / "runs.log"
        workers = [_app_process(server.url, "crash-two", log, lease=30.0) for _ in range(2)]
        app = guild.Guild("crash-two-producer")
        try:
            await soon(lambda: idle_count(broker, 2), 20)
            with trio.fail_after(25):
                for n in range(1000):
                    await app.enqueue("q", n, broker=broker)
                await until(lambda: len(_runs(log)) >= 1000)
            await trio.sleep(0.5)  # time for a duplicate to show, if any
            runs = _runs(log)
            assert sorted(int(n) for _, n in runs) == list(range(1000))
            pids = {pid for pid, _ in runs}
            assert pids == {str(w.pid) for w in workers}
        finally:
            for worker in workers:
                kill(worker)
            await broker.aclose()


async def _has_idle(broker: RedisBroker, consumer: str) -> bool:
    return consumer in await idle(broker)
