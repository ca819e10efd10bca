"""Hypothesis strategies for guild values: payloads, jobs, fault plans."""

from __future__ import annotations

from typing import Any

import attrs
from hypothesis import strategies as st

from .._job import Job

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)


def payloads(max_leaves: int = 10) -> st.SearchStrategy[Any]:
    """JSON values as a producer would send them (nested lists and objects)."""
    return st.recursive(
        JSON_SCALARS,
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=8), children, max_size=4)
        ),
        max_leaves=max_leaves,
    )


queue_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_-", min_size=1, max_size=12)


def jobs(queue: str | st.SearchStrategy[str] = queue_names) -> st.SearchStrategy[Job]:
    """Valid jobs (as a producer builds them, before any claim)."""
    queues = st.just(queue) if isinstance(queue, str) else queue
    return st.builds(
        Job,
        queue=queues,
        payload=payloads(),
        max_attempts=st.integers(1, 6),
        timeout=st.none() | st.floats(0.1, 60),
        key=st.none() | st.text(min_size=1, max_size=8),
    )


@attrs.frozen(kw_only=True)
class FaultPlan:
    """What goes wrong during a simulated run.

    Attributes:
        crash_rate: share of handler calls that raise.
        dependency_rate: share of handler calls that raise ``DependencyFailure``.
        slow_rate: share of handler calls that take ``slow_seconds``.
        hang_rate: share of handler calls that never return (the job timeout ends them).
        outages: broker outage windows, as ``(start, duration)`` in seconds from the start.
        kills: times (seconds from the start) at which the app is torn down abruptly
            and started again, as if its process had been killed.
    """

    crash_rate: float = 0.0
    dependency_rate: float = 0.0
    slow_rate: float = 0.0
    slow_seconds: float = 5.0
    hang_rate: float = 0.0
    outages: tuple[tuple[float, float], ...] = ()
    kills: tuple[float, ...] = ()


def fault_plans(horizon: float = 300.0) -> st.SearchStrategy[FaultPlan]:
    """Fault plans whose outages and kills fall inside ``horizon`` seconds."""
    rate = st.floats(0, 0.4)
    moments = st.floats(1, horizon, allow_nan=False)
    return st.builds(
        FaultPlan,
        crash_rate=rate,
        dependency_rate=st.floats(0, 0.1),
        slow_rate=st.floats(0, 0.2),
        slow_seconds=st.floats(0.5, 30),
        hang_rate=st.floats(0, 0.05),
        outages=st.lists(st.tuples(moments, st.floats(0.5, 30)), max_size=3).map(tuple),
        kills=st.lists(moments, max_size=3).map(lambda ts: tuple(sorted(ts))),
    )
