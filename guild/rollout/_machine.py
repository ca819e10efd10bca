"""The canary rollout state machine: events in, a new state and a decision out.

No I/O and no clock: ``at`` is passed in with every event (the broker's clock)
and only stamps the state and its decisions. The Trio shell
(:mod:`guild.rollout._controller`) reads figures from the broker, feeds them in,
and writes back what comes out.

Rules of this file (tests/rollout/test_machine.py checks each with hypothesis
against a reference written out separately):

* A rollout walks ``policy.stages`` (10 %, 50 %, 100 % by default) one stage at a
  time, from the first: no event moves it more than one stage, and every stage
  is soaked (or promoted by hand) before the next.
* :class:`Observe` carries the canary's and the stable version's figures over
  the current stage. While ``soaking``, a canary that breaches a bound (with at
  least ``policy.min_jobs`` outcomes to judge by) is rolled back at once; one
  within bounds, with ``min_jobs`` outcomes and ``policy.soak`` seconds at the
  stage, advances; otherwise nothing changes. In any other phase an observation
  decides nothing: ticks come all the time.
* Operator events (:class:`Start`, :class:`Promote`, :class:`Pause`,
  :class:`Rollback`) that do not fit the phase raise :class:`CanaryTransitionError`
  naming phase and event, and leave the state as it was.
* A rollback wins a race with a promotion: ``rolled_back`` takes no promotion
  (and no observation), so whichever lands first, the rollout ends rolled back.
* ``rolled_back`` holds share 0 until a :class:`Start`; ``promoted`` holds 100 %.
"""

from __future__ import annotations

import enum
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from .._errors import GuildError
from .._exports import publish

DEFAULT_STAGES: tuple[float, ...] = (0.1, 0.5, 1.0)


class CanaryTransitionError(GuildError, ValueError):
    """An operator event that does not fit the rollout's phase (nothing changed)."""

    def __init__(self, phase: str, event: str, why: str) -> None:
        super().__init__(f"cannot {event} a canary rollout that is {phase}: {why}")
        self.phase = phase
        self.event = event


class CanaryPhase(enum.Enum):
    """Where a rollout is."""

    SOAKING = "soaking"
    """Holding its stage's share, judged at every observation."""
    PAUSED = "paused"
    """Holding its stage's share by an operator's hand; not judged, not advanced."""
    PROMOTED = "promoted"
    """Done: the canary takes every new job."""
    ROLLED_BACK = "rolled_back"
    """Undone: the canary takes no job until started again."""


def _check_stages(_: object, __: attrs.Attribute[Any], stages: tuple[float, ...]) -> None:
    if not stages:
        raise ValueError("stages must not be empty")
    if any(not (0 < s <= 1) for s in stages):
        raise ValueError(f"stages must be shares in (0, 1], got {list(stages)}")
    if any(b <= a for a, b in itertools.pairwise(stages)):
        raise ValueError(f"stages must rise, got {list(stages)}")
    if stages[-1] != 1.0:
        raise ValueError(f"the last stage must be 1.0 (every job), got {stages[-1]}")


def _as_tuple(stages: Iterable[float]) -> tuple[float, ...]:
    return tuple(float(s) for s in stages)


