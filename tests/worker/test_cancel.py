"""Issue 10: a cancelled job never runs, or its handler is cancelled within 1 s.

Virtual time over the memory broker where timing matters; a real sandboxed
process (and the real clock) for the "nothing is left behind" part. The
cross-process runs (a ``guild run`` child on SQLite and Redis) are in
tests/cli/test_cancel_process.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
import trio.testing

import guild
from guild import Job, JobStatus, MemoryBroker, WorkerSpec
from guild.sandbox import Sandbox, SandboxPolicy
from tests._poll import until


class TestRunningJob:
    async def test_handler_is_cancelled_within_a_second_and_the_job_ends_cancelled(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker = MemoryBroker()
        events: list[str] = []
        running = trio.Event()

        async def handler(job: Job) -> str:
            if job.payload == "long":
                running.set()
                try:
                    await trio.sleep(3600)
                finally:
                    events.append(f"long stopped at {trio.current_time():.3f}")
                return "never"
            events.append("next ran")
            return "ok"

        (long,) = await broker.enqueue([Job(queue="q", payload="long")])
        worker = guild.Worker(WorkerSpec(queue="q", handler=handler, concurrency=1), broker)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            await running.wait()
            await trio.sleep(0.3)  # mid-way between two polls of the watcher
            asked = trio.current_time()
            assert await broker.cancel([long.id]) == [long.id]
            result = await broker.get_result(long.id, wait=60)
            took = trio.current_time() - asked
            (nxt,) = await broker.enqueue([Job(queue="q", payload="next")])
            after = await broker.get_result(nxt.id, wait=60)
            worker.drain()
        assert result is not None and result.status is JobStatus.CANCELLED
        assert result.error == "cancelled" and result.attempts == 1
        assert took <= 1.0, f"the cancel took {took:.3f}s of virtual time"
        assert events[0].startswith("long stopped at")
        # The handler task goes on with a fresh scope: the next job runs and is done.
        assert after is not None and after.status is JobStatus.DONE and after.value == "ok"
        assert events[1:] == ["next ran"]
        stats = worker.statistics()
        assert (stats.cancelled, stats.done, stats.retried, stats.dead) == (1, 1, 0, 0)
        counts = (await broker.stats(["q"]))["q"]
        assert (counts.cancelled, counts.done, counts.in_flight) == (1, 1, 0)

    async def test_a_handler_that_fails_when_cancelled_is_not_retried(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker = MemoryBroker()
        runs = 0
        running = trio.Event()

        async def handler(job: Job) -> None:
            nonlocal runs
            runs += 1
            running.set()
            try:
                await trio.sleep(3600)
            except trio.Cancelled:
                # A handler that turns its cancellation into an error (wrongly):
                # the job still ends cancelled, not retried.
                raise RuntimeError("interrupted") from None

        (job,) = await broker.enqueue([Job(queue="q", payload=1, max_attempts=5)])
        worker = guild.Worker(WorkerSpec(queue="q", handler=handler), broker)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            await running.wait()
            await broker.cancel([job.id])
            result = await broker.get_result(job.id, wait=60)
            await trio.sleep(30)  # time for any retry to show up
            worker.drain()
        assert result is not None and result.status is JobStatus.CANCELLED
        assert runs == 1
        assert worker.statistics().retried == 0


class TestWaitingJob:
    async def test_a_prefetched_job_cancelled_never_runs(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker = MemoryBroker()
        ran: list[str] = []
        release = trio.Event()

        async def handler(job: Job) -> None:
            ran.append(job.payload)
            if job.payload == "first":
                await release.wait()

        _, second, third = await broker.enqueue(
            [Job(queue="q", payload=p) for p in ("first", "second", "third")]
        )
        spec = WorkerSpec(queue="q", handler=handler, concurrency=1, prefetch=2)
        worker = guild.Worker(spec, broker)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)

            async def all_held() -> bool:
                return (await broker.stats(["q"]))["q"].in_flight == 3

            await until(all_held, 0.01)
            # "second" is held by the worker, claimed but not started.
            assert await broker.cancel([second.id]) == [second.id]
            release.set()
            done = await broker.get_result(third.id, wait=60)
            worker.drain()
        assert done is not None and done.ok
        assert ran == ["first", "third"]
        result = await broker.get_result(second.id)
        assert result is not None and result.status is JobStatus.CANCELLED
        assert result.attempts == 0

    async def test_a_started_job_waiting_for_its_limit_never_runs(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        # Both jobs are claimed started (two idle handlers); the limit lets one run
        # at a time, so the other is held, started, in no handler's hands when its
        # cancel request is found: it ends cancelled once it gets its turn.
        broker = MemoryBroker()
        ran: list[str] = []

        async def handler(job: Job) -> None:
            ran.append(job.id)
            await trio.sleep(5)

        jobs = await broker.enqueue([Job(queue="q", payload=p) for p in range(2)])
        spec = WorkerSpec(
            queue="q", handler=handler, concurrency=2, limit=guild.Limit(concurrency=1)
        )
        worker = guild.Worker(spec, broker)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            await until(lambda: bool(ran), 0.01)
            (waiting,) = [j.id for j in jobs if j.id not in ran]
            assert await broker.cancel([waiting]) == [waiting]  # a request: it is started
            result = await broker.get_result(waiting, wait=60)
            first = await broker.get_result(ran[0], wait=60)
            worker.drain()
        assert result is not None and result.status is JobStatus.CANCELLED
        assert result.attempts == 1
        assert first is not None and first.ok
        assert len(ran) == 1

    async def test_a_delayed_job_cancelled_never_runs(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker = MemoryBroker()
        ran: list[str] = []

        async def handler(job: Job) -> None:
            ran.append(job.payload)

        (later,) = await broker.enqueue(
            [Job(queue="q", payload="later", not_before=broker.now() + 10)]
        )
        worker = guild.Worker(WorkerSpec(queue="q", handler=handler), broker)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            assert await broker.cancel([later.id]) == [later.id]
            await trio.sleep(60)
            worker.drain()
        assert ran == []


def _processes_with(marker: bytes) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if marker in Path(f"/proc/{name}/cmdline").read_bytes():
                    found.append(int(name))
            except OSError:
                continue
    return found


def _sandbox() -> Sandbox:
    try:
        return Sandbox(SandboxPolicy(allow=("sleep",), kill_grace=0.2))
    except guild.IsolationUnavailable:
        return Sandbox(SandboxPolicy(allow=("sleep",), kill_grace=0.2, isolate="never"))


@pytest.mark.slow
async def test_a_cancelled_job_leaves_no_sandboxed_process() -> None:
    """The real clock and a real ``sleep 30`` in guild.Sandbox: the cancel kills it."""
    broker = MemoryBroker()
    sandbox = _sandbox()
    seconds = f"30.0{os.getpid()}"  # a mark no other process has in its argv
    marker = b"sleep\x00" + seconds.encode()
    running = trio.Event()

    async def handler(job: Job) -> None:
        running.set()
        await sandbox.run(["sleep", seconds], timeout=120)

    with trio.fail_after(30):
        (job,) = await broker.enqueue([Job(queue="q", payload=None)])
        worker = guild.Worker(WorkerSpec(queue="q", handler=handler, timeout=120), broker)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            await running.wait()
            await until(lambda: bool(_processes_with(marker)))
            await broker.cancel([job.id])
            result = await broker.get_result(job.id, wait=20)
            worker.drain()
    assert result is not None and result.status is JobStatus.CANCELLED
    assert _processes_with(marker) == []


class TestAppCancel:
    async def test_inside_open_a_running_job_is_cancelled(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        app = guild.Guild("cancels")
        running = trio.Event()

        @app.worker("q")
        async def handler(job: Job) -> None:
            running.set()
            await trio.sleep(3600)

        async with app.open(MemoryBroker()):
            job = await app.enqueue("q", 1)
            await running.wait()
            assert await app.cancel(job) is True
            result = await app.result(job, wait=60)
            assert await app.cancel(job.id) is False  # finished: nothing to cancel
            assert await app.cancel("no-such-job") is False
        assert result is not None and result.status is JobStatus.CANCELLED

    async def test_outside_run_through_the_apps_broker(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path}/app.db"
        app = guild.Guild("producer", broker=url)
        with trio.fail_after(30):
            job = await app.enqueue("nobody-serves-this", 1)
            assert await app.cancel(job) is True
            result = await app.result(job)
        assert result is not None and result.status is JobStatus.CANCELLED
        assert result.error == "cancelled" and result.attempts == 0
