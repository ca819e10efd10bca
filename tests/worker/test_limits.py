"""Worker limits (``guild.Limit``) over the memory broker, in virtual time.

Oracles are start times written out from the limit's definition: a rate of
``r`` per second with burst 1 spaces one key's starts ``1/r`` apart; a
concurrency of 1 per key starts a key's next job when its last one ends.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import cast

import trio
import trio.testing
from prometheus_client import CollectorRegistry

import guild
from guild import Job, Limit, MemoryBroker, WorkerSpec
from guild._job import JSONValue
from guild.observability import Instruments, PrometheusInstrument
from tests._poll import until
from tests._redis_server import running_redis_server


def _tenant(job: Job) -> str:
    payload = job.payload
    assert isinstance(payload, dict)
    # Whatever the payload holds: a non-string must reach the worker as it is.
    return cast("str", payload["tenant"])


async def _run_jobs(
    spec: WorkerSpec,
    broker: MemoryBroker,
    payloads: Sequence[JSONValue],
    *,
    instruments: Instruments | None = None,
) -> list[Job]:
    """Enqueue ``payloads``, run a worker until every job has a result, drain."""
    jobs = await broker.enqueue([Job(queue=spec.queue, payload=p) for p in payloads])
    worker = guild.Worker(spec, broker, instruments)
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.serve)
        for job in jobs:
            await broker.get_result(job.id, wait=10_000)
        worker.drain()
    return jobs


def _starts_by_key(starts: list[tuple[str, float]]) -> dict[str, list[float]]:
    first = min(at for _, at in starts)
    found: dict[str, list[float]] = defaultdict(list)
    for key, at in starts:
        found[key].append(round(at - first, 6))
    return {key: sorted(times) for key, times in found.items()}


class TestKeyedRate:
    async def test_two_per_second_per_key_others_proceed(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker = MemoryBroker()
        starts: list[tuple[str, float]] = []

        async def handler(job: Job) -> None:
            starts.append((_tenant(job), trio.current_time()))

        spec = WorkerSpec(
            queue="q", handler=handler, limit=Limit(rate="2/s", key=_tenant), concurrency=16
        )
        payloads = [{"tenant": "a"}] * 6 + [{"tenant": "b"}] * 2 + [{"tenant": "c"}]
        await _run_jobs(spec, broker, payloads)
        # 2/s, burst 1: one key's starts 0.5 s apart; the keys do not wait for each other.
        assert _starts_by_key(starts) == {
            "a": [0.0, 0.5, 1.0, 1.5, 2.0, 2.5],
            "b": [0.0, 0.5],
            "c": [0.0],
        }
        # And, counted by brute force: no one-second window holds three of a key.
        for times in _starts_by_key(starts).values():
            for t in times:
                assert sum(1 for u in times if t <= u < t + 1.0 - 1e-9) <= 2

    async def test_worker_wide_rate_without_key(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker = MemoryBroker()
        starts: list[tuple[str, float]] = []

        async def handler(job: Job) -> None:
            starts.append(("all", trio.current_time()))

        spec = WorkerSpec(queue="q", handler=handler, limit=Limit(rate="1/2s", burst=2))
        await _run_jobs(spec, broker, list(range(4)))
        # Burst 2 at once, then one every 2 s.
        assert _starts_by_key(starts) == {"all": [0.0, 0.0, 2.0, 4.0]}


class TestKeyedConcurrency:
    async def test_one_at_a_time_per_key_serialises_that_key_only(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker = MemoryBroker()
        starts: list[tuple[str, float]] = []
        running: dict[str, int] = defaultdict(int)
        most_at_once = 0

        async def handler(job: Job) -> None:
            nonlocal most_at_once
            tenant = _tenant(job)
            starts.append((tenant, trio.current_time()))
            running[tenant] += 1
            assert running[tenant] == 1
            most_at_once = max(most_at_once, sum(running.values()))
            await trio.sleep(1.0)
            running[tenant] -= 1

        spec = WorkerSpec(queue="q", handler=handler, limit=Limit(concurrency=1, key=_tenant))
        await _run_jobs(spec, broker, [{"tenant": "a"}] * 3 + [{"tenant": "b"}] * 2)
        assert _starts_by_key(starts) == {"a": [0.0, 1.0, 2.0], "b": [0.0, 1.0]}
        assert most_at_once == 2  # a and b ran side by side

    async def test_token_comes_back_when_the_handler_fails_or_times_out(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker = MemoryBroker()
        starts: list[tuple[str, float]] = []
        hanging = trio.Event()

        async def handler(job: Job) -> None:
            starts.append((str(job.payload), trio.current_time()))
            if job.payload == "raise":
                raise RuntimeError("boom")
            if job.payload == "hang":
                hanging.set()
                await trio.sleep(math.inf)

        spec = WorkerSpec(
            queue="q", handler=handler, timeout=3.0, max_attempts=1, limit=Limit(concurrency=1)
        )
        worker = guild.Worker(spec, broker)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            (failing,) = await broker.enqueue([Job(queue="q", payload="raise")])
            await broker.get_result(failing.id, wait=100)
            await broker.enqueue([Job(queue="q", payload="hang")])
            await hanging.wait()
            (last,) = await broker.enqueue([Job(queue="q", payload="ok")])
            await broker.get_result(last.id, wait=100)
            worker.drain()
        # "raise" gave its token back when it failed; "hang" holds it until its
        # 3 s timeout cancels it (a timeout is never early, and at most 0.1% late),
        # and only then does "ok" start.
        found = dict(starts)
        assert 3.0 <= found["ok"] - found["hang"] <= 3.003
        assert [name for name, _ in starts] == ["raise", "hang", "ok"]


class TestTimeout:
    async def test_waiting_does_not_count_against_the_timeout(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker = MemoryBroker()

        async def handler(job: Job) -> str:
            await trio.sleep(1.0)
            return "ok"

        # Each job runs 1 s of its 1.5 s; the third waits 2 s first.
        spec = WorkerSpec(
            queue="q", handler=handler, timeout=1.5, max_attempts=1, limit=Limit(concurrency=1)
        )
        jobs = await _run_jobs(spec, broker, [1, 2, 3])
        for job in jobs:
            result = await broker.get_result(job.id)
            assert result is not None and result.ok and result.value == "ok"


class TestBadKey:
    async def test_a_raising_or_non_string_key_dead_letters_that_job_only(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker = MemoryBroker()
        ran: list[Job] = []

        async def handler(job: Job) -> None:
            ran.append(job)

        spec = WorkerSpec(queue="q", handler=handler, limit=Limit(rate="100/s", key=_tenant))
        jobs = await _run_jobs(spec, broker, [{"tenant": "a"}, {}, {"tenant": 7}, {"tenant": "b"}])
        assert sorted(_tenant(job) for job in ran) == ["a", "b"]
        missing = await broker.get_dead(jobs[1].id)
        assert missing is not None
        assert missing.error == "limit key function raised KeyError: 'tenant'"
        wrong = await broker.get_dead(jobs[2].id)
        assert wrong is not None
        assert wrong.error == "limit key function returned 7, not a string"
        stats = (await broker.stats(["q"]))["q"]
        assert (stats.done, stats.dead) == (2, 2)


class TestLeaseAndDrain:
    async def test_a_waiting_job_keeps_its_lease(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker = MemoryBroker()
        runs: dict[str, list[int]] = defaultdict(list)

        async def handler(job: Job) -> None:
            runs[job.id].append(job.attempt)

        # The third job waits 20 s for the rate, its lease is 3 s: renewed throughout,
        # it is never claimed again (a lost lease would run it twice).
        spec = WorkerSpec(queue="q", handler=handler, lease=3.0, limit=Limit(rate="1/10s"))
        jobs = await _run_jobs(spec, broker, [1, 2, 3])
        assert {job.id: runs[job.id] for job in jobs} == {job.id: [1] for job in jobs}

    async def test_drain_hands_waiting_jobs_back_unrun(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker = MemoryBroker()
        ran: list[object] = []
        first = trio.Event()

        async def handler(job: Job) -> None:
            ran.append(job.payload)
            first.set()

        spec = WorkerSpec(queue="q", handler=handler, limit=Limit(rate="1/100s"))
        await broker.enqueue([Job(queue="q", payload=i) for i in range(3)])
        worker = guild.Worker(spec, broker)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            await first.wait()
            await trio.sleep(1.0)
            worker.drain()
        assert len(ran) == 1
        stats = (await broker.stats(["q"]))["q"]
        assert (stats.done, stats.ready, stats.in_flight) == (1, 2, 0)


class TestWaitMetric:
    async def test_each_admission_is_observed_per_worker(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker = MemoryBroker()
        metrics = PrometheusInstrument("demo", registry=CollectorRegistry())

        async def handler(job: Job) -> None:
            pass

        spec = WorkerSpec(
            queue="q", name="limited", handler=handler, limit=Limit(rate="4/s", key=_tenant)
        )
        await _run_jobs(
            spec,
            broker,
            [{"tenant": "a"}] * 3 + [{"tenant": "b"}],
            instruments=Instruments([metrics]),
        )
        labels = {"app": "demo", "worker": "limited"}
        sample = metrics.registry.get_sample_value
        assert sample("guild_job_limit_wait_seconds_count", labels) == 4
        # a waits 0, 0.25 and 0.5 s; b not at all.
        assert sample("guild_job_limit_wait_seconds_sum", labels) == 0.75


class TestCancelWhileWaiting:
    async def test_a_job_cancelled_while_waiting_for_its_rate_ends_unrun_and_uncharged(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker = MemoryBroker()
        starts: dict[object, float] = {}

        async def handler(job: Job) -> None:
            starts[job.payload] = trio.current_time()

        spec = WorkerSpec(queue="q", handler=handler, limit=Limit(rate="1/hour"))
        worker = guild.Worker(spec, broker)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            # One after the other: enqueued together, either could be admitted first.
            (first,) = await broker.enqueue([Job(queue="q", payload="first")])
            assert await broker.get_result(first.id, wait=10) is not None
            (waiting,) = await broker.enqueue([Job(queue="q", payload="waiting")])
            await trio.sleep(60.0)
            # Claimed and started, it waits for the rate's next admission (an hour on).
            info = await broker.job_info(waiting.id)
            assert info is not None and info.status is guild.JobStatus.IN_FLIGHT, info
            asked = trio.current_time()
            assert await broker.cancel([waiting.id]) == [waiting.id]
            ended = await broker.get_result(waiting.id, wait=10)
            assert ended is not None and ended.status is guild.JobStatus.CANCELLED, ended
            # Found by the worker's next poll for cancel requests, 0.5 s apart.
            assert trio.current_time() - asked <= 0.5
            (last,) = await broker.enqueue([Job(queue="q", payload="last")])
            assert await broker.get_result(last.id, wait=10_000) is not None
            worker.drain()
        assert set(starts) == {"first", "last"}, "the cancelled job's handler ran"
        # 1/hour, burst 1: the next admission after "first" is an hour after it;
        # had the cancelled job been admitted (charged), "last" would wait two.
        assert starts["last"] - starts["first"] == 3600.0


class TestCancelWhileWaitingOnRedis:
    async def test_a_job_waiting_for_a_shared_limit_is_cancelled_unrun(self) -> None:
        """On a Redis broker the limit is a RedisRateLimiter shared through Redis:
        a job cancelled while it waits there ends cancelled all the same (an hour's
        wait cut short), and its handler never runs. Real clock, real redis-server."""
        ran: list[object] = []
        with running_redis_server() as server, trio.fail_after(60):
            app = guild.Guild("limits", broker=server.url)

            @app.worker("q", limit=Limit(rate="1/hour"))
            async def handler(job: Job) -> None:
                ran.append(job.payload)

            async with app.open():
                first = await app.enqueue("q", "first")
                assert await app.result(first, wait=30) is not None
                waiting = await app.enqueue("q", "waiting")

                async def held() -> bool:
                    info = await app.job(waiting)
                    return info.status is guild.JobStatus.IN_FLIGHT

                await until(held, 0.05)
                assert await app.cancel(waiting)
                # Far less than the hour its limit would have made it wait.
                ended = await app.result(waiting, wait=20)
                assert ended is not None and ended.status is guild.JobStatus.CANCELLED, ended
        assert ran == ["first"]
