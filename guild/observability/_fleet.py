"""One view of a ``guild run --processes N``: the children's reports in, the
run's ``/health`` out. Pure; no I/O, no clock (``now`` is an argument).

Each child answers ``GET /process`` on its private socket (see
:mod:`._report`); the parent (:mod:`._fleet_http`) gathers every report and
merges them here:

* a worker present in several processes is one worker of the run: counts and
  jobs in flight add up, its state is the worst any process reports, it is
  idle since the most recent claim of any process, and its p50/p95/p99 are the
  true quantiles of the union of every process's recent durations;
* the merged workers, the broker's counts (read by the parent itself) and its
  issues go through the same :func:`assess` as a single process, so the
  thresholds mean the same for one process or many;
* a ``process:<index>`` check per child says whether it answered: one that is
  down or silent is *degraded* (the parent is restarting it, or will);
* ``processes`` keeps each child's own figures; ``totals`` sums them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from .._job import QueueStats
from ..brokers._protocol import BrokerIssue
from ._health import (
    CLAIMING_STATES,
    DEGRADED_STATES,
    Check,
    Snapshot,
    Status,
    Thresholds,
    WorkerView,
    _worker_json,
    assess,
)
from ._quantiles import summary

FAILURES_SHOWN = 20
"""Recent failures the run's ``/health`` lists, newest first, over every process."""


@attrs.frozen(kw_only=True)
class Member:
    """One child as the parent sees it.

    Attributes:
        index: its place in the fleet (``process-<index>``; a restart keeps it).
        pid: its current (or last) process id; ``None`` before it first started.
        up: it is running now.
        restarts: how many times the parent started this index again.
        report: its ``/process`` answer (``None``: down, or it did not answer).
        error: why there is no report.
    """

    index: int
    pid: int | None
    up: bool
    restarts: int = 0
    report: Mapping[str, Any] | None = None
    error: str | None = None


def _severity(state: str) -> int:
    if state in CLAIMING_STATES:
        return 0
    return 1 if state in DEGRADED_STATES else 2


def merge_workers(reports: Sequence[Mapping[str, Any]], now: float) -> dict[str, WorkerView]:
    """The run's view of each worker, from the reports of the processes that answered."""
    names = sorted({name for report in reports for name in report.get("workers", {})})
    views = {}
    for name in names:
        parts = [r["workers"][name] for r in reports if name in r.get("workers", {})]
        samples = [d for r in reports for d in r.get("samples", {}).get(name, ())]
        quantiles = summary(samples)
        idles = [p["idle_for"] for p in parts if p.get("idle_for") is not None]
        concurrencies = [p["concurrency"] for p in parts if p.get("concurrency") is not None]
        worst = max(parts, key=lambda p: _severity(p["state"]))
        broker = next((p for p in parts if p.get("broker_error")), None)
        views[name] = WorkerView(
            name=name,
            queue=parts[0]["queue"],
            state=worst["state"],
            finished=sum(p["finished"] for p in parts),
            failed=sum(p["failed"] for p in parts),
            p50=quantiles["p50"],
            p95=quantiles["p95"],
            p99=quantiles["p99"],
            active=sum(p["active"] for p in parts),
            concurrency=sum(concurrencies) if concurrencies else None,
            last_claim=now - min(idles) if idles else None,
            restarts=sum(p["restarts"] for p in parts),
            last_error=next((p["last_error"] for p in parts if p.get("last_error")), None),
            processed=sum(p["processed"] for p in parts),
            failed_total=sum(p["failed_total"] for p in parts),
            dead_total=sum(p["dead_total"] for p in parts),
            broker_error=broker["broker_error"] if broker else None,
            broker_damaged=bool(broker and broker.get("broker_damaged")),
            alive=all(p["alive"] for p in parts),
        )
    return views


