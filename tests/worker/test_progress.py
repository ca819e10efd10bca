"""Issue 10: ``guild.progress`` from a handler, throttled on its way to the broker,
and the last error and traceback a worker keeps for a retried or dead job.

Virtual time (MockClock) over the memory broker. The expected writes are worked
out by hand from the reporting times and ``PROGRESS_INTERVAL`` (0.25 s), in each
test's docstring; the cross-process runs are in tests/cli/test_job_show.py.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path

import attrs
import hypothesis.strategies as st
import pytest
import trio
import trio.testing
from hypothesis import given

import guild
from guild import Job, JobProgress, JobStatus, MemoryBroker, WorkerSpec
from guild._progress import PROGRESS_INTERVAL, ProgressThrottle
from guild._spec import Handler
from guild.brokers.sqlite import SqliteBroker
from guild.observability import EventHub, Instrument, Instruments, JobProgressed

from .._serving import serve_until_results


class RecordingBroker(MemoryBroker):
    """A real memory broker that also notes every progress write it is asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[str, float, str | None, float]] = []

    async def set_progress(self, updates: Sequence[tuple[guild.Delivery, JobProgress]]) -> None:
        for delivery, progress in updates:
            self.writes.append(
                (delivery.job.id, progress.fraction, progress.message, trio.current_time())
            )
        await super().set_progress(updates)


@attrs.define
class Heard(Instrument):
    events: list[JobProgressed] = attrs.Factory(list)

    def job_progress(self, event: JobProgressed) -> None:
        self.events.append(event)


async def _run_one(broker: MemoryBroker, handler: Handler, instruments: Instruments) -> str:
    (job,) = await broker.enqueue([Job(queue="q", payload=None)])
    worker = guild.Worker(WorkerSpec(queue="q", handler=handler), broker, instruments)
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.serve)
        assert await broker.get_result(job.id, wait=60) is not None
        worker.drain()
    return job.id


