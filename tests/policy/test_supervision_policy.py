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


class TestHalfOpenAgain:
    """A trial that crashes reopens the circuit, and the next cooldown brings another trial."""

    def test_a_second_trial_follows_a_crashed_first_one(self) -> None:
        circuit = Circuit(threshold=1, window=60.0, cooldown=10.0, healthy_after=5.0)
        policy = _circuit_policy(circuit)
        assert policy.crashed("dep", 0.0, 0.0, "down") == [OpenCircuit("dep", 10.0)]
        trial = RestartChildren(stop=(), start=("dep",), delay=0.0, cause="dep half-open trial")
        assert policy.tick(10.0) == [trial]
        policy.scheduled_start("dep")
        policy.started("dep", 10.0)
        assert policy.crashed("dep", 12.0, 0.0, "still down") == [OpenCircuit("dep", 22.0)]
        # Down again, but not for ever: the next cooldown ends in another trial.
        assert policy.next_deadline() == 22.0
        assert policy.tick(21.9) == []
        assert policy.tick(22.0) == [trial]
        assert policy.tick(23.0) == []  # still exactly one per cooldown
        assert policy.next_deadline() is None
        policy.scheduled_start("dep")
        # The first trial's start time is gone: nothing closes before this one is up.
        assert policy.next_deadline() is None
        assert policy.tick(22.0) == []
        assert policy.started("dep", 22.0) == []
        assert policy.state("dep") is ChildState.HALF_OPEN
        assert policy.next_deadline() == 27.0
        assert policy.tick(27.0) == [CloseCircuit("dep")]
        assert policy.state("dep") is ChildState.RUNNING

    def test_a_trial_that_fails_before_it_is_up_reopens_and_retries(self) -> None:
        circuit = Circuit(threshold=1, window=60.0, cooldown=10.0, healthy_after=5.0)
        policy = _circuit_policy(circuit)
        policy.crashed("dep", 0.0, 0.0, "down")
        policy.tick(10.0)
        policy.scheduled_start("dep")  # the trial's start raises before `started`
        assert policy.state("dep") is ChildState.HALF_OPEN
        assert policy.next_deadline() is None  # not up, so nothing to close
        assert policy.tick(100.0) == []
        assert policy.crashed("dep", 10.5, 0.0, "no route") == [OpenCircuit("dep", 20.5)]
        assert policy.tick(20.5) == [
            RestartChildren(stop=(), start=("dep",), delay=0.0, cause="dep half-open trial")
        ]

    def test_many_failed_trials_never_give_up(self) -> None:
        circuit = Circuit(threshold=1, window=60.0, cooldown=10.0)
        policy = _circuit_policy(circuit)
        policy.crashed("dep", 0.0, 0.0, "down")
        now = 0.0
        for _ in range(20):
            now += 10.0
            (trial,) = policy.tick(now)
            assert isinstance(trial, RestartChildren) and trial.start == ("dep",)
            policy.scheduled_start("dep")
            policy.started("dep", now)
            assert policy.crashed("dep", now + 1.0, 0.0, "down") == [OpenCircuit("dep", now + 11.0)]
            now += 1.0
        assert not policy.gave_up