def _process_check(member: Member) -> Check:
    if member.report is not None:
        return Check(name=f"process:{member.index}", status=Status.HEALTHY, value="up")
    detail = member.error or ("not running; being restarted" if not member.up else "no answer")
    return Check(
        name=f"process:{member.index}",
        status=Status.DEGRADED,
        value="up" if member.up else "down",
        detail=detail,
    )


def _totals(views: Mapping[str, WorkerView]) -> dict[str, int]:
    return {
        "processed": sum(v.processed for v in views.values()),
        "failed": sum(v.failed_total for v in views.values()),
        "dead": sum(v.dead_total for v in views.values()),
        "active": sum(v.active for v in views.values()),
    }


def fleet_health(
    app: str,
    members: Sequence[Member],
    *,
    queues: Mapping[str, QueueStats] | None,
    broker_error: str | None,
    issues: tuple[BrokerIssue, ...],
    memory: float | None,
    thresholds: Thresholds,
    now: float,
) -> tuple[dict[str, Any], int]:
    """The run's ``/health`` body and its HTTP status (see the module rules)."""
    answered = [m for m in members if m.report is not None]
    reports = [m.report for m in answered if m.report is not None]
    views = merge_workers(reports, now)
    health = assess(
        Snapshot(
            workers=views, queues=queues, broker_error=broker_error, memory=memory, issues=issues
        ),
        thresholds,
        now,
    )
    process_checks = [_process_check(m) for m in members]
    status = max([health.status, *(c.status for c in process_checks)], key=lambda s: s.severity)
    body = health.to_json(now)
    body["status"] = status.value
    for check in process_checks:
        body["checks"][check.name] = {
            "status": check.status.value,
            "value": check.value,
            "limit": check.limit,
            "detail": check.detail,
        }
    processes: dict[str, Any] = {}
    running: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    for member in members:
        own = merge_workers([member.report], now) if member.report is not None else {}
        processes[str(member.index)] = {
            "pid": member.pid,
            "up": member.up,
            "restarts": member.restarts,
            "status": None if member.report is None else member.report.get("status"),
            "error": None if member.report is not None else _process_check(member).detail,
            "workers": {name: _worker_json(view, now) for name, view in sorted(own.items())},
            "totals": _totals(own),
        }
        if member.report is not None:
            running += [{**row, "process": member.index} for row in member.report["running"]]
            failures += [{**row, "process": member.index} for row in member.report["failures"]]
    running.sort(key=lambda row: (row["started"], row["id"]))
    failures.sort(key=lambda row: row["time"], reverse=True)
    merged = {
        "app": app,
        **body,
        "totals": _totals(views),
        "processes": processes,
        "running": running,
        "failures": failures[:FAILURES_SHOWN],
    }
    # Every process runs the same app, so the same schedules: one answer says them.
    upcoming = next((r["periodic"] for r in reports if r.get("periodic")), None)
    if upcoming:
        merged["periodic"] = upcoming
    return merged, 503 if status is Status.UNHEALTHY else 200


def dashboard_workers(
    body: Mapping[str, Any], members: Sequence[Member]
) -> dict[str, dict[str, Any]]:
    """The dashboard's worker table for the whole run, from :func:`fleet_health`'s body.

    Each worker is the run's merged view with its ``circuit``, its
    ``concurrency`` summed over the processes that run it, and ``processes``:
    the worker as each of those processes sees it (process index to its row).
    """
    workers: dict[str, dict[str, Any]] = {}
    for name, merged in body["workers"].items():
        state = merged["state"]
        concurrencies = [
            m.report["workers"][name]["concurrency"]
            for m in members
            if m.report is not None
            and name in m.report.get("workers", {})
            and m.report["workers"][name].get("concurrency") is not None
        ]
        workers[name] = {
            **merged,
            "circuit": state if state in ("open", "half_open") else "closed",
            "concurrency": sum(concurrencies) if concurrencies else None,
            "processes": {
                index: process["workers"][name]
                for index, process in body["processes"].items()
                if name in process["workers"]
            },
        }
    return workers