class TestRateLimit:
    async def test_reports_every_70ms_reach_the_broker_at_most_every_250ms(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Reports k = 0..19 at t = 0.07 k (from the handler's start). Writes:
        t=0 (the first, at once) k=0; t=0.25 the latest by then, k=3 (0.21);
        t=0.50 k=7 (0.49); t=0.75 k=10 (0.70); t=1.00 k=14 (0.98); t=1.25 k=17
        (1.19); the handler returns at t=1.40 with k=19 (1.33) pending, before
        the next slot at 1.50: written then, as the final value."""
        assert PROGRESS_INTERVAL == 0.25
        broker = RecordingBroker()
        heard = Heard()
        began: list[float] = []

        async def handler(job: Job) -> str:
            began.append(trio.current_time())
            for k in range(20):
                guild.progress(k / 19, f"step {k}")
                await trio.sleep(0.07)
            return "ok"

        job_id = await _run_one(broker, handler, Instruments([heard]))
        expected = [0, 3, 7, 10, 14, 17, 19]
        assert [(i, f, m) for i, f, m, _ in broker.writes] == [
            (job_id, k / 19, f"step {k}") for k in expected
        ]
        at = [round(t - began[0], 6) for *_, t in broker.writes]
        assert at == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.4]
        # One event per write, saying the same.
        assert [(e.job.id, e.fraction, e.message, e.worker) for e in heard.events] == [
            (job_id, k / 19, f"step {k}", "q") for k in expected
        ]
        info = await broker.job_info(job_id)
        assert info is not None and info.status is JobStatus.DONE
        assert info.progress is not None
        assert (info.progress.fraction, info.progress.message) == (1.0, "step 19")

    async def test_a_tight_loop_of_a_thousand_reports_makes_one_write(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """1,000 reports with no checkpoint between them: the writer runs once the
        handler sleeps, and finds only the last one pending. Nothing is pending
        when the handler returns, so nothing more is written."""
        broker = RecordingBroker()

        async def handler(job: Job) -> None:
            for i in range(1000):
                guild.progress(i / 999)
            await trio.sleep(1)

        job_id = await _run_one(broker, handler, Instruments())
        assert [(i, f, m) for i, f, m, _ in broker.writes] == [(job_id, 1.0, None)]

    async def test_a_job_that_never_reports_writes_nothing(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker = RecordingBroker()

        async def handler(job: Job) -> None:
            await trio.sleep(1)

        job_id = await _run_one(broker, handler, Instruments())
        assert broker.writes == []
        info = await broker.job_info(job_id)
        assert info is not None and info.progress is None

    async def test_a_report_after_the_run_ended_is_dropped(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A task the handler leaves behind (in a nursery of its own, here) reports
        at 0.5 inside the run and 0.9 a second after it: only 0.5 is written (once,
        at the end of the run), and nothing after."""
        broker = RecordingBroker()
        async with trio.open_nursery() as outside:

            async def straggler() -> None:
                guild.progress(0.5)
                await trio.sleep(2)
                guild.progress(0.9)

            async def handler(job: Job) -> None:
                outside.start_soon(straggler)
                await trio.sleep(1)

            job_id = await _run_one(broker, handler, Instruments())
        assert [(i, f) for i, f, _, _ in broker.writes] == [(job_id, 0.5)]

    async def test_two_jobs_are_throttled_apart(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Jobs a and b report at t = 0 and t = 0.1, then return at 0.2. Each gets
        its first report written at once and its second as its final value: the
        other job's write does not use up its slot."""
        broker = RecordingBroker()

        async def handler(job: Job) -> None:
            guild.progress(0.1, f"{job.payload} first")
            await trio.sleep(0.1)
            guild.progress(0.9, f"{job.payload} second")
            await trio.sleep(0.1)

        a, b = await broker.enqueue([Job(queue="q", payload="a"), Job(queue="q", payload="b")])
        worker = guild.Worker(WorkerSpec(queue="q", handler=handler, concurrency=2), broker)
        await serve_until_results(worker, broker, a, b)
        assert sorted((i, f, m) for i, f, m, _ in broker.writes) == sorted(
            [
                (a.id, 0.1, "a first"),
                (a.id, 0.9, "a second"),
                (b.id, 0.1, "b first"),
                (b.id, 0.9, "b second"),
            ]
        )


class TestEvents:
    async def test_each_write_is_a_job_progress_message_on_the_hub(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Reports at t = 0 (written at once) and t = 0.1 (pending when the handler
        returns at 0.2: written as the final value): two messages, in order."""
        broker = MemoryBroker()
        instruments = Instruments()
        hub = EventHub(clock=lambda: 1234.5)
        hub.attach(instruments)

        async def handler(job: Job) -> None:
            guild.progress(0.25, "a quarter")
            await trio.sleep(0.1)
            guild.progress(1)
            await trio.sleep(0.1)

        with hub.subscribe() as feed:
            job_id = await _run_one(broker, handler, instruments)
            messages = []
            while True:
                try:
                    messages.append(feed.receive.receive_nowait())
                except trio.WouldBlock:
                    break
        progressed = [m for m in messages if m["type"] == "job_progress"]
        assert progressed == [
            {
                "type": "job_progress",
                "time": 1234.5,
                "worker": "q",
                "task_id": job_id,
                "queue": "q",
                "attempt": 1,
                "fraction": fraction,
                "message": message,
            }
            for fraction, message in [(0.25, "a quarter"), (1.0, None)]
        ]


class TestProgressArguments:
    @pytest.mark.parametrize(
        # Ints past the float range (float() raised OverflowError) and past repr's
        # digit limit (the error's own message raised ValueError) included.
        "bad",
        [
            *[-0.01, 1.01, math.nan, math.inf, "0.5", None, True],
            pytest.param(10**400, id="10**400"),
            pytest.param(-(10**5000), id="5000-digits"),
            pytest.param("x" * 10**6, id="a-megabyte-string"),
        ],
    )
    def test_a_fraction_outside_0_to_1_is_refused(self, bad: object) -> None:
        with pytest.raises(guild.InvalidProgress, match="progress"):
            guild.progress(bad)  # type: ignore[arg-type]

    def test_a_message_that_is_not_text_is_refused(self) -> None:
        with pytest.raises(guild.InvalidProgress, match="message must be a string"):
            guild.progress(0.5, 42)  # type: ignore[arg-type]

    def test_outside_a_worker_it_only_checks(self) -> None:
        guild.progress(0)
        guild.progress(1, "all")

    async def test_a_bad_fraction_fails_the_run_like_any_handler_error(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker = MemoryBroker()

        async def handler(job: Job) -> None:
            guild.progress(2.0)

        (job,) = await broker.enqueue([Job(queue="q", payload=None, max_attempts=1)])
        worker = guild.Worker(WorkerSpec(queue="q", handler=handler), broker)
        await serve_until_results(worker, broker, job)
        info = await broker.job_info(job.id)
        assert info is not None and info.status is JobStatus.DEAD
        assert info.error is not None and info.error.startswith("InvalidProgress")
        assert info.traceback is not None and "guild.progress(2.0)" in info.traceback

    async def test_from_a_thread_of_the_handler(self) -> None:
        broker = MemoryBroker()

        async def handler(job: Job) -> None:
            await trio.to_thread.run_sync(lambda: guild.progress(0.5, "in a thread"))

        with trio.fail_after(10):
            job_id = await _run_one(broker, handler, Instruments())
        info = await broker.job_info(job_id)
        assert info is not None and info.progress is not None
        assert (info.progress.fraction, info.progress.message) == (0.5, "in a thread")

    async def test_a_lone_surrogate_in_a_message_is_stored_escaped(self, tmp_path: Path) -> None:
        # SQLite (like Redis) cannot store a lone surrogate as UTF-8 text: the
        # message keeps it as its escape, and the job still finishes.
        broker = await SqliteBroker.open(tmp_path / "jobs.db")
        try:

            async def handler(job: Job) -> str:
                guild.progress(0.25, "file \udcff.txt")
                return "done"

            with trio.fail_after(10):
                job_id = await _run_one(broker, handler, Instruments())
            info = await broker.job_info(job_id)
            assert info is not None and info.progress is not None
            assert info.progress.message == "file \\udcff.txt"
            assert info.status is JobStatus.DONE and info.result == "done"
        finally:
            await broker.aclose()


class TestLastError:
    async def test_a_retried_job_keeps_its_error_and_traceback_until_it_dies(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker = MemoryBroker()
        seen: list[guild.JobInfo] = []

        def fail(attempt: int) -> None:
            raise ValueError(f"bad input on attempt {attempt}")

        async def handler(job: Job) -> None:
            if job.attempt == 2:
                info = await broker.job_info(job.id)
                assert info is not None
                seen.append(info)
            fail(job.attempt)

        (job,) = await broker.enqueue([Job(queue="q", payload=None, max_attempts=2)])
        worker = guild.Worker(WorkerSpec(queue="q", handler=handler), broker)
        await serve_until_results(worker, broker, job, wait=600)
        (running,) = seen
        # The second run sees the first run's failure, traceback and all.
        assert running.status is JobStatus.IN_FLIGHT and running.attempts == 2
        assert running.error == "ValueError: bad input on attempt 1"
        assert running.traceback is not None
        assert running.traceback.startswith("Traceback (most recent call last)")
        assert "in fail" in running.traceback
        assert running.traceback.rstrip().endswith("ValueError: bad input on attempt 1")
        info = await broker.job_info(job.id)
        assert info is not None and info.status is JobStatus.DEAD and info.attempts == 2
        assert info.error is not None
        assert info.error.startswith("ValueError: bad input on attempt 2")
        assert info.traceback is not None
        assert info.traceback.rstrip().endswith("ValueError: bad input on attempt 2")


class TestThrottlePolicy:
    """ProgressThrottle against its rules, over any sequence of reports and ticks."""

    @given(
        st.lists(
            st.tuples(
                st.sampled_from(["report", "tick"]),
                st.floats(min_value=0, max_value=1, allow_nan=False),
            ),
            max_size=60,
        ),
        st.floats(min_value=0.01, max_value=2.0),
    )
    def test_rules(self, steps: list[tuple[str, float]], interval: float) -> None:
        throttle = ProgressThrottle(interval)
        now = 0.0
        reported: list[float] = []
        written: list[tuple[float, float]] = []  # (time, value)
        for number, (op, step) in enumerate(steps):
            now += step
            if op == "report":
                throttle.offer(JobProgress(fraction=step, at=number))
                reported.append(number)
            else:
                taken = throttle.take(now)
                if taken is not None:
                    # Only ever the latest report, and it had not been written.
                    assert taken.at == reported[-1]
                    assert all(taken.at != at for _, at in written)
                    written.append((now, taken.at))
        final = throttle.final()
        # Writes at least `interval` apart.
        times = [t for t, _ in written]
        # Compared as the policy states it (due = last write + interval): `b - a`
        # can round below `interval` where `a + interval` does not.
        assert all(b >= a + interval for a, b in itertools.pairwise(times))
        # The last report is always written, by a tick or at the end, and only once.
        if reported:
            last_written = final.at if final is not None else written[-1][1]
            assert last_written == reported[-1]
        else:
            assert final is None and written == []
        # Written values keep the order they were reported in.
        assert [at for _, at in written] == sorted(at for _, at in written)
        assert throttle.final() is None
