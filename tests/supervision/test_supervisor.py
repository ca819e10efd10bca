"""The Trio side of supervision, in virtual time: it does what the policy decided, when."""

from __future__ import annotations

import functools

import pytest
import trio
import trio.testing

import guild
from guild import (
    Backoff,
    ChildEvent,
    ChildSpec,
    Circuit,
    GaveUp,
    Job,
    MemoryBroker,
    Restart,
    Strategy,
    Supervisor,
    SupervisorOptions,
)

from .._poll import until
from .._state_log import StateLog


async def _dead(broker: MemoryBroker, queue: str, count: int) -> bool:
    return (await broker.stats([queue]))[queue].dead >= count


class Flaky:
    """A child that crashes on each of its first ``crashes`` starts, then stays up.

    The first start reports started before it crashes: a first start that fails
    is the caller's error, not a restart (OTP's start_child), so the restarts
    these tests count begin with a child that came up once.
    """

    def __init__(self, crashes: int) -> None:
        self.crashes = crashes
        self.starts: list[float] = []
        self.cancelled = 0

    async def __call__(self, *, task_status: trio.TaskStatus[None]) -> None:
        self.starts.append(trio.current_time())
        if len(self.starts) <= self.crashes:
            if len(self.starts) == 1:
                task_status.started()
            raise ConnectionError(f"attempt {len(self.starts)}")
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            self.cancelled += 1


async def _with_supervisor(
    supervisor: Supervisor, *specs: ChildSpec, run_for: float = 1000.0
) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        for spec in specs:
            await supervisor.start_child(spec)
        await trio.sleep(run_for)
        nursery.cancel_scope.cancel()


