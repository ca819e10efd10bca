"""The Trio shell on the memory broker under MockClock: two versions of an app in
one process, a producer, the controller; stage times and outcomes are exact."""

from __future__ import annotations

import itertools
import math

import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

import guild
from guild.observability._events import JobFinished, Outcome
from guild.observability._tally import DURATION_BUCKETS
from guild.rollout._controller import apply, figures_of
from guild.rollout._machine import CanaryPolicy, Pause, Rollback, Start
from guild.rollout._recorder import OutcomeRecorder, record_outcomes
from guild.rollout._serve import run_app

POLICY = CanaryPolicy(soak=5.0, min_jobs=10, p95=0.5)


def make_apps(mode: str) -> tuple[guild.Guild, guild.Guild, dict[str, str]]:
    ran: dict[str, str] = {}
    v1, v2 = guild.Guild("v1"), guild.Guild("v2")

    @v1.worker("q", retry=guild.RetryPolicy(base=0.05, max_delay=0.1))
    async def stable(job: guild.Job) -> None:
        await trio.sleep(0.01)
        ran[job.id] = "v1"

    @v2.worker("q", retry=guild.RetryPolicy(base=0.05, max_delay=0.1))
    async def canary(job: guild.Job) -> None:
        if mode == "errors" and job.payload % 5 == 0:
            raise RuntimeError("v2 is broken for this one")
        await trio.sleep(1.0 if mode == "slow" else 0.01)
        ran[job.id] = "v2"

    return v1, v2, ran


async def scenario(
    mode: str, until: float
) -> tuple[list[guild.CanaryDecision], list[str], dict[str, str], bool]:
    broker = guild.MemoryBroker()
    v1, v2, ran = make_apps(mode)
    ids: list[str] = []
    stop_v1, stop_v2 = trio.Event(), trio.Event()
    ended: list[bool] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_app, v1, broker, stop_v1)

        async def canary() -> None:
            ended.append(await run_app(v2, broker, stop_v2, canary=True, policy=POLICY))

        async def produce() -> None:
            n = 0
            while trio.current_time() < until:
                jobs = await broker.enqueue([guild.Job(queue="q", payload=n + i) for i in range(5)])
                ids.extend(j.id for j in jobs)
                n += 5
                await trio.sleep(0.05)

        nursery.start_soon(produce)
        await trio.sleep(0.5)
        nursery.start_soon(canary)
        await trio.sleep(until + 5)
        stop_v2.set()
        await trio.sleep(5)  # every job finished by now
        stop_v1.set()
    record = await guild.read_canary(broker, "q")
    return list(record.decisions), ids, ran, bool(ended and ended[0])


async def test_a_healthy_canary_walks_every_stage_on_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    decisions, ids, ran, rolled_back = await scenario("healthy", until=30.0)
    assert [(d.event, d.to_phase, d.to_share) for d in decisions] == [
        ("start", "soaking", 0.1),
        ("observe", "soaking", 0.5),
        ("observe", "soaking", 1.0),
        ("observe", "promoted", 1.0),
    ]
    start = decisions[0].at
    # Each stage advances at the first tick (0.5 s) at or past its soak (5 s).
    gaps = [b.at - a.at for a, b in itertools.pairwise(decisions)]
    assert all(5.0 <= gap <= 5.5 + 1e-9 for gap in gaps), gaps
    assert start >= 0.5
    assert not rolled_back
    assert set(ran) == set(ids)  # every job ran, none lost
    after = [i for i in ids if ran[i] == "v2"]
    assert after  # the canary did run its share


async def test_a_canary_with_errors_is_rolled_back_and_its_jobs_finish_on_v1(
    autojump_clock: trio.testing.MockClock,
) -> None:
    decisions, ids, ran, rolled_back = await scenario("errors", until=15.0)
    assert [(d.event, d.to_phase) for d in decisions] == [
        ("start", "soaking"),
        ("observe", "rolled_back"),
    ]
    bad = decisions[-1]
    assert bad.canary is not None and bad.canary.errors > 0
    assert bad.at - decisions[0].at < 10.0
    assert rolled_back
    assert set(ran) == set(ids)
    # Jobs v2 failed were retried and finished by v1 once it was rolled back.
    assert all(ran[i] == "v1" for i in ids if int(ids.index(i)) % 5 == 0)