class TestWrittenOut:
    """Defaults, validators and names, written out from the documented rules."""

    def test_default_policy_gives_up_on_the_fourth_restart_in_five_seconds(self) -> None:
        policy = SupervisorPolicy()
        policy.add("c0", Restart.PERMANENT)
        policy.started("c0", 0.0)
        delays = []
        for now in (0.0, 1.0, 2.0):
            (decision,) = policy.crashed("c0", now, 0.0, "boom")
            assert isinstance(decision, RestartChildren)
            assert (decision.stop, decision.start, decision.cause) == (
                (),
                ("c0",),
                "c0 crashed: boom",
            )
            delays.append(decision.delay)
            _bring_up(policy, ["c0"], now)
        # Default backoff: 0.1 s doubling, rand 0 takes no jitter off.
        assert delays == pytest.approx([0.1, 0.2, 0.4])
        assert policy.crashed("c0", 4.9, 0.0, "boom") == [
            GiveUp(restarts=4, period=5.0, cause="c0 crashed: boom")
        ]
        assert policy.gave_up

    def test_default_period_is_five_seconds(self) -> None:
        policy = SupervisorPolicy()
        policy.add("c0", Restart.PERMANENT)
        policy.started("c0", 0.0)
        for now in (0.0, 1.0, 2.0, 5.0):  # the restart at 0.0 has left the window at 5.0
            assert isinstance(policy.crashed("c0", now, 0.0, "x")[0], RestartChildren)
            _bring_up(policy, ["c0"], now)
        assert policy.restarts_in_period(5.0) == 3
        assert policy.restarts_in_period(6.0) == 2
        assert policy.restarts_in_period(7.0) == 1
        assert policy.restarts_in_period(10.0) == 0

    def test_default_backoff(self) -> None:
        backoff = Backoff()
        assert [backoff.delay(n, 0.0) for n in range(1, 11)] == pytest.approx(
            [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0]
        )
        # Jitter 0.2: rand 0.5 takes 10 % off, rand near 1 nearly 20 %.
        assert backoff.delay(1, 0.5) == pytest.approx(0.09)
        assert backoff.delay(20, 0.999999) == pytest.approx(24.0, abs=1e-4)

    def test_default_circuit(self) -> None:
        policy = SupervisorPolicy(backoff=NO_BACKOFF)
        policy.add("dep", Restart.PERMANENT, Circuit())
        policy.started("dep", 0.0)
        # Five crashes within 60 s open it for 60 s; then a trial that stays up 5 s closes it.
        for now in (0.0, 10.0, 20.0, 30.0):
            assert isinstance(policy.crashed("dep", now, 0.0, "x")[0], RestartChildren)
            _bring_up(policy, ["dep"], now)
        assert policy.crashed("dep", 40.0, 0.0, "x") == [OpenCircuit("dep", 100.0)]
        assert policy.tick(99.9) == []
        policy.tick(100.0)
        policy.scheduled_start("dep")
        policy.started("dep", 100.0)
        assert policy.tick(104.9) == []
        assert policy.tick(105.0) == [CloseCircuit("dep")]

    def test_default_circuit_window_is_sixty_seconds(self) -> None:
        policy = SupervisorPolicy(backoff=NO_BACKOFF)
        policy.add("dep", Restart.PERMANENT, Circuit())
        policy.started("dep", 0.0)
        for now in (0.0, 15.0, 30.0, 45.0, 60.0):  # the crash at 0.0 has left at 60.0
            assert isinstance(policy.crashed("dep", now, 0.0, "x")[0], RestartChildren)
            _bring_up(policy, ["dep"], now)
        assert policy.crashed("dep", 61.0, 0.0, "x") == [OpenCircuit("dep", 121.0)]

    def test_circuit_crashes_wait_the_nth_delay(self) -> None:
        policy = SupervisorPolicy(
            max_restarts=1, backoff=Backoff(initial=1.0, multiplier=3.0, jitter=0.0)
        )
        policy.add("dep", Restart.PERMANENT, Circuit(threshold=4, window=100.0))
        policy.started("dep", 0.0)
        delays = []
        for now in (0.0, 1.0, 2.0):
            (decision,) = policy.crashed("dep", now, 0.0, "x")
            assert isinstance(decision, RestartChildren)
            delays.append(decision.delay)
            _bring_up(policy, ["dep"], now)
        assert delays == [1.0, 3.0, 9.0]
        # The circuit, not the intensity, limits it: no restart was counted.
        assert policy.restarts_in_period(2.0) == 0

    def test_exits_and_crashes_by_restart_type(self) -> None:
        policy = _policy(
            Strategy.ONE_FOR_ONE, [Restart.PERMANENT, Restart.TRANSIENT, Restart.TEMPORARY]
        )
        (again,) = policy.exited("c0", 1.0, 0.0)
        assert again == RestartChildren(stop=(), start=("c0",), delay=0.0, cause="c0 exited")
        assert policy.exited("c1", 1.0, 0.0) == [Remove("c1")]
        assert policy.crashed("c2", 1.0, 0.0, "x") == [Remove("c2")]
        assert (policy.state("c1"), policy.state("c2")) == (None, None)
        assert policy.children["c0"].last_error is None

    def test_a_crash_records_its_error(self) -> None:
        policy = _policy(Strategy.ONE_FOR_ONE, [Restart.TRANSIENT])
        (decision,) = policy.crashed("c0", 1.0, 0.0, "disk full")
        assert isinstance(decision, RestartChildren)
        assert decision.cause == "c0 crashed: disk full"
        assert policy.children["c0"].last_error == "disk full"

    def test_starting_and_half_open_siblings_are_stopped_too(self) -> None:
        policy = SupervisorPolicy(strategy=Strategy.ONE_FOR_ALL, backoff=NO_BACKOFF)
        policy.add("a", Restart.PERMANENT)
        policy.started("a", 0.0)
        policy.add("b", Restart.PERMANENT, Circuit(threshold=1, cooldown=1.0))
        policy.started("b", 0.0)
        policy.add("c", Restart.PERMANENT)  # added, not yet up
        policy.crashed("b", 0.0, 0.0, "x")
        policy.tick(1.0)
        policy.scheduled_start("b")
        policy.started("b", 1.0)
        assert policy.state("b") is ChildState.HALF_OPEN
        (decision,) = policy.crashed("a", 2.0, 0.0, "x")
        assert decision == RestartChildren(
            stop=("c", "b"), start=("a", "b", "c"), delay=0.0, cause="a crashed: x"
        )
        assert [policy.state(n) for n in "abc"] == [ChildState.RESTARTING] * 3

    @pytest.mark.parametrize(
        ("bad", "field"),
        [
            ({"initial": -0.1}, "initial"),
            ({"maximum": -0.1}, "maximum"),
            ({"multiplier": 0.99}, "multiplier"),
            ({"jitter": -0.01}, "jitter"),
            ({"jitter": 1.01}, "jitter"),
        ],
    )
    def test_backoff_validators(self, bad: dict[str, float], field: str) -> None:
        with pytest.raises(ValueError, match=field):
            Backoff(**bad)

    @pytest.mark.parametrize(
        ("bad", "field"),
        [
            ({"threshold": 0}, "threshold"),
            ({"window": 0.0}, "window"),
            ({"cooldown": -0.1}, "cooldown"),
            ({"healthy_after": -0.1}, "healthy_after"),
        ],
    )
    def test_circuit_validators(self, bad: dict[str, float], field: str) -> None:
        with pytest.raises(ValueError, match=field):
            Circuit(**bad)  # type: ignore[arg-type]

    def test_backoff_and_circuit_fields_are_keyword_only(self) -> None:
        with pytest.raises(TypeError):
            Backoff(0.1)  # type: ignore[misc]
        with pytest.raises(TypeError):
            Circuit(5)  # type: ignore[misc]

    def test_validator_boundaries_are_accepted(self) -> None:
        assert Backoff(initial=0.0, maximum=0.0, multiplier=1.0, jitter=1.0).delay(3, 0.5) == 0.0
        assert Backoff(initial=2.0, multiplier=1.0, jitter=0.0).delay(9, 0.5) == 2.0
        Circuit(threshold=1, window=0.001, cooldown=0.0, healthy_after=0.0)

    def test_names(self) -> None:
        assert [r.value for r in Restart] == ["permanent", "transient", "temporary"]
        assert [s.value for s in Strategy] == ["one_for_one", "one_for_all", "rest_for_one"]
        # The health policy and the logs know children by these names.
        assert {s.value for s in ChildState} >= {
            "starting",
            "running",
            "restarting",
            "open",
            "half_open",
        }


