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
