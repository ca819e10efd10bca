"""The canary state machine, against rules written out here (not taken from the code)."""

from __future__ import annotations

import contextlib
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guild.rollout._machine import (
    CanaryDecision,
    CanaryFigures,
    CanaryPhase,
    CanaryPolicy,
    CanaryState,
    CanaryTransitionError,
    Event,
    Observe,
    Pause,
    Promote,
    Rollback,
    Start,
    p95_of,
    step,
)

POLICY = CanaryPolicy(stages=(0.1, 0.5, 1.0), soak=10.0, error_rate=0.01, p95=5.0, min_jobs=20)
BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0)

figures = st.builds(
    lambda jobs, errors, p95: CanaryFigures(jobs=jobs, errors=min(errors, jobs), p95=p95),
    st.integers(0, 200),
    st.integers(0, 200),
    st.one_of(st.none(), st.sampled_from([0.05, 0.5, 1.0, 5.0, 7.5, math.inf])),
)


def _events(draw: st.DrawFn) -> list[Event]:
    at = 0.0
    out: list[Event] = []
    for kind in draw(st.lists(st.sampled_from("SPQRO"), max_size=40)):
        at += draw(st.floats(0, 30))
        if kind == "S":
            out.append(Start(at))
        elif kind == "P":
            out.append(Promote(at))
        elif kind == "Q":
            out.append(Pause(at))
        elif kind == "R":
            out.append(Rollback(at))
        else:
            out.append(Observe(at, draw(figures), draw(figures)))
    return out


events = st.composite(_events)()


def expected_observe(state: CanaryState, event: Observe) -> str:
    """What an observation must do, by the rules in the module's docstring: written
    out again here as plain arithmetic."""
    canary, stable = event.canary, event.stable
    if canary.jobs < POLICY.min_jobs:
        return "nothing"
    canary_rate = canary.errors / canary.jobs
    stable_rate = stable.errors / stable.jobs if stable.jobs else 0.0
    if canary_rate > stable_rate + POLICY.error_rate:
        return "rollback"
    stable_p95 = stable.p95 if stable.p95 is not None else 0.0
    if canary.p95 is not None and canary.p95 > max(POLICY.p95, stable_p95):
        return "rollback"
    if event.at - state.since >= POLICY.soak:
        return "advance"
    return "nothing"


def run(events: list[Event]) -> list[tuple[CanaryState | None, Event, CanaryState | None, bool]]:
    """Each step: state before, event, state after, whether it was refused."""
    state: CanaryState | None = None
    trace = []
    for event in events:
        try:
            new, _ = step(POLICY, state, event)
        except CanaryTransitionError:
            trace.append((state, event, state, True))
            continue
        trace.append((state, event, new, False))
        state = new
    return trace


@given(events)
@settings(max_examples=300)
def test_no_stage_is_skipped(evs: list[Event]) -> None:
    shares_since_start: list[float] = []
    for before, event, after, refused in run(evs):
        if refused or after is None:
            continue
        if isinstance(event, Start) and (before is None or before.phase is not CanaryPhase.PAUSED):
            assert after.phase is CanaryPhase.SOAKING and after.stage == 0
            shares_since_start = [0.1]
            continue
        assert before is not None
        if after.phase in (CanaryPhase.SOAKING, CanaryPhase.PAUSED):
            assert after.stage in (before.stage, before.stage + 1)
            if after.stage == before.stage + 1:
                assert before.phase in (CanaryPhase.SOAKING, CanaryPhase.PAUSED)
        if after.phase is CanaryPhase.PROMOTED and before.phase is not CanaryPhase.PROMOTED:
            assert before.stage == len(POLICY.stages) - 1
        share = after.share(POLICY)
        if share > 0 and (not shares_since_start or share != shares_since_start[-1]):
            shares_since_start.append(share)
        # The shares a rollout has held are the stages, in order, from the first.
        assert shares_since_start == list(POLICY.stages[: len(shares_since_start)])


@given(events)
@settings(max_examples=300)
def test_observations_follow_the_written_rules(evs: list[Event]) -> None:
    for before, event, after, refused in run(evs):
        if not isinstance(event, Observe):
            continue
        assert not refused
        if before is None or before.phase is not CanaryPhase.SOAKING:
            assert after == before
            continue
        want = expected_observe(before, event)
        if want == "nothing":
            assert after == before
        elif want == "rollback":
            assert after is not None and after.phase is CanaryPhase.ROLLED_BACK
            assert after.share(POLICY) == 0.0
        else:
            assert after is not None
            if before.stage == len(POLICY.stages) - 1:
                assert after.phase is CanaryPhase.PROMOTED
            else:
                assert (after.phase, after.stage) == (CanaryPhase.SOAKING, before.stage + 1)


