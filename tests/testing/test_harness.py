"""guild.testing: the fault-injecting broker and the simulator, on guild's own workers."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import guild
from guild.testing import FaultPlan, FaultyBroker, Outage, RandomFailures, Simulator, fault_plans


def _app(max_attempts: int = 4) -> guild.Guild:
    app = guild.Guild("sim", supervision=guild.SupervisorOptions(max_restarts=5, period=10.0))

    @app.worker(
        "work",
        concurrency=4,
        timeout=20.0,
        max_attempts=max_attempts,
        lease=5.0,
        retry=guild.RetryPolicy(base=1.0, max_delay=10.0),
        dependency_threshold=3,
    )
    async def work(job: guild.Job) -> int:
        await trio.sleep(0.1)
        return int(job.payload) * 2

    return app


class TestFaultyBroker:
    """Hooks run before each forwarded call and can fail it cleanly."""

    async def test_outage_window(self, autojump_clock: trio.testing.MockClock) -> None:
        inner = guild.MemoryBroker()
        faulty = FaultyBroker(inner, hook=Outage(start=10, end=20))
        await faulty.enqueue([guild.Job(queue="q")])
        await trio.sleep(15)
        with pytest.raises(guild.BrokerUnavailable, match="injected outage: claim"):
            await faulty.claim("q", consumer="c", limit=1, lease=1)
        await trio.sleep(10)
        assert len(await faulty.claim("q", consumer="c", limit=1, lease=1)) == 1
        assert faulty.calls == {"enqueue": 1, "claim": 2}

    async def test_random_failures_are_seeded(self, autojump_clock: trio.testing.MockClock) -> None:
        outcomes = []
        for _ in range(2):
            hook = RandomFailures(rate=0.5, rng=random.Random(7))
            faulty = FaultyBroker(guild.MemoryBroker(), hook=hook)
            run = []
            for _ in range(20):
                try:
                    await faulty.stats()
                    run.append(True)
                except guild.BrokerUnavailable:
                    run.append(False)
            outcomes.append(run)
        assert outcomes[0] == outcomes[1] and not all(outcomes[0]) and any(outcomes[0])


class TestSimulator:
    """No job is lost and retries stay bounded, whatever the fault plan."""

    def test_quiet_run_completes_everything(self) -> None:
        report = Simulator(_app(), FaultPlan(), seed=1).run_sync({"work": list(range(50))})
        report.check()
        assert (report.done, report.dead, report.handler_calls) == (50, 0, 50)

    def test_kills_and_crashes_lose_nothing(self) -> None:
        plan = FaultPlan(crash_rate=0.3, kills=(2.0, 40.0), outages=((60.0, 20.0),))
        report = Simulator(_app(), plan, seed=42).run_sync({"work": list(range(100))})
        report.check()
        assert report.done + report.dead == 100
        assert report.kills == 2
        assert report.handler_calls > 100  # crashes were retried

    def test_a_broken_invariant_names_the_seed(self) -> None:
        report = Simulator(_app(), FaultPlan(hang_rate=1.0), seed=3, horizon=5).run_sync(
            {"work": [1]}
        )
        with pytest.raises(AssertionError, match="seed=3: did not finish"):
            report.check()

    @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(fault_plans(horizon=120.0), st.integers(0, 2**32))
    def test_any_plan_keeps_the_invariants(self, plan: FaultPlan, seed: int) -> None:
        report = Simulator(_app(), plan, seed=seed, horizon=20_000).run_sync(
            {"work": list(range(30))}
        )
        report.check()
