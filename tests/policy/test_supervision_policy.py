"""The supervision policy, without a clock: random event sequences against OTP's rules."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guild.supervision import (
    Backoff,
    ChildState,
    Circuit,
    CloseCircuit,
    GiveUp,
    IllegalTransition,
    OpenCircuit,
    Remove,
    Restart,
    RestartChildren,
    Strategy,
    SupervisorPolicy,
)

NO_BACKOFF = Backoff(initial=0.0, jitter=0.0)
restart_types = st.sampled_from(list(Restart))
strategies = st.sampled_from(list(Strategy))


def _policy(
    strategy: Strategy, types: Sequence[Restart], max_restarts: int = 3, period: float = 5.0
) -> SupervisorPolicy:
    policy = SupervisorPolicy(
        strategy=strategy, max_restarts=max_restarts, period=period, backoff=NO_BACKOFF
    )
    for index, restart in enumerate(types):
        policy.add(f"c{index}", restart)
        policy.started(f"c{index}", 0.0)
    return policy


def _bring_up(policy: SupervisorPolicy, names: Sequence[str], now: float) -> None:
    # What the shell does with a RestartChildren once its delay is over.
    for name in names:
        if policy.state(name) in (ChildState.RESTARTING, ChildState.OPEN):
            policy.scheduled_start(name)
            policy.started(name, now)


class TestIntensity:
    """Restarts never exceed intensity inside any window; exceeding it always gives up."""

    @given(
        data=st.data(),
        strategy=strategies,
        types=st.lists(restart_types, min_size=1, max_size=5),
        max_restarts=st.integers(min_value=1, max_value=5),
        period=st.floats(min_value=0.5, max_value=20.0),
    )
    def test_random_event_sequences(
        self,
        data: st.DataObject,
        strategy: Strategy,
        types: list[Restart],
        max_restarts: int,
        period: float,
    ) -> None:
        policy = _policy(strategy, types, max_restarts, period)
        now = 0.0
        restarts_at: list[float] = []
        for _ in range(data.draw(st.integers(min_value=1, max_value=60))):
            live = [n for n, c in policy.children.items() if c.state is ChildState.RUNNING]
            if not live:
                break
            now += data.draw(st.floats(min_value=0.0, max_value=period / 2))
            name = data.draw(st.sampled_from(sorted(live)))
            restart = policy.children[name].restart
            if data.draw(st.booleans()):
                decisions = policy.crashed(name, now, 0.5, "boom")
                restarted = restart is not Restart.TEMPORARY
            else:
                decisions = policy.exited(name, now, 0.5)
                restarted = restart is Restart.PERMANENT
            in_window = sum(1 for t in restarts_at if t > now - period)
            if not restarted:
                assert decisions == [Remove(name)]
                assert policy.state(name) is None
                continue
            (decision,) = decisions
            if isinstance(decision, GiveUp):
                assert in_window == max_restarts, "gave up before intensity was exceeded"
                assert policy.gave_up
                return
            assert isinstance(decision, RestartChildren)
            assert in_window < max_restarts, "restarted past the intensity"
            restarts_at.append(now)
            assert policy.restarts_in_period(now) == in_window + 1
            _bring_up(policy, decision.start, now)

    def test_failed_restart_attempts_count(self) -> None:
        policy = _policy(Strategy.ONE_FOR_ONE, [Restart.PERMANENT], max_restarts=2)
        assert isinstance(policy.crashed("c0", 0.0, 0.0, "x")[0], RestartChildren)
        policy.scheduled_start("c0")  # the restart fails before the child comes up
        assert isinstance(policy.crashed("c0", 0.1, 0.0, "x")[0], RestartChildren)
        policy.scheduled_start("c0")
        assert isinstance(policy.crashed("c0", 0.2, 0.0, "x")[0], GiveUp)

    def test_the_window_slides(self) -> None:
        policy = _policy(Strategy.ONE_FOR_ONE, [Restart.PERMANENT], max_restarts=1, period=5.0)
        assert isinstance(policy.crashed("c0", 0.0, 0.0, "x")[0], RestartChildren)
        _bring_up(policy, ["c0"], 0.0)
        # Exactly `period` later the first restart has left the window.
        assert isinstance(policy.crashed("c0", 5.0, 0.0, "x")[0], RestartChildren)
        _bring_up(policy, ["c0"], 5.0)
        assert isinstance(policy.crashed("c0", 9.9, 0.0, "x")[0], GiveUp)


class TestStrategies:
    """one_for_all and rest_for_one restart exactly the right set, in the right order."""

    @given(
        strategy=strategies,
        types=st.lists(restart_types, min_size=1, max_size=7),
        data=st.data(),
    )
    def test_restart_set_and_order(
        self, strategy: Strategy, types: list[Restart], data: st.DataObject
    ) -> None:
        policy = _policy(strategy, types, max_restarts=100)
        names = [f"c{i}" for i in range(len(types))]
        candidates = [i for i, t in enumerate(types) if t is not Restart.TEMPORARY]
        if not candidates:
            return
        crashed = data.draw(st.sampled_from(candidates))
        (decision,) = policy.crashed(names[crashed], 1.0, 0.0, "boom")
        assert isinstance(decision, RestartChildren)
        if strategy is Strategy.ONE_FOR_ONE:
            group = [crashed]
        elif strategy is Strategy.ONE_FOR_ALL:
            group = list(range(len(types)))
        else:
            group = list(range(crashed, len(types)))
        siblings = [i for i in group if i != crashed]
        # Siblings stop latest-started first; everyone but temporary siblings comes back
        # in start order.
        assert decision.stop == tuple(names[i] for i in reversed(siblings))
        assert decision.start == tuple(
            names[i] for i in group if i == crashed or types[i] is not Restart.TEMPORARY
        )
        for i in siblings:
            expected = None if types[i] is Restart.TEMPORARY else ChildState.RESTARTING
            assert policy.state(names[i]) is expected
        untouched = [i for i in range(len(types)) if i not in group]
        assert all(policy.state(names[i]) is ChildState.RUNNING for i in untouched)

    def test_siblings_already_restarting_are_started_not_stopped(self) -> None:
        policy = _policy(Strategy.ONE_FOR_ALL, [Restart.PERMANENT] * 3, max_restarts=10)
        (first,) = policy.crashed("c1", 0.0, 0.0, "x")
        assert isinstance(first, RestartChildren)
        assert first.stop == ("c2", "c0")
        _bring_up(policy, ["c0"], 0.0)  # c1 and c2 are still waiting for their start
        (second,) = policy.crashed("c0", 0.1, 0.0, "x")
        assert isinstance(second, RestartChildren)
        assert second.stop == ()
        assert second.start == ("c0",)


class TestRestartTypes:
    @given(restart=restart_types, crashed=st.booleans())
    def test_who_comes_back(self, restart: Restart, crashed: bool) -> None:
        policy = _policy(Strategy.ONE_FOR_ONE, [restart])
        if crashed:
            decisions = policy.crashed("c0", 0.0, 0.0, "x")
            comes_back = restart is not Restart.TEMPORARY
        else:
            decisions = policy.exited("c0", 0.0, 0.0)
            comes_back = restart is Restart.PERMANENT
        assert isinstance(decisions[0], RestartChildren) is comes_back
        assert (decisions == [Remove("c0")]) is (not comes_back)


class TestBackoff:
    @given(
        initial=st.floats(min_value=0.0, max_value=10.0),
        maximum=st.floats(min_value=0.0, max_value=100.0),
        multiplier=st.floats(min_value=1.0, max_value=10.0),
        jitter=st.floats(min_value=0.0, max_value=1.0),
        n=st.integers(min_value=1, max_value=10_000),
        rand=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
    )
    def test_bounded_and_jittered_down(
        self,
        initial: float,
        maximum: float,
        multiplier: float,
        jitter: float,
        n: int,
        rand: float,
    ) -> None:
        backoff = Backoff(initial=initial, maximum=maximum, multiplier=multiplier, jitter=jitter)
        delay = backoff.delay(n, rand)
        try:
            ceiling = min(initial * multiplier ** (n - 1), maximum)
        except OverflowError:
            ceiling = maximum if initial > 0 else 0.0
        assert 0.0 <= delay <= ceiling + 1e-9
        assert delay >= ceiling * (1 - jitter) - 1e-9

    def test_delays_grow_with_restarts_in_the_window(self) -> None:
        policy = SupervisorPolicy(
            max_restarts=10, period=100.0, backoff=Backoff(initial=1.0, jitter=0.0, maximum=5.0)
        )
        policy.add("c", Restart.PERMANENT)
        policy.started("c", 0.0)
        delays = []
        for step in range(5):
            (decision,) = policy.crashed("c", float(step), 0.0, "x")
            assert isinstance(decision, RestartChildren)
            delays.append(decision.delay)
            _bring_up(policy, ["c"], float(step))
        assert delays == [1.0, 2.0, 4.0, 5.0, 5.0]


def _circuit_policy(circuit: Circuit) -> SupervisorPolicy:
    policy = SupervisorPolicy(max_restarts=1, period=1000.0, backoff=NO_BACKOFF)
    policy.add("dep", Restart.PERMANENT, circuit)
    policy.started("dep", 0.0)
    return policy


class TestCircuit:
    """closed → open after threshold crashes → half-open (one trial) → closed or open."""

    @given(
        threshold=st.integers(min_value=1, max_value=8),
        cooldown=st.floats(min_value=0.0, max_value=100.0),
        ticks=st.lists(st.floats(min_value=0.0, max_value=300.0), max_size=20),
    )
    def test_half_open_admits_exactly_one_trial(
        self, threshold: int, cooldown: float, ticks: list[float]
    ) -> None:
        circuit = Circuit(threshold=threshold, window=1000.0, cooldown=cooldown)
        policy = _circuit_policy(circuit)
        now = 0.0
        for n in range(threshold):
            decisions = policy.crashed("dep", now, 0.0, "down")
            if n < threshold - 1:
                assert isinstance(decisions[0], RestartChildren)
                _bring_up(policy, ["dep"], now)
        # Crashes of a child with a circuit never make the supervisor give up, even
        # with max_restarts=1.
        assert decisions == [OpenCircuit("dep", now + cooldown)]
        assert not policy.gave_up
        trials = []
        for t in sorted(ticks):
            for decision in policy.tick(t):
                assert t >= now + cooldown, "a trial before the cooldown ended"
                trials.append(decision)
        assert len(trials) == (1 if any(t >= now + cooldown for t in ticks) else 0)
        assert all(
            isinstance(d, RestartChildren) and d.start == ("dep",) and d.stop == () for d in trials
        )

    def test_trial_that_stays_up_closes_the_circuit(self) -> None:
        circuit = Circuit(threshold=2, window=60.0, cooldown=10.0, healthy_after=5.0)
        policy = _circuit_policy(circuit)
        policy.crashed("dep", 0.0, 0.0, "down")
        _bring_up(policy, ["dep"], 0.0)
        assert policy.crashed("dep", 1.0, 0.0, "down") == [OpenCircuit("dep", 11.0)]
        assert policy.next_deadline() == 11.0
        assert policy.tick(10.9) == []
        (trial,) = policy.tick(11.0)
        assert isinstance(trial, RestartChildren)
        policy.scheduled_start("dep")
        policy.started("dep", 11.0)
        assert policy.state("dep") is ChildState.HALF_OPEN
        assert policy.next_deadline() == 16.0
        assert policy.tick(15.9) == []
        assert policy.tick(16.0) == [CloseCircuit("dep")]
        assert policy.state("dep") is ChildState.RUNNING
        # Closed again: it takes `threshold` new crashes to open it.
        assert isinstance(policy.crashed("dep", 17.0, 0.0, "down")[0], RestartChildren)

    def test_trial_that_crashes_opens_it_again(self) -> None:
        circuit = Circuit(threshold=1, window=60.0, cooldown=10.0)
        policy = _circuit_policy(circuit)
        assert policy.crashed("dep", 0.0, 0.0, "down") == [OpenCircuit("dep", 10.0)]
        policy.tick(10.0)
        policy.scheduled_start("dep")
        policy.started("dep", 10.0)
        assert policy.crashed("dep", 12.0, 0.0, "still down") == [OpenCircuit("dep", 22.0)]
        assert policy.state("dep") is ChildState.OPEN

    def test_old_crashes_leave_the_window(self) -> None:
        circuit = Circuit(threshold=2, window=10.0, cooldown=5.0)
        policy = _circuit_policy(circuit)
        policy.crashed("dep", 0.0, 0.0, "x")
        _bring_up(policy, ["dep"], 0.0)
        assert isinstance(policy.crashed("dep", 10.0, 0.0, "x")[0], RestartChildren)


class TestTransitions:
    def test_illegal_event_changes_nothing(self) -> None:
        policy = _policy(Strategy.ONE_FOR_ONE, [Restart.PERMANENT])
        with pytest.raises(IllegalTransition, match="'c0' in state 'running'"):
            policy.scheduled_start("c0")
        with pytest.raises(IllegalTransition, match="absent"):
            policy.crashed("nobody", 0.0, 0.0, "x")
        assert policy.state("c0") is ChildState.RUNNING

    def test_duplicate_names_are_refused(self) -> None:
        policy = _policy(Strategy.ONE_FOR_ONE, [Restart.PERMANENT])
        with pytest.raises(ValueError, match="exists already"):
            policy.add("c0", Restart.PERMANENT)

    def test_stop_order_is_reverse_start_order(self) -> None:
        policy = _policy(Strategy.ONE_FOR_ONE, [Restart.PERMANENT] * 4)
        assert policy.running_in_stop_order() == ["c3", "c2", "c1", "c0"]
