"""Conformance checks of job priorities (``Job.priority``; the protocol's "Order" rule).

Registered in ``_conformance.CHECKS``. The last one drives a broker with
Hypothesis against a reference model of claim order; without Hypothesis
installed it is skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import attrs
import trio

from .._codec import encode_result
from .._job import PRIORITIES, Delivery, Job, JobStatus, Priority
from ..brokers._protocol import Broker, Purgeable

MakeBroker = Callable[[], AbstractAsyncContextManager[Broker]]
LIMIT = 30.0
FAR = 3600.0
H, N, L = Priority.HIGH, Priority.NORMAL, Priority.LOW


class HypothesisMissing(Exception):
    """Hypothesis is not installed: the model check cannot run."""


def _job(name: str, priority: Priority, **fields: Any) -> Job:
    return Job(queue="q", payload=name, priority=priority, **fields)


async def _claim(broker: Broker, limit: int) -> list[Delivery]:
    return await broker.claim("q", consumer="c", limit=limit, lease=FAR)


async def _sleep_past(broker: Broker, when: float) -> None:
    """Sleep until the broker's clock is past ``when``."""
    await trio.sleep(max(0.0, when - broker.now()) + 0.01)
    # The broker's clock (wall time, for the durable ones) may lag Trio's a little.
    await trio.sleep(max(0.0, when - broker.now()) + 0.01)


def _names(deliveries: Sequence[Delivery]) -> list[Any]:
    return [d.job.payload for d in deliveries]


async def priority_order(make_broker: MakeBroker) -> None:
    """Higher priorities are claimed first, and each level in enqueue order; a
    claimed job keeps its priority."""
    with trio.fail_after(LIMIT):
        async with make_broker() as broker:
            await broker.enqueue(
                [_job("n0", N), _job("l0", L), _job("h0", H), _job("n1", N), _job("h1", H)]
            )
            await broker.enqueue([_job("l1", L)])
            await broker.enqueue([_job("h2", H)])
            assert (await broker.stats(["q"]))["q"].ready == 7
            first = await _claim(broker, 2)
            assert _names(first) == ["h0", "h1"]
            stats = (await broker.stats(["q"]))["q"]
            assert (stats.ready, stats.in_flight) == (5, 2)
            rest = await _claim(broker, 100)
            assert _names(rest) == ["h2", "n0", "n1", "l0", "l1"]
            levels = {d.job.payload: d.job.priority for d in first + rest}
            assert levels == {
                "h0": H, "h1": H, "h2": H, "n0": N, "n1": N, "l0": L, "l1": L,
            }  # fmt: skip
            assert all(type(d.job.priority) is Priority for d in first + rest)


async def priority_kept(make_broker: MakeBroker) -> None:
    """A delayed job, a retry, a released job and a requeued dead letter keep
    their priority: each is claimed ahead of the lower ones waiting since before."""
    with trio.fail_after(LIMIT):
        async with make_broker() as broker:
            now = broker.now()
            await broker.enqueue([_job("n0", N), _job("h", H, not_before=now + 0.4)])
            assert _names(await _claim(broker, 10)) == ["n0"]  # h is not due yet
            await broker.enqueue([_job("n1", N), _job("n2", N)])
            await _sleep_past(broker, now + 0.45)
            (held,) = await _claim(broker, 1)
            assert (held.job.payload, held.job.priority) == ("h", H)
            await broker.retry(held, at=broker.now(), error="again")
            (held,) = await _claim(broker, 1)
            assert (held.job.payload, held.job.priority) == ("h", H)
            await broker.release([held])
            (held,) = await _claim(broker, 1)
            assert (held.job.payload, held.job.priority) == ("h", H)
            await broker.dead(held, error="gone")
            assert await broker.requeue_dead([held.job.id]) == 1
            (held,) = await _claim(broker, 1)
            assert (held.job.payload, held.job.priority) == ("h", H)
            await broker.ack([(held, encode_result(None))])
            # A low job retried later still waits behind the normal ones.
            await broker.enqueue([_job("low", L)])
            (n1, n2, low) = await _claim(broker, 3)
            assert _names([n1, n2, low]) == ["n1", "n2", "low"]
            due = broker.now() + 0.2
            await broker.retry(low, at=due, error="later")
            await broker.enqueue([_job("n3", N)])
            await _sleep_past(broker, due + 0.05)
            await broker.enqueue([_job("n4", N)])
            got = await _claim(broker, 10)
            assert _names(got) == ["n3", "n4", "low"]
            assert got[2].job.priority is L


