"""The Trio shell around the canary state machine: figures in, decisions out.

Two pieces, each thin (what every run records for rollouts is
:mod:`guild.rollout._recorder`):

* :func:`apply`: read a queue's record and counts, feed one event to
  :func:`~guild.rollout._machine.step`, write the result back with a compare
  and set, and on a rollback hand the lane's waiting jobs back to the queue. A
  lost compare and set re-reads and re-applies, so concurrent controllers and
  operators never undo each other.
* :func:`serve_controller`, run by the canary process: starts the rollout when
  its queue has none, observes every ``tick``, and, once rolled back, keeps
  moving the lane back until its own workers have drained.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
import structlog
import trio

from .._errors import BrokerUnavailable
from ._machine import (
    CanaryDecision,
    CanaryFigures,
    CanaryPhase,
    CanaryPolicy,
    CanaryState,
    CanaryTransitionError,
    Event,
    Observe,
    Start,
    p95_of,
    step,
)
from ._recorder import CANARY, STABLE, namespace_of
from ._store import (
    CanaryRecord,
    hand_back_dead,
    lane_held,
    load,
    move_lane,
    save,
    with_decision,
)

_log = structlog.get_logger("guild.rollout")


def figures_of(counts: Mapping[str, float], baseline: Mapping[str, float]) -> CanaryFigures:
    """One version's figures since ``baseline`` (both cumulative Ledger counts)."""

    def since(name: str) -> float:
        return max(0.0, counts.get(name, 0.0) - baseline.get(name, 0.0))

    bounds = sorted(float(n[2:]) for n in counts if n.startswith("le") and n != "le_inf")
    buckets = [since(f"le{b:g}") for b in bounds] + [since("le_inf")]
    return CanaryFigures(
        jobs=int(since("jobs")),
        errors=int(since("errors")),
        p95=p95_of(bounds, buckets),
    )


def observation(
    at: float, record: CanaryRecord, counts: Mapping[str, Mapping[str, float]]
) -> Observe:
    """The :class:`Observe` event for ``record``'s current stage."""
    return Observe(
        at=at,
        canary=figures_of(counts.get(CANARY, {}), record.baseline.get(CANARY, {})),
        stable=figures_of(counts.get(STABLE, {}), record.baseline.get(STABLE, {})),
    )


async def _counts(broker: Any, queue: str) -> dict[str, dict[str, float]]:
    found: dict[str, dict[str, float]] = await broker.get_counts(namespace_of(queue))
    return found


async def apply(
    broker: Any,
    queue: str,
    event: Callable[[float, CanaryRecord, Mapping[str, Mapping[str, float]]], Event],
    *,
    policy: CanaryPolicy | None = None,
    hand_back: bool = True,
) -> tuple[CanaryRecord, CanaryDecision | None]:
    """Apply one event to ``queue``'s rollout; returns the record and the decision.

    ``event(now, record, counts)`` builds the event from what is stored now (it is
    called again after a lost compare and set). ``policy`` replaces the stored
    one when the event starts a rollout. ``hand_back=False`` leaves a rollback's
    lane to the caller (to count what it moves).

    Raises:
        CanaryTransitionError: the event does not fit the rollout's phase.
    """
    while True:
        record = await load(broker, queue)
        counts = await _counts(broker, queue)
        made = event(broker.now(), record, counts)
        if policy is not None and isinstance(made, Start):
            record = attrs.evolve(record, policy=policy)
        state, decision = step(record.policy, record.state, made)
        if decision is None:
            return record, None
        new = attrs.evolve(
            record,
            state=state,
            # Each stage (and phase) is judged on its own outcomes only.
            baseline={k: dict(v) for k, v in counts.items()},
            decisions=with_decision(record, decision),
        )
        saved = await save(broker, new)
        if saved is None:
            continue
        log_decision(queue, decision)
        if hand_back and state is not None and state.phase is CanaryPhase.ROLLED_BACK:
            moved = await move_lane(broker, queue)
            revived = await hand_back_dead(broker, queue)
            _log.info("canary_lane_moved", queue=queue, jobs=moved, dead_requeued=revived)
        return saved, decision


def log_decision(queue: str, decision: CanaryDecision) -> None:
    # "event" is structlog's own argument: the decision's is logged as "trigger".
    figures = {("trigger" if k == "event" else k): v for k, v in decision.to_json().items()}
    _log.info("canary_decision", queue=queue, **figures)


def _observe(at: float, record: CanaryRecord, counts: Mapping[str, Mapping[str, float]]) -> Event:
    return observation(at, record, counts)


def _start(at: float, record: CanaryRecord, counts: Mapping[str, Mapping[str, float]]) -> Event:
    return Start(at)


@attrs.define
class ControllerStatus:
    """What a canary process's controller knows, for its shutdown."""

    rolled_back: trio.Event = attrs.Factory(trio.Event)
    states: dict[str, CanaryState | None] = attrs.Factory(dict)


async def serve_controller(
    broker: Any,
    queues: Sequence[str],
    *,
    policy: CanaryPolicy | None = None,
    tick: float = 0.5,
    status: ControllerStatus | None = None,
    task_status: trio.TaskStatus[ControllerStatus] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Drive the rollouts of ``queues`` from the canary's side; runs until cancelled.

    A queue with no rollout (or whose last one was promoted) is started at its
    first stage with ``policy`` (the default policy when ``None``); one in
    progress is resumed as stored, so a restarted canary picks up where it was.
    A rolled-back one stays so until an operator starts it (``guild canary
    start``). ``status.rolled_back`` is set once every queue is rolled back.
    """
    status = status if status is not None else ControllerStatus()
    for queue in queues:
        record = await load(broker, queue)
        if record.state is None or record.state.phase is CanaryPhase.PROMOTED:
            with contextlib.suppress(CanaryTransitionError):
                record, _ = await apply(broker, queue, _start, policy=policy or CanaryPolicy())
        status.states[queue] = record.state
    task_status.started(status)
    while True:
        for queue in queues:
            try:
                record, _ = await apply(broker, queue, _observe)
                status.states[queue] = record.state
                if record.state is not None and record.state.phase is CanaryPhase.ROLLED_BACK:
                    # Retries and releases of jobs the canary still held wait in the lane.
                    await move_lane(broker, queue)
                    await hand_back_dead(broker, queue)
            except BrokerUnavailable as exc:
                # The workers ride out an outage on their own; so does the rollout.
                _log.warning("canary_tick_failed", queue=queue, error=str(exc))
        if all(
            s is not None and s.phase is CanaryPhase.ROLLED_BACK for s in status.states.values()
        ):
            status.rolled_back.set()
        await trio.sleep(tick)


async def drain_lanes(broker: Any, queues: Iterable[str], *, settle: float) -> int:
    """After the canary's workers stopped: move the lanes back until nothing has
    come in for ``settle`` seconds (a producer's stale view of the share)."""
    total = 0
    quiet_since = trio.current_time()
    while trio.current_time() - quiet_since < settle:
        moved = 0
        for queue in queues:
            moved += await move_lane(broker, queue)
            moved += await hand_back_dead(broker, queue)
            if await lane_held(broker, queue):
                moved += 1  # held by a lease that has yet to run out: keep waiting
        if moved:
            quiet_since = trio.current_time()
            total += moved
        await trio.sleep(0.2)
    return total
