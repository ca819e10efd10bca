"""The worker's task tree over the memory broker, in virtual time (and SQLite where said)."""

from __future__ import annotations

import datetime
import itertools
import math
from pathlib import Path

import pytest
import structlog
import trio
import trio.testing

import guild
from guild import Job, MemoryBroker, RetryPolicy, WorkerSpec
from guild.brokers.sqlite import SqliteBroker
from guild.observability import Instrument, Instruments, JobFinished
from guild.observability._events import SomeJobsInstrument

from .._serving import serve_until


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
        await serve_until(worker, finished)
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

    async def test_a_job_is_never_cut_off_before_its_timeout(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        # Quick jobs, one after another on one handler task, then one that runs
        # on: it gets its whole 10 s, and at most 0.1% (10 ms) more, however the
        # handler's deadline was left by the jobs before it.
        broker = MemoryBroker()
        spans: list[tuple[float, float]] = []

        async def handler(job: Job) -> None:
            began = trio.current_time()
            try:
                await trio.sleep(0.0004 if job.payload != "long" else math.inf)
            finally:
                spans.append((began, trio.current_time()))

        payloads: list[object] = [*range(40), "long"]
        jobs = []
        for payload in payloads:
            (job,) = await broker.enqueue([Job(queue="q", payload=payload, max_attempts=1)])
            jobs.append(job)
        worker = guild.Worker(
            WorkerSpec(queue="q", handler=handler, concurrency=1, timeout=10.0), broker
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            result = await broker.get_result(jobs[-1].id, wait=100)
            worker.drain()
        assert result is not None and result.error is not None and "timed out" in result.error
        began, ended = spans[-1]
        assert 10.0 <= ended - began <= 10.0 + 0.010

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

    @pytest.mark.parametrize(
        ("raw", "reason"),
        [
            (b"{nope", "payload is not valid JSON"),
            (b"\xff\xfe", "payload is not valid JSON"),
            ("[" * 100_000 + "]" * 100_000, "(nested too deeply to decode)"),
        ],
    )
    async def test_undecodable_payload_goes_to_dead_letters(
        self, autojump_clock: trio.testing.MockClock, raw: str | bytes, reason: str
    ) -> None:
        broker = MemoryBroker()
        ran = False

        async def handler(job: Job) -> None:
            nonlocal ran
            ran = True

        # Stored as a corrupt row would be: the broker reads it back as it reads any row.
        fields: dict[str, str | bytes] = {
            "id": "j1",
            "queue": "q",
            "payload": raw,
            "attempt": "0",
            "max_attempts": "3",
            "enqueued_at": "1.0",
        }
        assert await broker.store_raw_for_test("q", fields)
        worker = guild.Worker(WorkerSpec(queue="q", handler=handler), broker)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            result = await broker.get_result("j1", wait=100)
            worker.drain()
        assert not ran
        assert result is not None and result.status is guild.JobStatus.DEAD
        letter = await broker.get_dead("j1")
        assert letter is not None and reason in letter.error
        assert letter.error.startswith("rejected: job j1: payload is not valid JSON")

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
            await serve_until(worker, done)
        (line,) = [entry for entry in logs if entry["event"] == "inside"]
        assert line["task_id"] == job.id and line["worker"] == "q" and line["attempt"] == 1

    async def test_each_job_on_one_handler_carries_its_own_context(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker = MemoryBroker()
        done = trio.Event()
        count = itertools.count(1)

        async def handler(job: Job) -> None:
            structlog.get_logger().info("inside", payload=job.payload)
            if next(count) == 3:
                done.set()

        jobs = await broker.enqueue(
            [Job(queue="q", payload=1), Job(queue="q", payload=2, trace_id="t-2")]
        )
        jobs += await broker.enqueue([Job(queue="q", payload=3)])
        worker = guild.Worker(WorkerSpec(queue="q", handler=handler, concurrency=1), broker)
        with structlog.testing.capture_logs(
            processors=[structlog.contextvars.merge_contextvars]
        ) as logs:
            await serve_until(worker, done)
        lines = [entry for entry in logs if entry["event"] == "inside"]
        assert [(e["payload"], e["task_id"], e["trace_id"]) for e in lines] == [
            (1, jobs[0].id, jobs[0].id),
            (2, jobs[1].id, "t-2"),
            (3, jobs[2].id, jobs[2].id),
        ]
        assert all(e["worker"] == "q" and e["attempt"] == 1 for e in lines)


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


class TestUnencodableResults:
    """A result JSON cannot encode fails that job's attempt, in its own task: the
    acker, the job's batch-mates and the worker carry on (real SQLite file)."""

    async def test_only_the_bad_results_fail(self, tmp_path: Path) -> None:
        broker = await SqliteBroker.open(tmp_path / "jobs.db")
        at = datetime.datetime(2026, 1, 2, 3, 4, 5)
        returns: dict[str, object] = {
            "good-a": {"n": 1},
            "datetime": at,
            "good-b": [1, "two"],
            "bytes": b"\x00raw",
            "set": {1, 2},
            "nan": float("nan"),
            "nested": [0, 1, {"rows": [{"at": at}]}],
            "good-c": None,
            "huge": "x" * (16 * 1024 * 1024 - 1),  # 2 quotes: one character over
        }
        # Written out, not computed by guild: what each dead letter must say.
        expected_errors = {
            "huge": "ResultEncodeError: result is 16,777,217 characters of JSON,"
            " over the limit of 16,777,216",
            "datetime": "ResultEncodeError: result is a datetime, which JSON cannot encode",
            "bytes": "ResultEncodeError: result is bytes, which JSON cannot encode",
            "set": "ResultEncodeError: result is a set, which JSON cannot encode",
            "nan": "ResultEncodeError: result is float('nan'); JSON has no NaN or Infinity",
            "nested": "ResultEncodeError: result[2]['rows'][0]['at'] is a datetime,"
            " which JSON cannot encode",
        }
        calls: dict[str, int] = {}

        async def handler(job: Job) -> object:
            calls[job.payload] = calls.get(job.payload, 0) + 1
            return returns[job.payload]

        try:
            jobs = await broker.enqueue(
                [Job(queue="q", payload=name, max_attempts=1) for name in returns]
            )
            # Concurrency above the job count: every job finishes in one scheduling
            # round, so the good and the bad share an ack batch.
            spec = WorkerSpec(queue="q", handler=handler, concurrency=16)
            worker = guild.Worker(spec, broker)
            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    await nursery.start(worker.serve)
                    results = {
                        job.payload: await broker.get_result(job.id, wait=20) for job in jobs
                    }
                    # Still serving: a job enqueued now is run and done.
                    (late,) = await broker.enqueue([Job(queue="q", payload="good-a")])
                    after = await broker.get_result(late.id, wait=20)
                    worker.drain()
            assert after is not None and after.ok and after.value == {"n": 1}
            for name, value in [("good-a", {"n": 1}), ("good-b", [1, "two"]), ("good-c", None)]:
                result = results[name]
                assert result is not None and result.ok and result.value == value, name
            for name, error in expected_errors.items():
                result = results[name]
                assert result is not None and result.status is guild.JobStatus.DEAD, name
                letter = await broker.get_dead(next(j.id for j in jobs if j.payload == name))
                assert letter is not None and letter.error.startswith(error), letter
            # Each ran once (max_attempts=1) and no good job ran again for its batch-mates.
            assert calls == {name: 2 if name == "good-a" else 1 for name in returns}
            stats = (await broker.stats(["q"]))["q"]
            assert (stats.done, stats.dead, stats.ready, stats.in_flight) == (4, 6, 0, 0)
        finally:
            await broker.aclose()

    async def test_a_bad_result_is_retried_by_policy(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker = MemoryBroker()
        attempts: list[int] = []
        done = trio.Event()

        async def handler(job: Job) -> object:
            attempts.append(job.attempt)
            if job.attempt < 3:
                return {"when": datetime.date(2026, 1, 1)}
            done.set()
            return "fine"

        (job,) = await broker.enqueue([Job(queue="q", payload=None, max_attempts=3)])
        spec = WorkerSpec(queue="q", handler=handler, retry=RetryPolicy(base=1.0, jitter=0.0))
        await serve_until(guild.Worker(spec, broker), done)
        result = await broker.get_result(job.id, wait=1)
        assert attempts == [1, 2, 3]
        assert result is not None and result.ok and result.value == "fine"


class _Picky(SomeJobsInstrument):
    """Hears the finished jobs whose payload is "mine" only."""

    def __init__(self) -> None:
        self.heard: list[object] = []

    def hears(self, job: Job) -> bool:
        return bool(job.payload == "mine")

    def job_finished(self, event: JobFinished) -> None:
        self.heard.append(event.job.payload)


class _All(Instrument):
    def __init__(self) -> None:
        self.heard: list[object] = []

    def job_finished(self, event: JobFinished) -> None:
        self.heard.append(event.job.payload)


class TestFinishedEvents:
    """A job_finished event is built for a job only when some instrument hears it."""

    def test_wants_finished_asks_instruments_that_hear_some_jobs(self) -> None:
        mine, other = Job(queue="q", payload="mine"), Job(queue="q", payload="other")
        instruments = Instruments()
        assert not instruments.wants_finished(mine)
        picky = _Picky()
        instruments.add(picky)
        assert instruments.wants_finished(mine) and not instruments.wants_finished(other)
        everything = _All()
        instruments.add(everything)
        assert instruments.wants_finished(mine) and instruments.wants_finished(other)
        instruments.remove(everything)
        assert not instruments.wants_finished(other)
        instruments.remove(picky)
        assert not instruments.wants_finished(mine)

    async def test_a_worker_emits_for_heard_jobs_only(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker = MemoryBroker()
        ran: list[object] = []
        done = trio.Event()

        async def handler(job: Job) -> None:
            ran.append(job.payload)
            if len(ran) == 3:
                done.set()

        await broker.enqueue([Job(queue="q", payload=p) for p in ("other", "mine", "other")])
        picky = _Picky()
        worker = guild.Worker(
            WorkerSpec(queue="q", handler=handler, concurrency=1), broker, Instruments([picky])
        )
        await serve_until(worker, done)
        assert ran == ["other", "mine", "other"]
        assert picky.heard == ["mine"]

    async def test_with_an_instrument_that_hears_all_every_job_is_emitted(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker = MemoryBroker()
        done = trio.Event()
        count = itertools.count(1)

        async def handler(job: Job) -> None:
            if next(count) == 2:
                done.set()

        await broker.enqueue([Job(queue="q", payload=p) for p in ("other", "mine")])
        picky, everything = _Picky(), _All()
        worker = guild.Worker(
            WorkerSpec(queue="q", handler=handler, concurrency=1),
            broker,
            Instruments([picky, everything]),
        )
        await serve_until(worker, done)
        assert sorted(map(str, everything.heard)) == ["mine", "other"]
        # The picky one is told of all (emit calls every listener); it ignores none
        # here, so it sees both: what it hears decides only whether an event is built.
        assert sorted(map(str, picky.heard)) == ["mine", "other"]