async def test_an_operator_rollback_stops_the_canary(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = guild.MemoryBroker()
    v1, v2, ran = make_apps("healthy")
    stop = trio.Event()
    ended: list[bool] = []
    ids: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_app, v1, broker, stop)

        async def canary() -> None:
            ended.append(await run_app(v2, broker, stop, canary=True, policy=POLICY))

        nursery.start_soon(canary)
        await trio.sleep(1)
        jobs = await broker.enqueue([guild.Job(queue="q", payload=i) for i in range(200)])
        ids = [j.id for j in jobs]
        record, decision = await apply(broker, "q", lambda at, r, c: Rollback(at, "by a test"))
        assert decision is not None and decision.reason == "by a test"
        await trio.sleep(10)
        assert ended == [True]  # the canary drained and ended on its own
        stop.set()
    assert set(ran) == set(ids)
    assert record.share == 0.0


async def test_every_process_publishes_new_decisions_to_its_events(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = guild.MemoryBroker()
    recorder = OutcomeRecorder()
    seen: list[dict[str, object]] = []
    async with trio.open_nursery() as nursery:
        await apply(broker, "q", lambda at, r, c: Start(at), policy=POLICY)
        nursery.start_soon(lambda: record_outcomes(broker, recorder, publish=seen.append))
        await trio.sleep(1)
        assert seen == []  # what was decided before the process came is not news
        await apply(broker, "q", lambda at, r, c: Pause(at))
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert [(m["type"], m["queue"], m["event"], m["to_phase"]) for m in seen] == [
        ("canary", "q", "pause", "paused")
    ]
    assert seen[0]["reason"] == "paused by an operator"


@given(
    st.lists(
        st.tuples(
            st.booleans(),
            st.sampled_from([Outcome.DONE, Outcome.RETRY, Outcome.DEAD, Outcome.RELEASED]),
            st.floats(0, 1000),
        ),
        max_size=60,
    ),
    st.integers(0, 60),
)
def test_recorded_figures_match_a_count_by_hand(
    runs: list[tuple[bool, Outcome, float]], split: int
) -> None:
    recorder = OutcomeRecorder()
    for is_canary, outcome, duration in runs:
        job = guild.Job(queue="q@canary" if is_canary else "q")
        recorder.job_finished(JobFinished(worker="w", job=job, outcome=outcome, duration=duration))

    # Cumulative counts, with a baseline taken part way: the figures are of the rest.
    def cumulative(
        part: list[tuple[bool, Outcome, float]],
    ) -> dict[tuple[str, str], dict[str, float]]:
        r = OutcomeRecorder()
        for is_canary, outcome, duration in part:
            job = guild.Job(queue="q@canary" if is_canary else "q")
            r.job_finished(JobFinished(worker="w", job=job, outcome=outcome, duration=duration))
        return r.take()

    total, before = recorder.take(), cumulative(runs[:split])
    for version, is_canary in (("canary", True), ("stable", False)):
        got = figures_of(total.get(("q", version), {}), before.get(("q", version), {}))
        counted = [
            (o, d) for c, o, d in runs[split:] if c is is_canary and o is not Outcome.RELEASED
        ]
        assert got.jobs == len(counted)
        assert got.errors == sum(o is not Outcome.DONE for o, _ in counted)
        # By hand: the bucket bound of the nearest-rank 95th percentile.
        if not counted:
            assert got.p95 is None
            continue
        bounds = sorted(next((b for b in DURATION_BUCKETS if d <= b), math.inf) for _, d in counted)
        assert got.p95 == bounds[math.ceil(0.95 * len(bounds)) - 1]