async def priority_reported(make_broker: MakeBroker) -> None:
    """``job_info`` reports each job's priority while it waits, runs and is
    dead; ``list_dead`` and ``get_dead`` keep it, and so does ``requeue_dead``
    (the requeued jobs are claimed high, normal, low, and say so)."""
    expected = {"h": H, "n": N, "l": L}
    with trio.fail_after(LIMIT):
        async with make_broker() as broker:
            stored = await broker.enqueue([_job("l", L), _job("n", N), _job("h", H)])
            ids = {job.payload: job.id for job in stored}
            for name, level in expected.items():
                info = await broker.job_info(ids[name])
                assert info is not None and info.status is JobStatus.READY, info
                assert info.priority is level, f"job_info of a {level.name} job: {info}"
            held = await _claim(broker, 3)
            assert _names(held) == ["h", "n", "l"]
            for delivery in held:
                info = await broker.job_info(delivery.job.id)
                assert info is not None and info.status is JobStatus.IN_FLIGHT, info
                assert info.priority is expected[delivery.job.payload], info
                await broker.dead(delivery, error=f"gone {delivery.job.payload}")

            letters = await broker.list_dead("q")
            assert {d.job.payload: d.job.priority for d in letters} == expected, letters
            assert all(type(d.job.priority) is Priority for d in letters)
            everywhere = await broker.list_dead()
            assert {d.job.payload: d.job.priority for d in everywhere} == expected, everywhere
            for name, level in expected.items():
                letter = await broker.get_dead(ids[name])
                assert letter is not None and letter.job.priority is level, letter
                info = await broker.job_info(ids[name])
                assert info is not None and info.status is JobStatus.DEAD, info
                assert info.priority is level, f"job_info of a dead {level.name} job: {info}"

            # The low one first: requeued earliest, it must still wait behind the others.
            assert await broker.requeue_dead([ids["l"]]) == 1
            assert await broker.requeue_dead([ids["n"], ids["h"]]) == 2
            for name, level in expected.items():
                info = await broker.job_info(ids[name])
                assert info is not None and info.status is JobStatus.READY, info
                assert info.priority is level, f"job_info of a requeued {level.name} job: {info}"
            again = await _claim(broker, 3)
            assert _names(again) == ["h", "n", "l"]
            assert [d.job.priority for d in again] == [H, N, L]


async def _claim_into(broker: Broker, got: list[Delivery]) -> None:
    got.extend(await broker.claim("q", consumer="c", limit=5, lease=FAR, wait=10))


async def priority_wakes_claimers(make_broker: MakeBroker) -> None:
    """A claim waiting on an empty queue wakes early for a high or a low job, as
    for a normal one."""
    with trio.fail_after(LIMIT):
        async with make_broker() as broker:
            for level in (H, L):
                got: list[Delivery] = []

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_claim_into, broker, got)
                    await trio.sleep(0.2)
                    began = trio.current_time()
                    await broker.enqueue([_job(level.name, level)])
                assert _names(got) == [level.name]
                # Well before its 10 s bound: the enqueue woke it.
                assert trio.current_time() - began < 5, "the waiting claim was not woken"


async def priority_cancel_and_purge(make_broker: MakeBroker) -> None:
    """A cancelled high or low job is never claimed, nor a purged one (on a
    broker that purges); ``job_info`` sees them ready until then."""
    with trio.fail_after(LIMIT):
        async with make_broker() as broker:
            stored = await broker.enqueue(
                [_job("h0", H), _job("l0", L), _job("h1", H), _job("l1", L), _job("n0", N)]
            )
            ids = {job.payload: job.id for job in stored}
            info = await broker.job_info(ids["h0"])
            assert info is not None and info.status is JobStatus.READY
            assert await broker.cancel([ids["h0"], ids["l0"]]) == [ids["h0"], ids["l0"]]
            assert _names(await _claim(broker, 1)) == ["h1"]
            if isinstance(broker, Purgeable):
                assert await broker.purge("q", [JobStatus.READY]) == 2  # n0, l1
                assert await _claim(broker, 10) == []
                assert (await broker.stats(["q"]))["q"].ready == 0
            else:
                assert _names(await _claim(broker, 10)) == ["n0", "l1"]