class TestRestarts:
    async def test_backoff_delays_are_the_policys(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        child = Flaky(crashes=3)
        events: list[ChildEvent] = []
        supervisor = Supervisor(
            "top",
            max_restarts=5,
            period=100.0,
            backoff=Backoff(initial=1.0, multiplier=3.0, jitter=0.0),
            on_event=events.append,
        )
        await _with_supervisor(supervisor, ChildSpec(name="c", start=child))
        # Starts at 0, then after 1, 3 and 9 seconds of backoff.
        assert child.starts == [0.0, 1.0, 4.0, 13.0]
        restarting = [e.detail for e in events if e.state == "restarting"]
        assert [d.split(":")[0] for d in restarting if d] == ["in 1s", "in 3s", "in 9s"]
        assert [e.state for e in events][-2:] == ["running", "stopped"]

    async def test_jitter_comes_from_rand(self, autojump_clock: trio.testing.MockClock) -> None:
        child = Flaky(crashes=1)
        supervisor = Supervisor(
            "top", backoff=Backoff(initial=2.0, jitter=0.5), rand=lambda: 1.0 - 1e-9
        )
        await _with_supervisor(supervisor, ChildSpec(name="c", start=child))
        assert child.starts[1] == pytest.approx(1.0)

    async def test_intensity_exceeded_gives_up_and_stops_everyone(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        steady, crashing = Flaky(crashes=0), Flaky(crashes=100)
        supervisor = Supervisor(
            "top", max_restarts=2, period=60.0, backoff=Backoff(initial=1.0, jitter=0.0)
        )
        with pytest.raises(ExceptionGroup) as caught:
            await _with_supervisor(
                supervisor,
                ChildSpec(name="steady", start=steady),
                ChildSpec(name="crashing", start=crashing),
            )
        (gave_up,) = caught.value.exceptions
        assert isinstance(gave_up, GaveUp)
        assert str(gave_up).startswith("supervisor 'top' gave up: 3 restarts within 60s")
        assert "ConnectionError: attempt 3" in str(gave_up)
        assert len(crashing.starts) == 3
        assert steady.cancelled == 1
        assert supervisor.snapshot()["steady"].state == "stopped"

    async def test_temporary_child_is_not_restarted(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        child = Flaky(crashes=1)
        supervisor = Supervisor("top")
        await _with_supervisor(
            supervisor, ChildSpec(name="once", start=child, restart=Restart.TEMPORARY)
        )
        assert len(child.starts) == 1
        assert "once" not in supervisor.snapshot()

    async def test_one_for_all_restarts_siblings_in_start_order(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        order: list[str] = []

        def child(name: str, crash_first: bool) -> ChildSpec:
            starts = 0

            async def start(*, task_status: trio.TaskStatus[None]) -> None:
                nonlocal starts
                starts += 1
                order.append(f"start {name}")
                task_status.started()
                try:
                    await trio.sleep(1.0 if crash_first and starts == 1 else 10_000)
                finally:
                    order.append(f"end {name}")
                raise RuntimeError("crashed")

            return ChildSpec(name=name, start=start)

        supervisor = Supervisor("top", strategy=Strategy.ONE_FOR_ALL)
        await _with_supervisor(
            supervisor, child("a", False), child("b", True), child("c", False), run_for=100.0
        )
        assert order[:9] == [
            "start a",
            "start b",
            "start c",
            "end b",
            "end c",
            "end a",
            "start a",
            "start b",
            "start c",
        ]
        # Shutdown stops them latest-started first, too.
        assert order[9:] == ["end c", "end b", "end a"]

    async def test_children_join_a_running_supervisor(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        supervisor = Supervisor("top")
        with pytest.raises(RuntimeError, match="not running"):
            await supervisor.start_child(ChildSpec(name="early", start=Flaky(0)))
        late = Flaky(crashes=0)
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            await trio.sleep(5)
            await supervisor.start_child(ChildSpec(name="late", start=late))
            assert supervisor.snapshot()["late"].state == "running"
            nursery.cancel_scope.cancel()
        assert late.starts == [5.0] and late.cancelled == 1


class TestDependencyCircuit:
    """A worker whose dependency is down crashes, opens, half-opens, and closes."""

    async def test_open_half_open_closed(self, autojump_clock: trio.testing.MockClock) -> None:
        dependency_up = False
        handled: list[str] = []
        log = StateLog()
        app = guild.Guild(
            "circuit",
            instruments=[log],
            supervision=SupervisorOptions(
                max_restarts=1, period=1000.0, backoff=Backoff(initial=1.0, jitter=0.0)
            ),
        )

        @app.worker(
            "calls",
            concurrency=1,
            max_attempts=100,
            retry=guild.RetryPolicy(base=0.5, jitter=0.0),
            dependency_errors=[ConnectionRefusedError],
            dependency_threshold=2,
            circuit=Circuit(threshold=3, window=600.0, cooldown=30.0, healthy_after=5.0),
        )
        async def call(job: Job) -> None:
            if not dependency_up:
                raise ConnectionRefusedError("the API is down")
            handled.append(job.id)

        broker = MemoryBroker()
        await broker.enqueue([Job(queue="calls", payload=i) for i in range(20)])
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(app.run, broker, shutdown_trigger=stop.wait))
            await until(lambda: "open" in log.states())
            opened_at = trio.current_time()
            # Three crashes of two failures each opened it; the supervisor's own
            # intensity (max_restarts=1) did not give up: the circuit answers for it.
            assert log.states().count("crashed") == 3
            assert "DependencyFailure" in (log.events[-1].last_error or "")
            # While open, the worker claims nothing: the jobs wait in the broker.
            await trio.sleep(29.0)
            stats = (await broker.stats(["calls"]))["calls"]
            assert stats.in_flight == 0 and stats.done == 0
            assert app.supervisor is not None
            assert app.supervisor.snapshot()["calls"].state == "open"
            dependency_up = True
            await until(lambda: "half_open" in log.states())
            assert trio.current_time() - opened_at == pytest.approx(30.0, abs=0.2)
            await until(lambda: "closed" in log.states())
            await until(lambda: len(set(handled)) == 20)
            stop.set()
        stats = (await broker.stats(["calls"]))["calls"]
        assert (stats.done, stats.dead, stats.ready, stats.in_flight) == (20, 0, 0, 0)
        assert log.states().count("open") == 1

    async def test_job_errors_do_not_crash_the_worker(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        log = StateLog()
        app = guild.Guild("jobs", instruments=[log])

        @app.worker("q", max_attempts=1, dependency_threshold=1)
        async def bad(job: Job) -> None:
            raise ValueError("a bug in this job, not a dependency")

        broker = MemoryBroker()
        await broker.enqueue([Job(queue="q", payload=i) for i in range(10)])
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(app.run, broker, shutdown_trigger=stop.wait))
            await until(lambda: _dead(broker, "q", 10))
            stop.set()
        assert "crashed" not in log.states()