def _positive(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a positive number, got {value!r}")


def _non_negative(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a number >= 0, got {value!r}")


@attrs.frozen(kw_only=True)
class CanaryPolicy:
    """How a canary rollout moves and what stops it.

    Attributes:
        stages: the canary's share of new jobs at each stage, rising, ending at 1.0.
        soak: seconds a stage must hold, within bounds, before the next.
        error_rate: how far the canary's error rate may exceed the stable
            version's (0.01: one point; with a stable version that never fails,
            the original design's alert line, errors above 1 %).
        p95: seconds the canary's 95th-percentile run time may reach when the
            stable version's is lower (the alert line, latency above 5 s); a
            canary no slower than the stable version is never held to it.
        min_jobs: canary outcomes a stage needs before it is judged at all.
    """

    stages: tuple[float, ...] = attrs.field(
        default=DEFAULT_STAGES, converter=_as_tuple, validator=_check_stages
    )
    soak: float = attrs.field(default=60.0, validator=_positive)
    error_rate: float = attrs.field(default=0.01, validator=_non_negative)
    p95: float = attrs.field(default=5.0, validator=_positive)
    min_jobs: int = attrs.field(default=20, validator=attrs.validators.ge(1))


@attrs.frozen(kw_only=True)
class CanaryFigures:
    """One version's outcomes over the current stage."""

    jobs: int = 0
    errors: int = 0
    p95: float | None = None
    """Seconds (a histogram bucket's upper bound); ``None`` with no job, ``inf`` past the last."""

    @property
    def error_rate(self) -> float:
        return self.errors / self.jobs if self.jobs else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"jobs": self.jobs, "errors": self.errors, "p95": _num(self.p95)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CanaryFigures:
        p95 = data.get("p95")
        return cls(
            jobs=int(data["jobs"]),
            errors=int(data["errors"]),
            p95=None if p95 is None else float(p95),
        )


def _num(value: float | None) -> float | str | None:
    # JSON has no infinity: kept as text, read back by float().
    return "inf" if value is not None and math.isinf(value) else value


@attrs.frozen(kw_only=True)
class CanaryState:
    """A rollout's state: plain data, stored in the broker as JSON."""

    phase: CanaryPhase
    stage: int
    """Index into ``policy.stages`` (the last one when promoted; kept when rolled back)."""
    since: float
    """When the current stage (or phase) began, in the broker's clock."""

    def share(self, policy: CanaryPolicy) -> float:
        """The canary's share of new jobs in this state."""
        if self.phase is CanaryPhase.ROLLED_BACK:
            return 0.0
        if self.phase is CanaryPhase.PROMOTED:
            return 1.0
        return policy.stages[self.stage]

    def to_json(self) -> dict[str, Any]:
        return {"phase": self.phase.value, "stage": self.stage, "since": self.since}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CanaryState:
        return cls(
            phase=CanaryPhase(data["phase"]), stage=int(data["stage"]), since=float(data["since"])
        )


@attrs.frozen(kw_only=True)
class CanaryDecision:
    """One change of a rollout, with the figures behind it."""

    at: float
    event: str
    """``start``, ``promote``, ``pause``, ``rollback`` (an operator's) or ``observe``."""
    from_phase: str
    to_phase: str
    from_share: float
    to_share: float
    reason: str
    canary: CanaryFigures | None = None
    stable: CanaryFigures | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "event": self.event,
            "from_phase": self.from_phase,
            "to_phase": self.to_phase,
            "from_share": self.from_share,
            "to_share": self.to_share,
            "reason": self.reason,
            "canary": None if self.canary is None else self.canary.to_json(),
            "stable": None if self.stable is None else self.stable.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CanaryDecision:
        canary, stable = data.get("canary"), data.get("stable")
        return cls(
            at=float(data["at"]),
            event=str(data["event"]),
            from_phase=str(data["from_phase"]),
            to_phase=str(data["to_phase"]),
            from_share=float(data["from_share"]),
            to_share=float(data["to_share"]),
            reason=str(data["reason"]),
            canary=None if canary is None else CanaryFigures.from_json(canary),
            stable=None if stable is None else CanaryFigures.from_json(stable),
        )


# --- events --------------------------------------------------------------------


@attrs.frozen
class Start:
    """Begin a rollout at the first stage (or resume a paused one at its stage)."""

    at: float


@attrs.frozen
class Promote:
    """An operator moves the rollout one stage on now, soaked or not."""

    at: float


@attrs.frozen
class Pause:
    """An operator holds the current share: no judging, no advancing."""

    at: float


@attrs.frozen
class Rollback:
    """Share 0 now; the canary's waiting jobs go back to the stable version."""

    at: float
    reason: str = "by an operator"


@attrs.frozen
class Observe:
    """The versions' figures over the current stage, read at ``at``."""

    at: float
    canary: CanaryFigures
    stable: CanaryFigures


Event = Start | Promote | Pause | Rollback | Observe


def breach(policy: CanaryPolicy, canary: CanaryFigures, stable: CanaryFigures) -> str | None:
    """Why the canary is out of bounds of the stable version, or ``None``."""
    allowed_errors = stable.error_rate + policy.error_rate
    if canary.error_rate > allowed_errors:
        return (
            f"error rate {canary.error_rate:.1%} above {allowed_errors:.1%}"
            f" (stable {stable.error_rate:.1%} + {policy.error_rate:.1%})"
        )
    if canary.p95 is not None:
        allowed_p95 = max(policy.p95, stable.p95 or 0.0)
        if canary.p95 > allowed_p95:
            return f"p95 {canary.p95:g} s above {allowed_p95:g} s"
    return None


def step(
    policy: CanaryPolicy, state: CanaryState | None, event: Event
) -> tuple[CanaryState | None, CanaryDecision | None]:
    """The state after ``event``, and the decision it made (``None``: nothing changed).

    ``state`` is ``None`` for a queue with no rollout yet.

    Raises:
        CanaryTransitionError: an operator event that does not fit the phase.
    """
    phase = "none" if state is None else state.phase.value
    if isinstance(event, Observe):
        if state is None or state.phase is not CanaryPhase.SOAKING:
            return state, None
        return _observe(policy, state, event)
    if isinstance(event, Start):
        if state is not None and state.phase is CanaryPhase.SOAKING:
            raise CanaryTransitionError(phase, "start", "it is rolling out already")
        if state is not None and state.phase is CanaryPhase.PAUSED:
            new = CanaryState(phase=CanaryPhase.SOAKING, stage=state.stage, since=event.at)
            return new, _decided(policy, state, new, event, "start", "resumed by an operator")
        new = CanaryState(phase=CanaryPhase.SOAKING, stage=0, since=event.at)
        return new, _decided(policy, state, new, event, "start", "started")
    if state is None:
        raise CanaryTransitionError(phase, _name(event), "no rollout was started")
    if isinstance(event, Rollback):
        if state.phase is CanaryPhase.ROLLED_BACK:
            raise CanaryTransitionError(phase, "rollback", "it is rolled back already")
        new = CanaryState(phase=CanaryPhase.ROLLED_BACK, stage=state.stage, since=event.at)
        return new, _decided(policy, state, new, event, "rollback", event.reason)
    if state.phase in (CanaryPhase.ROLLED_BACK, CanaryPhase.PROMOTED):
        raise CanaryTransitionError(phase, _name(event), "it is over; start a new one")
    if isinstance(event, Pause):
        if state.phase is CanaryPhase.PAUSED:
            raise CanaryTransitionError(phase, "pause", "it is paused already")
        new = CanaryState(phase=CanaryPhase.PAUSED, stage=state.stage, since=event.at)
        return new, _decided(policy, state, new, event, "pause", "paused by an operator")
    new = _next_stage(policy, state, event.at)
    return new, _decided(policy, state, new, event, "promote", "promoted by an operator")


def _name(event: Event) -> str:
    return type(event).__name__.lower()


def _next_stage(policy: CanaryPolicy, state: CanaryState, at: float) -> CanaryState:
    if state.stage + 1 >= len(policy.stages):
        return CanaryState(phase=CanaryPhase.PROMOTED, stage=state.stage, since=at)
    return CanaryState(phase=CanaryPhase.SOAKING, stage=state.stage + 1, since=at)


def _observe(
    policy: CanaryPolicy, state: CanaryState, event: Observe
) -> tuple[CanaryState, CanaryDecision | None]:
    if event.canary.jobs < policy.min_jobs:
        return state, None
    why = breach(policy, event.canary, event.stable)
    if why is not None:
        new = CanaryState(phase=CanaryPhase.ROLLED_BACK, stage=state.stage, since=event.at)
        return new, _decided(policy, state, new, event, "observe", why)
    soaked = event.at - state.since
    if soaked < policy.soak:
        return state, None
    new = _next_stage(policy, state, event.at)
    reason = (
        f"soaked {soaked:g} s within bounds: error rate {event.canary.error_rate:.1%}"
        f" (stable {event.stable.error_rate:.1%}), p95 {_seconds(event.canary.p95)}"
        f" (stable {_seconds(event.stable.p95)})"
    )
    return new, _decided(policy, state, new, event, "observe", reason)


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:g} s"


def _decided(
    policy: CanaryPolicy,
    old: CanaryState | None,
    new: CanaryState,
    event: Event,
    name: str,
    reason: str,
) -> CanaryDecision:
    figures = event if isinstance(event, Observe) else None
    return CanaryDecision(
        at=event.at,
        event=name,
        from_phase="none" if old is None else old.phase.value,
        to_phase=new.phase.value,
        from_share=0.0 if old is None else old.share(policy),
        to_share=new.share(policy),
        reason=reason,
        canary=None if figures is None else figures.canary,
        stable=None if figures is None else figures.stable,
    )


def p95_of(buckets: Sequence[float], counts: Sequence[float]) -> float | None:
    """The 95th percentile of a histogram, as the upper bound of its bucket.

    ``counts[i]`` jobs took at most ``buckets[i]`` seconds (and more than the
    bound before); ``counts`` may hold one more entry, for jobs past the last
    bound (their percentile is ``inf``). ``None`` when the histogram is empty.
    """
    total = sum(counts)
    if total <= 0:
        return None
    # The smallest bound with at least 95 % of the jobs at or under it.
    needed = 0.95 * total
    running = 0.0
    for index, count in enumerate(counts):
        running += count
        if running >= needed - 1e-9:
            return buckets[index] if index < len(buckets) else math.inf
    return math.inf


# Reprs, tracebacks and pickles name guild.X (see guild._exports).
publish(globals())