@attrs.frozen
class _Round:
    """One step of the model: enqueue ``jobs`` ((priority, delay kind) each: 0
    at once, a small number of hundredths of a second, or -1 for an hour), wait
    for the short delays, then claim with each of ``claims`` (a limit, and
    whether the claimed jobs are retried at once rather than acked)."""

    jobs: list[tuple[int, int]]
    claims: list[tuple[int, bool]]


def _rounds() -> Any:
    from hypothesis import strategies as st

    levels = st.sampled_from([int(p) for p in PRIORITIES])
    delays = st.one_of(st.just(0), st.integers(1, 15), st.just(-1))
    jobs = st.lists(st.tuples(levels, delays), min_size=0, max_size=8)
    claims = st.lists(st.tuples(st.integers(1, 5), st.booleans()), min_size=1, max_size=4)
    return st.lists(st.builds(_Round, jobs, claims), min_size=1, max_size=3)


def _expected(waiting: dict[str, tuple[int, float]], limit: int, now: float) -> list[str]:
    """The ids a claim of ``limit`` takes at ``now``: the due ones by (priority
    highest first, ready time, id)."""
    due = [(-p, at, i) for i, (p, at) in waiting.items() if at <= now]
    return [i for _, _, i in sorted(due)[:limit]]


async def _run_model(make_broker: MakeBroker, rounds: list[_Round]) -> None:
    """Drive a fresh broker through ``rounds``; every claim must take exactly the
    jobs the model says: the ready ones ordered by (priority highest first,
    ready time, id), as many as the limit allows."""
    # id -> (priority, ready time): the jobs waiting, as the model sees them.
    waiting: dict[str, tuple[int, float]] = {}
    async with make_broker() as broker:
        for step in rounds:
            base = broker.now()
            jobs = [
                Job(
                    queue="q",
                    priority=priority,
                    not_before=None if delay == 0 else base + (FAR if delay < 0 else delay / 100),
                )
                for priority, delay in step.jobs
            ]
            for stored in await broker.enqueue(jobs):
                ready = stored.enqueued_at
                if stored.not_before is not None:
                    ready = max(ready, stored.not_before)
                waiting[stored.id] = (int(stored.priority), ready)
            soon = [j.not_before for j in jobs if j.not_before is not None and j.not_before < FAR]
            if soon:
                await _sleep_past(broker, max(soon) + 0.01)
            for limit, retry in step.claims:
                before = broker.now()
                got = await _claim(broker, limit)
                after = broker.now()
                # The claim looked at the clock at one instant between ``before`` and
                # ``after`` (a loaded machine can stretch that): what it took must be
                # what the model says at some such instant. Due-ness only changes at
                # a job's ready time, so those times and the two ends are every case.
                instants = [before, after] + [
                    at for _, at in waiting.values() if before < at < after
                ]
                took = [d.job.id for d in got]
                allowed = [_expected(waiting, limit, now) for now in sorted(instants)]
                assert took in allowed, (
                    f"claim(limit={limit}) took {took}, the model says"
                    f" {allowed[0]} (waiting: {waiting})"
                )
                for delivery in got:
                    priority, _ = waiting.pop(delivery.job.id)
                    assert int(delivery.job.priority) == priority
                    if retry:
                        at = broker.now()
                        await broker.retry(delivery, at=at, error="again")
                        waiting[delivery.job.id] = (priority, at)
                    else:
                        await broker.ack([(delivery, encode_result(None))])


async def priority_model(make_broker: MakeBroker) -> None:
    """Random enqueues of mixed priorities and delays, claims and retries: every
    claim takes what a reference model of the Order rule says (Hypothesis)."""
    try:
        from hypothesis import HealthCheck, given, settings
    except ModuleNotFoundError as missing:
        raise HypothesisMissing("the priority model check needs Hypothesis") from missing

    # Hypothesis runs its examples synchronously: in a thread, each example
    # calling back into this Trio run for a fresh broker.
    @settings(
        max_examples=12,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(_rounds())
    def model(rounds: list[_Round]) -> None:
        trio.from_thread.run(_run_model, make_broker, rounds)

    with trio.fail_after(LIMIT * 4):
        await trio.to_thread.run_sync(model)
