"""The supervision policy where OTP's supervisor manual fixes the outcome.

Expected values are OTP's rules written out: MaxR >= 0 and MaxT > 0; more than
MaxR restarts within MaxT seconds terminates the supervisor; a child whose first
start fails is the caller's error and counts nothing; a temporary child stopped
by a sibling's restart is gone.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from guild.supervision import (
    Backoff,
    ChildState,
    GiveUp,
    IllegalTransition,
    Restart,
    RestartChildren,
    Strategy,
    SupervisorPolicy,
)

NO_BACKOFF = Backoff(initial=0.0, jitter=0.0)


class TestIntensityLimits:
    @given(period=st.one_of(st.floats(max_value=0.0), st.just(math.nan)))
    def test_a_period_that_is_not_positive_is_refused(self, period: float) -> None:
        with pytest.raises(ValueError, match="'period' must be > 0"):
            SupervisorPolicy(period=period)

    @given(max_restarts=st.integers(max_value=-1))
    def test_negative_max_restarts_is_refused(self, max_restarts: int) -> None:
        with pytest.raises(ValueError, match="'max_restarts' must be >= 0"):
            SupervisorPolicy(max_restarts=max_restarts)

    @pytest.mark.parametrize("max_restarts", [1.5, True, "3"])
    def test_max_restarts_is_a_whole_number(self, max_restarts: object) -> None:
        with pytest.raises(TypeError, match="'max_restarts' must be a whole number"):
            SupervisorPolicy(max_restarts=max_restarts)  # type: ignore[arg-type]

    @given(
        max_restarts=st.integers(min_value=0, max_value=20),
        period=st.floats(min_value=1e-9, max_value=1e6),
        now=st.floats(min_value=0.0, max_value=1e6),
    )
    def test_crashes_in_one_instant_give_up_after_max_restarts(
        self, max_restarts: int, period: float, now: float
    ) -> None:
        """However small the period, MaxR + 1 crashes at the same instant give up."""
        policy = SupervisorPolicy(max_restarts=max_restarts, period=period, backoff=NO_BACKOFF)
        policy.add("c", Restart.PERMANENT)
        policy.started("c", now)
        for n in range(1, max_restarts + 2):
            decisions = policy.crashed("c", now, 0.0, "boom")
            if n <= max_restarts:
                assert decisions == [
                    RestartChildren(stop=(), start=("c",), delay=0.0, cause="c crashed: boom")
                ]
                policy.scheduled_start("c")
                policy.started("c", now)
            else:
                assert decisions == [
                    GiveUp(restarts=max_restarts + 1, period=period, cause="c crashed: boom")
                ]


class TestFirstStartFails:
    @given(
        restart=st.sampled_from(list(Restart)),
        strategy=st.sampled_from(list(Strategy)),
        siblings=st.integers(min_value=0, max_value=4),
    )
    def test_it_is_dropped_and_counts_nothing(
        self, restart: Restart, strategy: Strategy, siblings: int
    ) -> None:
        policy = SupervisorPolicy(strategy=strategy, max_restarts=0, backoff=NO_BACKOFF)
        for i in range(siblings):
            policy.add(f"s{i}", Restart.PERMANENT)
            policy.started(f"s{i}", 0.0)
        policy.add("new", restart)
        assert policy.failed_to_start("new") is None
        assert policy.state("new") is None
        assert policy.restarts_in_period(0.0) == 0
        assert not policy.gave_up
        # The siblings were not touched, and the name is free again.
        assert [policy.state(f"s{i}") for i in range(siblings)] == [ChildState.RUNNING] * siblings
        policy.add("new", restart)
        assert policy.state("new") is ChildState.STARTING

    def test_only_a_starting_child_can_fail_to_start(self) -> None:
        policy = SupervisorPolicy()
        policy.add("c", Restart.PERMANENT)
        policy.started("c", 0.0)
        with pytest.raises(
            IllegalTransition, match="'running' cannot take event 'failed_to_start'"
        ):
            policy.failed_to_start("c")
        assert policy.state("c") is ChildState.RUNNING
        with pytest.raises(IllegalTransition, match="'absent'"):
            policy.failed_to_start("nobody")


class TestTemporaryBystander:
    @given(
        strategy=st.sampled_from([Strategy.ONE_FOR_ALL, Strategy.REST_FOR_ONE]),
        types=st.lists(st.sampled_from(list(Restart)), min_size=1, max_size=6),
        data=st.data(),
    )
    def test_temporary_siblings_stopped_by_a_restart_are_gone(
        self, strategy: Strategy, types: list[Restart], data: st.DataObject
    ) -> None:
        policy = SupervisorPolicy(strategy=strategy, max_restarts=10, backoff=NO_BACKOFF)
        names = [f"c{i}" for i in range(len(types))]
        for name, restart in zip(names, types, strict=True):
            policy.add(name, restart)
            policy.started(name, 0.0)
        restartable = [n for n, r in zip(names, types, strict=True) if r is not Restart.TEMPORARY]
        assume(restartable)
        crashing = data.draw(st.sampled_from(restartable))
        index = names.index(crashing)
        taken = names if strategy is Strategy.ONE_FOR_ALL else names[index:]
        (decision,) = policy.crashed(crashing, 1.0, 0.0, "boom")
        assert isinstance(decision, RestartChildren)
        # Written out from OTP: the others in the group stop latest first; the
        # group restarts in start order, without its temporary members.
        assert decision.stop == tuple(reversed([n for n in taken if n != crashing]))
        assert decision.start == tuple(
            n for n in taken if n == crashing or types[names.index(n)] is not Restart.TEMPORARY
        )
        for name in taken:
            if name != crashing and types[names.index(name)] is Restart.TEMPORARY:
                assert policy.state(name) is None
