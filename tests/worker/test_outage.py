"""A worker whose broker is away waits it out, in virtual time.

The memory broker stands behind guild.testing.FaultyBroker, whose hook makes
chosen calls fail as unreachable: no real backend can be taken away under a
MockClock (the real Redis outage is in tests/redis_e2e/test_outage.py).
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import structlog
import trio
import trio.testing

import guild
from guild import Job, MemoryBroker, WorkerSpec
from guild.testing import FaultyBroker

from ..observability.helpers import eventually

# OutageBackoff's defaults with no jitter, written out: 50 ms doubling, capped at 1 s.
WAITS = [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]


class _Switch:
    """A FaultyBroker hook: the calls named in ``down`` fail as unreachable."""

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.calls: dict[str, list[float]] = {}

    async def __call__(self, method: str) -> None:
        self.calls.setdefault(method, []).append(trio.current_time())
        await trio.lowlevel.checkpoint()
        if method in self.down:
            raise guild.BrokerUnavailable(f"switched off: {method}")


def _switched() -> tuple[FaultyBroker, _Switch, MemoryBroker]:
    switch = _Switch()
    inner = MemoryBroker()
    return FaultyBroker(inner, hook=switch), switch, inner


def _worker(broker: FaultyBroker, handler: Any, **options: Any) -> guild.Worker:
    spec = WorkerSpec(queue="q", handler=handler, **options)
    return guild.Worker(spec, broker, rand=lambda: 0.0)


class TestClaimDuringOutage:
    async def test_backs_off_then_claims_at_most_a_second_after_the_return(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker, switch, inner = _switched()
        done = trio.Event()

        async def handler(job: Job) -> object:
            done.set()
            return job.payload

        switch.down = {"claim"}
        worker = _worker(broker, handler, claim_wait=5.0)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            await eventually(lambda: len(switch.calls.get("claim", [])) > len(WAITS))
            calls = switch.calls["claim"]
            gaps = [b - a for a, b in itertools.pairwise(calls)][: len(WAITS)]
            assert gaps == pytest.approx(WAITS)
            reason = worker.statistics().broker_error
            assert reason is not None and "switched off: claim" in reason
            # Far longer than any restart budget: still waiting, not crashed.
            await trio.sleep(120.0)
            assert worker.statistics().broker_error is not None
            await inner.enqueue([Job(queue="q", payload="after")])
            back = trio.current_time()
            switch.down = set()
            await done.wait()
            assert trio.current_time() - back <= 1.0
            assert worker.statistics().broker_error is None
            worker.drain()

    async def test_a_real_broker_error_still_crashes(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        async def broken(method: str) -> None:
            await trio.lowlevel.checkpoint()
            raise guild.BrokerError(f"redis: {method}: ERR script bug")

        async def handler(job: Job) -> object:
            return None

        worker = _worker(FaultyBroker(MemoryBroker(), hook=broken), handler)
        with pytest.raises(BaseExceptionGroup) as caught:
            await worker.serve()
        assert caught.group_contains(guild.BrokerError, match="script bug")


class TestSettlingDuringOutage:
    async def test_acks_are_kept_and_flushed_when_the_broker_is_back(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker, switch, inner = _switched()
        runs: list[int] = []

        async def handler(job: Job) -> object:
            runs.append(job.payload)
            return job.payload * 10

        jobs = await inner.enqueue([Job(queue="q", payload=i) for i in range(6)])
        switch.down = {"ack", "extend"}
        # A lease far longer than the outage: jobs stay held, not handed out again.
        worker = _worker(broker, handler, concurrency=2, prefetch=4, lease=600.0)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            await eventually(lambda: len(runs) == 6)
            await trio.sleep(300.0)  # acks and two lease renewals fail meanwhile
            assert len(switch.calls["ack"]) > 10 and len(switch.calls["extend"]) >= 1
            stats = (await inner.stats(["q"]))["q"]
            assert (stats.done, stats.in_flight) == (0, 6)
            assert worker.statistics().held == 6
            switch.down = set()
            await eventually(lambda: worker.statistics().held == 0)
            worker.drain()
        stats = (await inner.stats(["q"]))["q"]
        assert (stats.done, stats.ready, stats.in_flight) == (6, 0, 0)
        assert sorted(runs) == list(range(6))  # each ran once: no ack was dropped
        for job in jobs:
            result = await inner.get_result(job.id)
            assert result is not None and result.value == job.payload * 10

    async def test_a_retry_waits_out_the_outage(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker, switch, inner = _switched()
        attempts: list[int] = []

        async def handler(job: Job) -> object:
            attempts.append(job.attempt)
            if job.attempt == 1:
                raise ValueError("first try fails")
            return "ok"

        (job,) = await inner.enqueue([Job(queue="q", payload=None)])
        switch.down = {"retry"}
        worker = _worker(broker, handler)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            await eventually(lambda: len(switch.calls.get("retry", [])) > 5)
            switch.down = set()
            result = await inner.get_result(job.id, wait=60.0)
            worker.drain()
        assert result is not None and result.value == "ok"
        assert attempts == [1, 2]

    async def test_a_drain_gives_up_on_acks_after_the_grace(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker, switch, inner = _switched()

        async def handler(job: Job) -> object:
            return None

        await inner.enqueue([Job(queue="q", payload=1)])
        switch.down = {"ack"}
        worker = _worker(broker, handler, graceful_timeout=10.0, lease=600.0)
        with structlog.testing.capture_logs() as logs:
            async with trio.open_nursery() as nursery:
                await nursery.start(worker.serve)
                await eventually(lambda: len(switch.calls.get("ack", [])) > 3)
                worker.drain()
        # serve returned (the drain did not hang on the dead broker), loudly.
        abandoned = [entry for entry in logs if entry["event"] == "acks_abandoned"]
        assert len(abandoned) == 1 and abandoned[0]["count"] == 1
        stats = (await inner.stats(["q"]))["q"]
        assert (stats.done, stats.in_flight) == (0, 1)  # its lease brings it back

    async def test_acks_in_several_batches_share_one_grace(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        # One job's ack fails alone; the other job finishes after the drain began,
        # so its ack is a second batch. The drain must give up on both within one
        # graceful_timeout, not one each: the grace starts at the first ack that
        # fails during the drain and ends at the first try after it, each at most
        # one backoff wait (1 s) late.
        broker, switch, inner = _switched()
        release = trio.Event()

        async def handler(job: Job) -> object:
            if job.payload == "late":
                await release.wait()
            return None

        await inner.enqueue([Job(queue="q", payload="late"), Job(queue="q", payload="early")])
        switch.down = {"ack"}
        worker = _worker(broker, handler, graceful_timeout=10.0, lease=600.0, concurrency=2)
        with structlog.testing.capture_logs() as logs:
            async with trio.open_nursery() as nursery:
                await nursery.start(worker.serve)
                await eventually(lambda: len(switch.calls.get("ack", [])) > 3)
                drained_at = trio.current_time()
                worker.drain()
                release.set()
            ended_at = trio.current_time()
        abandoned = [entry for entry in logs if entry["event"] == "acks_abandoned"]
        assert [entry["count"] for entry in abandoned] == [1, 1]
        assert ended_at - drained_at <= 10.0 + 2 * 1.0


class _Damage:
    """A FaultyBroker hook: the calls named in ``damaged`` fail as a damaged record
    would (``guild.BrokerDataError``, naming it), every time, until repaired."""

    def __init__(self) -> None:
        self.damaged: set[str] = set()
        self.calls: dict[str, int] = {}

    async def __call__(self, method: str) -> None:
        self.calls[method] = self.calls.get(method, 0) + 1
        await trio.lowlevel.checkpoint()
        if method in self.damaged:
            raise guild.BrokerDataError(f"{method}: the key k holds a string, not a hash")


class TestDamagedRecord:
    """A record the broker keeps that is not what guild wrote fails the same call
    the same way until someone repairs it: the worker waits it out as it does an
    outage, saying which record, and never crashes into a restart (which would
    not repair it)."""

    async def test_a_damaged_claim_is_waited_out_named_and_logged_once(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        damage = _Damage()
        inner = MemoryBroker()
        done = trio.Event()

        async def handler(job: Job) -> object:
            done.set()
            return job.payload

        damage.damaged = {"claim"}
        worker = _worker(FaultyBroker(inner, hook=damage), handler, claim_wait=5.0)
        with structlog.testing.capture_logs() as logs:
            async with trio.open_nursery() as nursery:
                await nursery.start(worker.serve)
                await trio.sleep(600.0)  # far longer than any restart budget
                assert damage.calls["claim"] > 500  # tried again, at most a second apart
                assert worker.statistics().broker_error == (
                    "BrokerDataError: claim: the key k holds a string, not a hash"
                )
                await inner.enqueue([Job(queue="q", payload="after")])
                damage.damaged = set()
                await done.wait()
                await eventually(lambda: worker.statistics().broker_error is None)
                worker.drain()
        events = [(e["event"], e.get("during")) for e in logs]
        assert events.count(("broker_data_damaged", "claim")) == 1
        assert ("broker_available", None) in events
        assert "broker_unavailable" not in [event for event, _ in events]

    async def test_a_damaged_ack_keeps_its_jobs_held_and_the_error_shown_while_claims_work(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        damage = _Damage()
        inner = MemoryBroker()
        runs: list[int] = []

        async def handler(job: Job) -> object:
            runs.append(job.payload)
            return job.payload

        jobs = await inner.enqueue([Job(queue="q", payload=i) for i in range(3)])
        damage.damaged = {"ack"}
        worker = _worker(
            FaultyBroker(inner, hook=damage), handler, concurrency=4, lease=600.0, claim_wait=1.0
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            await eventually(lambda: len(runs) == 3)
            seen = set()
            for _ in range(30):  # claims go through meanwhile: the ack's error stays
                await trio.sleep(1.0)
                seen.add(worker.statistics().broker_error)
            assert seen == {"BrokerDataError: ack: the key k holds a string, not a hash"}
            assert damage.calls["claim"] > 10
            assert worker.statistics().held == 3
            damage.damaged = set()
            await eventually(lambda: worker.statistics().held == 0)
            assert worker.statistics().broker_error is None
            worker.drain()
        assert sorted(runs) == [0, 1, 2]  # each ran once: no ack was dropped
        for job in jobs:
            result = await inner.get_result(job.id)
            assert result is not None and result.value == job.payload

    async def test_damaged_starts_extends_and_cancel_looks_crash_nothing(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        damage = _Damage()
        inner = MemoryBroker()
        runs: list[int] = []

        async def handler(job: Job) -> object:
            runs.append(job.payload)
            await trio.sleep(30.0)  # held across lease renewals and cancel looks
            return job.payload

        await inner.enqueue([Job(queue="q", payload=i) for i in range(4)])
        damage.damaged = {"start", "extend", "cancel_requested"}
        # One handler, three prefetched: each of those is started by a start call.
        worker = _worker(
            FaultyBroker(inner, hook=damage), handler, concurrency=1, prefetch=3, lease=30.0
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            await eventually(lambda: len(runs) == 1)
            await trio.sleep(60.0)
            assert runs == [0]  # the others wait for their start
            assert {"start", "extend", "cancel_requested"} <= set(damage.calls)
            assert worker.statistics().broker_error is not None
            damage.damaged = set()
            await eventually(lambda: len(runs) == 4)
            await eventually(lambda: worker.statistics().held == 0)
            assert worker.statistics().broker_error is None
            worker.drain()
        assert sorted(runs) == [0, 1, 2, 3]
