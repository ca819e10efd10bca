"""The worker's task tree over the memory broker, in virtual time."""

from __future__ import annotations

import itertools
import math

import pytest
import structlog
import trio
import trio.testing

import guild
from guild import Job, MemoryBroker, RetryPolicy, WorkerSpec


async def _run_until(worker: guild.Worker, condition: trio.Event) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.serve)
        await condition.wait()
        worker.drain()


class TestDelivery:
    """Jobs are run once each and acked only after their handler returns."""

    async def test_every_job_runs_and_is_done(self, autojump_clock: trio.testing.MockClock) -> None:
        broker = MemoryBroker()
        seen: list[int] = []
        finished = trio.Event()

        async def handler(job: Job) -> int:
            seen.append(job.payload)
            await trio.sleep(0.01)
            if len(seen) == 100:
                finished.set()
            return job.payload * 2

        jobs = await broker.enqueue([Job(queue="q", payload=i) for i in range(100)])
        worker = guild.Worker(WorkerSpec(queue="q", handler=handler, concurrency=8), broker)
        await _run_until(worker, finished)
        assert sorted(seen) == list(range(100))
        result = await broker.get_result(jobs[7].id)
        assert result is not None and result.value == 14 and result.ok
        stats = (await broker.stats(["q"]))["q"]
        assert (stats.done, stats.ready, stats.in_flight) == (100, 0, 0)

    async def test_never_holds_more_than_capacity(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker = MemoryBroker()
        running = 0
        most = 0
        finished = trio.Event()
        count = 0

        async def handler(job: Job) -> None:
            nonlocal running, most, count
            running += 1
            most = max(most, running)
            await trio.sleep(1)
            running -= 1
            count += 1
            if count == 50:
                finished.set()

        await broker.enqueue([Job(queue="q", payload=i) for i in range(50)])
        spec = WorkerSpec(queue="q", handler=handler, concurrency=4, prefetch=2)
        worker = guild.Worker(spec, broker)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            await trio.sleep(0.5)
            stats = (await broker.stats(["q"]))["q"]
            assert stats.in_flight == 6  # concurrency + prefetch, no more
            await finished.wait()
            worker.drain()
        assert most == 4


class TestFailures:
    """A job failure is the job's problem: retry with backoff, then dead letters."""

    async def test_retries_follow_the_policy_then_dead_letter(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker = MemoryBroker()
        attempts: list[float] = []

        async def handler(job: Job) -> None:
            attempts.append(trio.current_time())
            raise ValueError("boom")

        (job,) = await broker.enqueue([Job(queue="q", payload=1, max_attempts=4)])
        policy = RetryPolicy(base=2.0, factor=3.0, jitter=0.0)
        worker = guild.Worker(WorkerSpec(queue="q", handler=handler, retry=policy), broker)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            result = await broker.get_result(job.id, wait=1000)
            worker.drain()
        assert result is not None and result.status is guild.JobStatus.DEAD
        gaps = [round(b - a, 3) for a, b in itertools.pairwise(attempts)]
        assert gaps == [2.0, 6.0, 18.0]
        letter = await broker.get_dead(job.id)
        assert letter is not None
        assert "ValueError: boom" in letter.error
        assert letter.traceback is not None and "raise ValueError" in letter.traceback

    async def test_retry_request_uses_its_delay(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker = MemoryBroker()
        times: list[float] = []

        async def handler(job: Job) -> str:
            times.append(trio.current_time())
            if len(times) == 1:
                raise guild.Retry(after=42.0)
            return "ok"

        (job,) = await broker.enqueue([Job(queue="q")])
        worker = guild.Worker(WorkerSpec(queue="q", handler=handler), broker)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            result = await broker.get_result(job.id, wait=1000)
            worker.drain()
        assert result is not None and result.value == "ok" and result.attempts == 2
        assert times[1] - times[0] == pytest.approx(42.0)

    async def test_reject_dead_letters_at_once(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker = MemoryBroker()

        async def handler(job: Job) -> None:
            raise guild.Reject("input can never work")

        (job,) = await broker.enqueue([Job(queue="q", max_attempts=5)])
        worker = guild.Worker(WorkerSpec(queue="q", handler=handler), broker)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            result = await broker.get_result(job.id, wait=100)
            worker.drain()
        assert result is not None and result.status is guild.JobStatus.DEAD
        assert result.attempts == 1
        assert result.error == "rejected: input can never work"

    async def test_timeout_cancels_the_handler_and_retries(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker = MemoryBroker()
        calls = 0

        async def handler(job: Job) -> str:
            nonlocal calls
            calls += 1
            if calls == 1:
                await trio.sleep(math.inf)
            return "second time lucky"

        (job,) = await broker.enqueue([Job(queue="q", timeout=5.0)])
        worker = guild.Worker(WorkerSpec(queue="q", handler=handler), broker)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            result = await broker.get_result(job.id, wait=1000)
            worker.drain()
        assert result is not None and result.value == "second time lucky"
        assert calls == 2

    async def test_timeout_of_last_attempt_names_the_timeout(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker = MemoryBroker()

        async def handler(job: Job) -> None:
            await trio.sleep(math.inf)

        (job,) = await broker.enqueue([Job(queue="q", timeout=3.0, max_attempts=1)])
        worker = guild.Worker(WorkerSpec(queue="q", handler=handler), broker)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            result = await broker.get_result(job.id, wait=100)
            worker.drain()
        assert result is not None and result.error is not None
        assert result.error.startswith("JobTimeout: job") and "timed out after 3s" in result.error

    async def test_undecodable_payload_goes_to_dead_letters(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker = MemoryBroker()
        ran = False

        async def handler(job: Job) -> None:
            nonlocal ran
            ran = True

        bad = guild.UndecodablePayload(raw=b"{nope", reason="payload is not valid JSON")
        (job,) = await broker.enqueue([Job(queue="q", payload=bad)])
        worker = guild.Worker(WorkerSpec(queue="q", handler=handler), broker)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            result = await broker.get_result(job.id, wait=100)
            worker.drain()
        assert not ran
        assert result is not None and result.status is guild.JobStatus.DEAD
        letter = await broker.get_dead(job.id)
        assert letter is not None and "not valid JSON" in letter.error

    async def test_dependency_streak_crashes_the_worker(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker = MemoryBroker()

        class DatabaseDown(Exception):
            pass

        async def handler(job: Job) -> None:
            raise DatabaseDown("connection refused")

        await broker.enqueue([Job(queue="q", payload=i, max_attempts=10) for i in range(10)])
        spec = WorkerSpec(
            queue="q",
            handler=handler,
            concurrency=1,
            dependency_errors=(DatabaseDown,),
            dependency_threshold=3,
        )
        worker = guild.Worker(spec, broker)
        with pytest.RaisesGroup(
            pytest.RaisesExc(guild.DependencyFailure, match="3 dependency failures in a row"),
            flatten_subgroups=True,
        ):
            await worker.serve()
        stats = (await broker.stats(["q"]))["q"]
        # Nothing is lost: the failed ones wait for a retry, the rest went back.
        assert stats.ready + stats.delayed == 10
        assert stats.in_flight == 0


class TestDrain:
    """Draining finishes running jobs within the grace and hands the rest back."""

    async def test_running_jobs_finish_and_unstarted_go_back(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker = MemoryBroker()
        started = trio.Event()
        finished: list[int] = []

        async def handler(job: Job) -> None:
            started.set()
            await trio.sleep(10)
            finished.append(job.payload)

        await broker.enqueue([Job(queue="q", payload=i) for i in range(10)])
        spec = WorkerSpec(queue="q", handler=handler, concurrency=2, graceful_timeout=60)
        worker = guild.Worker(spec, broker)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            await started.wait()
            worker.drain()
        assert sorted(finished) == [0, 1]
        stats = (await broker.stats(["q"]))["q"]
        assert (stats.done, stats.ready, stats.in_flight) == (2, 8, 0)

    async def test_jobs_past_the_grace_are_cancelled_and_handed_back(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker = MemoryBroker()
        started = trio.Event()

        async def handler(job: Job) -> None:
            started.set()
            await trio.sleep(1000)

        await broker.enqueue([Job(queue="q")])
        spec = WorkerSpec(queue="q", handler=handler, graceful_timeout=5, timeout=None)
        worker = guild.Worker(spec, broker)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            await started.wait()
            began = trio.current_time()
            worker.drain()
        assert trio.current_time() - began == pytest.approx(5, abs=1.5)
        stats = (await broker.stats(["q"]))["q"]
        assert (stats.ready, stats.in_flight) == (1, 0)
        # Handed back without spending the attempt.
        (again,) = await broker.claim("q", consumer="t", limit=1, lease=1)
        assert again.job.attempt == 1


class TestLeases:
    """The lease keeper keeps long jobs held; nothing is claimed twice meanwhile."""

    async def test_long_job_keeps_its_lease(self, autojump_clock: trio.testing.MockClock) -> None:
        broker = MemoryBroker()
        done = trio.Event()

        async def handler(job: Job) -> None:
            await trio.sleep(100)  # ten leases long
            done.set()

        (job,) = await broker.enqueue([Job(queue="q")])
        spec = WorkerSpec(queue="q", handler=handler, lease=10, timeout=None)
        worker = guild.Worker(spec, broker)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            await trio.sleep(50)
            assert await broker.claim("q", consumer="thief", limit=1, lease=1) == []
            await done.wait()
            worker.drain()
        result = await broker.get_result(job.id)
        assert result is not None and result.attempts == 1


class TestLogContext:
    """A handler's own structlog calls carry the worker and job context."""

    async def test_user_log_lines_carry_job_context(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker = MemoryBroker()
        done = trio.Event()

        async def handler(job: Job) -> None:
            structlog.get_logger().info("inside")
            done.set()

        (job,) = await broker.enqueue([Job(queue="q")])
        worker = guild.Worker(WorkerSpec(queue="q", handler=handler), broker)
        with structlog.testing.capture_logs(
            processors=[structlog.contextvars.merge_contextvars]
        ) as logs:
            await _run_until(worker, done)
        (line,) = [entry for entry in logs if entry["event"] == "inside"]
        assert line["task_id"] == job.id and line["worker"] == "q" and line["attempt"] == 1


class TestLifespan:
    """Lifespans open before the first job and close after the last, in reverse order."""

    async def test_order(self, autojump_clock: trio.testing.MockClock) -> None:
        from collections.abc import AsyncIterator
        from contextlib import asynccontextmanager

        log: list[str] = []
        app = guild.Guild("life")

        def resource(name: str) -> object:
            @asynccontextmanager
            async def factory(running: guild.Guild) -> AsyncIterator[None]:
                assert running is app
                log.append(f"open {name}")
                yield
                log.append(f"close {name}")

            return factory

        app.lifespan(resource("pool"))  # type: ignore[arg-type]
        app.lifespan(resource("client"))  # type: ignore[arg-type]

        @app.worker("q")
        async def handler(job: Job) -> None:
            log.append("job")

        broker = MemoryBroker()
        async with app.open(broker):
            job = await app.enqueue("q", None)
            await app.result(job, wait=10)
        assert log == ["open pool", "open client", "job", "close client", "close pool"]
