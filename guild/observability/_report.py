"""What one process tells about itself: ``/health``'s extra sections and the
``/process`` report a ``guild run`` parent merges (see :mod:`._fleet`).

``/health`` of any process lists the jobs running now with their age and the
recent failures. A child of ``guild run --processes N`` also answers
``GET /process`` on its private socket: its workers' figures (window counts,
totals, seconds since the last claim) and the durations of the attempts in
the window, which the parent concatenates into the whole run's true
quantiles.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from ._dashboard import running

if TYPE_CHECKING:
    from ._http import ObservabilityApp

FAILURES_SHOWN = 20
"""Recent failures ``/health`` lists, newest first."""


def running_jobs(owner: ObservabilityApp) -> list[dict[str, Any]]:
    """The jobs running now, oldest first, each with its age in seconds."""
    now = time.time()
    rows = running(owner.app.running_jobs(), now, owner.tracker)
    for row in rows:
        row["age"] = round(now - row["started"], 3)
    return rows


def recent_failures(owner: ObservabilityApp) -> list[dict[str, Any]]:
    """The last failed attempts (retried or dead), newest first; their errors
    are exception messages, hidden when the server redacts them."""
    rows = owner.tracker.failures()[:FAILURES_SHOWN]
    if owner.redact:
        rows = [{**row, "error": "redacted" if row.get("error") else None} for row in rows]
    return rows


async def process_report(owner: ObservabilityApp) -> dict[str, Any]:
    """This process's report to its ``guild run`` parent."""
    health, now = await owner.health()
    workers = {}
    for name, view in sorted(health.workers.items()):
        workers[name] = {
            "queue": view.queue,
            "state": view.state,
            "finished": view.finished,
            "failed": view.failed,
            "active": view.active,
            "concurrency": view.concurrency,
            "idle_for": None if view.last_claim is None else max(0.0, now - view.last_claim),
            "restarts": view.restarts,
            "last_error": view.last_error,
            "processed": view.processed,
            "failed_total": view.failed_total,
            "dead_total": view.dead_total,
            "broker_error": view.broker_error,
            "broker_damaged": view.broker_damaged,
            "alive": view.alive,
        }
    return {
        "pid": os.getpid(),
        "app": owner.app.name,
        "status": health.status.value,
        "workers": workers,
        "samples": owner.observability.monitor.recent(now),
        "running": running_jobs(owner),
        "failures": recent_failures(owner),
        "periodic": owner.app.upcoming(),
    }