class TestIllegalEvents:
    """An event a state does not allow raises, names both, and changes nothing."""

    def _in(self, state: ChildState) -> SupervisorPolicy:
        policy = SupervisorPolicy(backoff=NO_BACKOFF, max_restarts=100)
        policy.add("c", Restart.PERMANENT, Circuit(threshold=1, cooldown=1.0))
        if state is ChildState.STARTING:
            return policy
        policy.started("c", 0.0)
        if state is ChildState.RUNNING:
            return policy
        policy.crashed("c", 0.0, 0.0, "x")  # threshold 1: open
        if state is ChildState.OPEN:
            return policy
        policy.tick(1.0)
        policy.scheduled_start("c")
        policy.started("c", 1.0)
        assert policy.state("c") is ChildState.HALF_OPEN
        return policy

    def _restarting(self) -> SupervisorPolicy:
        policy = SupervisorPolicy(backoff=NO_BACKOFF)
        policy.add("c", Restart.PERMANENT)
        policy.started("c", 0.0)
        policy.crashed("c", 0.0, 0.0, "x")
        assert policy.state("c") is ChildState.RESTARTING
        return policy

    @pytest.mark.parametrize("state", [ChildState.RUNNING, ChildState.OPEN])
    def test_started(self, state: ChildState) -> None:
        policy = self._in(state)
        with pytest.raises(IllegalTransition, match=f"'c' in state '{state.value}'.*'started'"):
            policy.started("c", 5.0)
        assert policy.state("c") is state

    def test_started_while_restarting(self) -> None:
        policy = self._restarting()
        with pytest.raises(IllegalTransition, match="in state 'restarting'"):
            policy.started("c", 5.0)
        assert policy.state("c") is ChildState.RESTARTING

    @pytest.mark.parametrize(
        "state", [ChildState.STARTING, ChildState.RUNNING, ChildState.HALF_OPEN]
    )
    def test_scheduled_start(self, state: ChildState) -> None:
        policy = self._in(state)
        with pytest.raises(IllegalTransition, match=f"in state '{state.value}'.*'scheduled_start'"):
            policy.scheduled_start("c")
        assert policy.state("c") is state

    def test_crash_and_exit_while_down(self) -> None:
        for policy, state in (
            (self._restarting(), ChildState.RESTARTING),
            (self._in(ChildState.OPEN), ChildState.OPEN),
        ):
            with pytest.raises(IllegalTransition, match="'crashed'"):
                policy.crashed("c", 5.0, 0.0, "x")
            with pytest.raises(IllegalTransition, match="'exited'"):
                policy.exited("c", 5.0, 0.0)
            assert policy.state("c") is state
            assert not policy.gave_up

    def test_an_absent_child(self) -> None:
        policy = SupervisorPolicy()
        with pytest.raises(
            IllegalTransition, match="child 'x' in state 'absent' cannot take event 'started'"
        ):
            policy.started("x", 0.0)