@given(events)
@settings(max_examples=300)
def test_a_refused_event_changes_nothing_and_says_why(evs: list[Event]) -> None:
    for before, event, _, refused in run(evs):
        if not refused:
            continue
        with pytest.raises(CanaryTransitionError) as caught:
            step(POLICY, before, event)
        phase = "none" if before is None else before.phase.value
        assert phase in str(caught.value)
        assert type(event).__name__.lower() in str(caught.value)


def _promotions(state: CanaryState, at: float) -> list[Event]:
    healthy = CanaryFigures(jobs=100, errors=0, p95=0.1)
    return [Promote(at), Observe(at, healthy, healthy)]


@given(events, st.booleans(), st.booleans())
@settings(max_examples=300)
def test_a_rollback_wins_a_race_with_a_promotion(
    evs: list[Event], rollback_first: bool, by_observation: bool
) -> None:
    trace = run(evs)
    state = trace[-1][2] if trace else None
    if state is None or state.phase not in (CanaryPhase.SOAKING, CanaryPhase.PAUSED):
        return
    at = state.since + POLICY.soak + 1
    promote = _promotions(state, at)[1 if by_observation else 0]
    race: list[Event] = (
        [Rollback(at + 1), promote] if rollback_first else [promote, Rollback(at + 1)]
    )
    for event in race:
        with contextlib.suppress(CanaryTransitionError):
            state, _ = step(POLICY, state, event)
    assert state is not None and state.phase is CanaryPhase.ROLLED_BACK
    assert state.share(POLICY) == 0.0


def test_a_healthy_walk_and_its_decisions() -> None:
    healthy = CanaryFigures(jobs=50, errors=0, p95=0.1)
    state, decision = step(POLICY, None, Start(0.0))
    assert state == CanaryState(phase=CanaryPhase.SOAKING, stage=0, since=0.0)
    assert decision is not None and (decision.from_share, decision.to_share) == (0.0, 0.1)
    state, decision = step(POLICY, state, Observe(5.0, healthy, healthy))
    assert decision is None  # not soaked yet
    state, decision = step(POLICY, state, Observe(10.0, healthy, healthy))
    assert state is not None and state.share(POLICY) == 0.5
    assert decision is not None and decision.canary == healthy
    assert "soaked 10 s" in decision.reason
    state, _ = step(POLICY, state, Observe(20.0, healthy, healthy))
    state, decision = step(POLICY, state, Observe(30.0, healthy, healthy))
    assert state is not None and state.phase is CanaryPhase.PROMOTED and state.share(POLICY) == 1.0
    assert decision is not None and decision.to_phase == "promoted"
    assert CanaryDecision.from_json(decision.to_json()) == decision


def test_a_bad_canary_is_rolled_back_with_its_figures() -> None:
    state, _ = step(POLICY, None, Start(0.0))
    bad = CanaryFigures(jobs=40, errors=8, p95=0.1)  # 20 % errors
    stable = CanaryFigures(jobs=400, errors=0, p95=0.1)
    state, decision = step(POLICY, state, Observe(1.0, bad, stable))
    assert state is not None and state.phase is CanaryPhase.ROLLED_BACK
    assert decision is not None
    assert decision.reason == "error rate 20.0% above 1.0% (stable 0.0% + 1.0%)"
    slow = CanaryFigures(jobs=40, errors=0, p95=7.5)
    state, _ = step(POLICY, None, Start(0.0))
    state, decision = step(POLICY, state, Observe(1.0, slow, stable))
    assert decision is not None and decision.reason == "p95 7.5 s above 5 s"


@pytest.mark.parametrize(
    ("stages", "why"),
    [((), "empty"), ((0.5, 0.1, 1.0), "rise"), ((0.1, 0.5), "last stage"), ((0.0, 1.0), "(0, 1]")],
)
def test_bad_stages_are_refused(stages: tuple[float, ...], why: str) -> None:
    with pytest.raises(ValueError, match=f".*{__import__('re').escape(why)}"):
        CanaryPolicy(stages=stages)


@given(st.lists(st.integers(0, 30), min_size=len(BUCKETS) + 1, max_size=len(BUCKETS) + 1))
def test_p95_matches_a_brute_force_over_the_samples(counts: list[int]) -> None:
    bounds = [*BUCKETS, math.inf]
    samples = sorted(bound for bound, n in zip(bounds, counts, strict=True) for _ in range(n))
    if not samples:
        assert p95_of(BUCKETS, counts) is None
        return
    # The nearest-rank 95th percentile: the ceil(0.95 n)-th smallest sample.
    rank = math.ceil(0.95 * len(samples))
    assert p95_of(BUCKETS, counts) == samples[rank - 1]
