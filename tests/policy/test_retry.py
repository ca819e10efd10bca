"""The retry schedule, as a pure function, over every input hypothesis can think of."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guild import Dead, Job, RetryAt, RetryPolicy

policies = st.builds(
    RetryPolicy,
    base=st.floats(0, 100),
    factor=st.floats(1, 10),
    max_delay=st.floats(0, 10_000),
    jitter=st.floats(0, 1),
)
rands = st.floats(0, 1, exclude_max=True)


def _job(attempt: int, max_attempts: int) -> Job:
    return Job(queue="q", attempt=attempt, max_attempts=max_attempts)


class TestRetryPolicy:
    """Exponential, capped, jittered below the cap, and dead after max_attempts."""

    @given(policies, st.integers(1, 10_000), rands)
    def test_delay_is_within_the_cap_and_the_jitter_band(
        self, policy: RetryPolicy, attempt: int, rand: float
    ) -> None:
        delay = policy.delay(attempt, rand)
        try:
            ideal = min(policy.base * policy.factor ** (attempt - 1), policy.max_delay)
        except OverflowError:
            ideal = policy.max_delay if policy.base > 0 else 0.0
        assert 0 <= delay <= policy.max_delay
        assert ideal * (1 - policy.jitter) - 1e-9 <= delay <= ideal + 1e-9

    @given(policies, st.integers(1, 50), rands)
    def test_delay_never_shrinks_with_attempts_at_equal_rand(
        self, policy: RetryPolicy, attempt: int, rand: float
    ) -> None:
        assert policy.delay(attempt + 1, rand) >= policy.delay(attempt, rand) - 1e-9

    @given(policies, st.integers(1, 20), st.integers(1, 20), st.floats(0, 1e9), rands)
    def test_dead_exactly_when_attempts_are_spent(
        self, policy: RetryPolicy, attempt: int, max_attempts: int, now: float, rand: float
    ) -> None:
        decision = policy.decide(_job(attempt, max_attempts), now, rand)
        if attempt >= max_attempts:
            assert isinstance(decision, Dead)
            assert f"{attempt} of {max_attempts}" in decision.reason
        else:
            assert isinstance(decision, RetryAt)
            assert decision.at == now + decision.delay

    @given(policies, st.floats(0, 1e6), rands)
    def test_requested_delay_is_taken_as_is(
        self, policy: RetryPolicy, after: float, rand: float
    ) -> None:
        decision = policy.decide(_job(1, 5), 100.0, rand, after=after)
        assert decision == RetryAt(at=100.0 + after, delay=after)

    def test_invalid_policies_cannot_be_built(self) -> None:
        with pytest.raises(ValueError, match="jitter"):
            RetryPolicy(jitter=1.5)
        with pytest.raises(ValueError, match="factor"):
            RetryPolicy(factor=0.5)
        with pytest.raises(ValueError, match="base"):
            RetryPolicy(base=-1)


class TestWrittenOut:
    """The documented defaults and a few schedules, written out rather than read back."""

    def test_defaults(self) -> None:
        policy = RetryPolicy()
        # base 1 s, factor 2, capped at 300 s, jitter 0.2: with rand 0 no jitter applies.
        assert [policy.delay(n, 0.0) for n in range(1, 11)] == [
            1.0,
            2.0,
            4.0,
            8.0,
            16.0,
            32.0,
            64.0,
            128.0,
            256.0,
            300.0,
        ]
        # rand shortens by up to 20 %: 0.5 of the jitter band is 10 %.
        assert policy.delay(1, 0.5) == pytest.approx(0.9)
        assert policy.delay(12, 0.5) == pytest.approx(270.0)
        assert policy.delay(1, 0.999999) == pytest.approx(0.8, abs=1e-6)

    @pytest.mark.parametrize(
        ("policy", "attempt", "rand", "delay"),
        [
            (RetryPolicy(base=3.0, factor=3.0, max_delay=1000.0, jitter=0.0), 4, 0.7, 81.0),
            (RetryPolicy(base=3.0, factor=1.0, max_delay=1000.0, jitter=0.0), 9, 0.7, 3.0),
            (RetryPolicy(base=10.0, factor=2.0, max_delay=50.0, jitter=0.5), 3, 0.5, 30.0),
            (RetryPolicy(base=0.5, factor=4.0, max_delay=7.0, jitter=1.0), 2, 0.25, 1.5),
            (RetryPolicy(base=0.0, factor=2.0, max_delay=7.0, jitter=0.0), 5, 0.0, 0.0),
        ],
    )
    def test_delays(self, policy: RetryPolicy, attempt: int, rand: float, delay: float) -> None:
        assert policy.delay(attempt, rand) == pytest.approx(delay)

    def test_decisions(self) -> None:
        policy = RetryPolicy(jitter=0.0)
        assert policy.decide(_job(1, 3), 100.0, 0.3) == RetryAt(at=101.0, delay=1.0)
        assert policy.decide(_job(2, 3), 100.0, 0.3) == RetryAt(at=102.0, delay=2.0)
        assert policy.decide(_job(3, 3), 100.0, 0.3) == Dead("gave up after 3 of 3 attempts")
        assert policy.decide(_job(4, 3), 100.0, 0.3) == Dead("gave up after 4 of 3 attempts")
        # Retry(after=…) is taken as asked, never negative, and still dead on the last attempt.
        assert policy.decide(_job(1, 3), 100.0, 0.3, after=0.25) == RetryAt(at=100.25, delay=0.25)
        assert policy.decide(_job(1, 3), 100.0, 0.3, after=-5.0) == RetryAt(at=100.0, delay=0.0)
        assert policy.decide(_job(3, 3), 100.0, 0.3, after=1.0) == Dead(
            "gave up after 3 of 3 attempts"
        )

    def test_a_job_without_its_own_limit_takes_the_workers(self) -> None:
        policy = RetryPolicy(jitter=0.0)
        unlimited = Job(queue="q", attempt=4, max_attempts=None)
        assert policy.decide(unlimited, 0.0, 0.0) == RetryAt(at=8.0, delay=8.0)
        last = Job(queue="q", attempt=5, max_attempts=None)
        assert policy.decide(last, 0.0, 0.0) == Dead("gave up after 5 of 5 attempts")
        assert policy.decide(last, 0.0, 0.0, max_attempts=6) == RetryAt(at=16.0, delay=16.0)

    @pytest.mark.parametrize(
        ("bad", "message"),
        [
            ({"base": -0.1}, "base must be >= 0"),
            ({"base": float("nan")}, "base must be >= 0"),
            ({"max_delay": -1.0}, "max_delay must be >= 0"),
            ({"max_delay": float("nan")}, "max_delay must be >= 0"),
            ({"factor": 0.99}, "factor"),
            ({"jitter": -0.01}, "jitter"),
            ({"jitter": 1.01}, "jitter"),
        ],
    )
    def test_validators(self, bad: dict[str, float], message: str) -> None:
        with pytest.raises(ValueError, match=message):
            RetryPolicy(**bad)

    def test_boundaries_are_accepted(self) -> None:
        edge = RetryPolicy(base=0.0, factor=1.0, max_delay=0.0, jitter=1.0)
        assert edge.delay(5, 0.5) == 0.0
        assert RetryPolicy(jitter=0.0).delay(1, 0.9) == 1.0

    def test_fields_are_keyword_only(self) -> None:
        with pytest.raises(TypeError):
            RetryPolicy(1.0)  # type: ignore[call-arg]
