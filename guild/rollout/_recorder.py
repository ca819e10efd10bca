"""What every ``guild run`` does for rollouts: count its outcomes, and add them
to the broker's Ledger for the queues under a rollout.

:class:`OutcomeRecorder` is an instrument: it counts each finished attempt
(errors, and run time in the ``/metrics`` buckets) per queue and version (a job
of a lane is the canary's). :func:`record_outcomes` adds those counts to the
Ledger every half second, and publishes the rollout decisions it finds stored
to the process's ``/events``. Kept apart from the controller
(:mod:`guild.rollout._controller`): a run that is not a canary needs only this,
and the state machine's classes load once a rollout is first read.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

import structlog
import trio

from .._errors import BrokerUnavailable
from ..observability._events import Instrument, JobFinished, Outcome
from ..observability._tally import DURATION_BUCKETS
from ._lanes import base_of

_log = structlog.get_logger("guild.rollout")

NAMESPACE = "guild.canary:"
"""Ledger namespace prefix of a queue's outcome counts (``guild.canary:<queue>``)."""
STABLE, CANARY = "stable", "canary"
_COUNTED = (Outcome.DONE, Outcome.RETRY, Outcome.DEAD)


def namespace_of(queue: str) -> str:
    return NAMESPACE + queue


class OutcomeRecorder(Instrument):
    """Counts finished attempts per (queue, version) until :meth:`take` hands them over."""

    def __init__(self) -> None:
        self._pending: dict[tuple[str, str], dict[str, float]] = {}

    def job_finished(self, event: JobFinished) -> None:
        if event.outcome not in _COUNTED:
            return  # released and cancelled runs say nothing of the code
        base = base_of(event.job.queue)
        key = (base, CANARY) if base is not None else (event.job.queue, STABLE)
        counts = self._pending.get(key)
        if counts is None:
            counts = self._pending[key] = {}
        counts["jobs"] = counts.get("jobs", 0.0) + 1
        if event.outcome is not Outcome.DONE:
            counts["errors"] = counts.get("errors", 0.0) + 1
        counts[_bucket_name(event.duration)] = counts.get(_bucket_name(event.duration), 0.0) + 1

    def take(self) -> dict[tuple[str, str], dict[str, float]]:
        taken, self._pending = self._pending, {}
        return taken


def _bucket_name(duration: float) -> str:
    # Named by the bucket's bound, not its index: two versions of an app may run
    # guilds with different buckets, and their counts still add up right.
    index = bisect_left(DURATION_BUCKETS, duration)
    return f"le{DURATION_BUCKETS[index]:g}" if index < len(DURATION_BUCKETS) else "le_inf"


async def record_outcomes(
    broker: Any,
    recorder: OutcomeRecorder,
    *,
    every: float = 0.5,
    publish: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """Add the recorder's counts to the Ledger for queues under a rollout, every
    ``every`` seconds; publish new decisions to ``publish`` (``/events``). Runs
    until cancelled."""
    seen: dict[str, float] | None = None
    while True:
        await trio.sleep(every)
        pending = recorder.take()
        # Here, after the first wait, not at the top: a run builds the rollout
        # records' classes after its first jobs, not before.
        from ._store import load_all

        try:
            records = await load_all(broker)
            for (queue, version), counts in pending.items():
                record = records.get(queue)
                if record is not None and record.state is not None:
                    await broker.add_counts(namespace_of(queue), version, counts)
        except BrokerUnavailable as exc:
            # Those outcomes are not counted: a stage is judged on the rest.
            _log.warning("canary_counts_lost", error=str(exc))
            continue
        if publish is None:
            continue
        if seen is None:
            # Decisions made before this process came are in the records, not news.
            seen = {q: r.decisions[-1].at if r.decisions else -math.inf for q, r in records.items()}
            continue
        for queue, record in records.items():
            last = seen.get(queue, -math.inf)
            for decision in record.decisions:
                if decision.at > last:
                    publish(
                        {
                            "type": "canary",
                            "time": time.time(),
                            "queue": queue,
                            **decision.to_json(),
                        }
                    )
            if record.decisions:
                seen[queue] = record.decisions[-1].at
