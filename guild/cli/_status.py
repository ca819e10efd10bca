"""``guild status``: a running app's health and per-worker figures, from its ``/health``.

Exit codes follow the monitoring-plugin convention, so the command drops into
any checker: 0 healthy, 1 degraded, 2 unhealthy, 3 the server could not be
reached or did not answer with a health report.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ._args import http_url, number
from ._banner import schedule_words
from ._output import failure, print_json, table

DEFAULT_URL = "http://127.0.0.1:8000"
EXIT_CODES = {"healthy": 0, "degraded": 1, "unhealthy": 2}
EXIT_UNKNOWN = 3


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "status",
        help="health and per-worker figures of a running app",
        description="Ask a running app's HTTP server (guild run --http) how it is doing."
        " Exit code: 0 healthy, 1 degraded, 2 unhealthy, 3 unreachable.",
    )
    parser.add_argument(
        "--url", type=http_url, default=DEFAULT_URL, help=f"the app's HTTP server ({DEFAULT_URL})"
    )
    parser.add_argument("--json", action="store_true", help="print the /health JSON as is")
    parser.add_argument(
        "--timeout",
        type=number(above=0, high=3600),
        default=5.0,
        help="seconds to wait for an answer (more than 0, at most 3600)",
    )
    parser.set_defaults(func=status)


async def status(args: argparse.Namespace) -> int:
    import httpx  # here, not at the top: `guild run` should not pay for it

    url = args.url.rstrip("/") + "/health"
    try:
        async with httpx.AsyncClient(timeout=args.timeout) as client:
            response = await client.get(url)
        body = response.json()
        verdict = body["status"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        _unreachable(f"cannot read {url}: {failure(exc)}", as_json=args.json)
        return EXIT_UNKNOWN
    if args.json:
        print_json(body)
    else:
        print(render(body))
    return EXIT_CODES.get(verdict, EXIT_UNKNOWN)


def _unreachable(message: str, *, as_json: bool) -> None:
    """The one error line of a server that could not be read (exit 3), as
    ``guild.cli.report`` prints the others: JSON with ``--json``."""
    if as_json:
        line = json.dumps({"error": message, "type": "Unreachable", "exit_code": EXIT_UNKNOWN})
        print(line, file=sys.stderr)
    else:
        print(f"guild: error: {message}", file=sys.stderr)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f}ms" if value < 1 else f"{value:.1f}s"


def render(body: dict[str, Any]) -> str:
    """The human view of a ``/health`` body: verdict, workers, queues, periodic
    jobs with their next fire, failing checks."""
    lines = [f"{body.get('app', 'guild')}: {body['status']}", ""]
    workers = body.get("workers") or {}
    rows = [
        (
            name,
            w["queue"],
            w["state"],
            w["active"],
            w["processed"],
            w["failed"],
            f"{w['error_rate']:.2%}",
            _seconds(w.get("p50")),
            _seconds(w["p95"]),
            _seconds(w.get("p99")),
            w["restarts"],
        )
        for name, w in sorted(workers.items())
    ]
    headers = (
        "worker",
        "queue",
        "state",
        "active",
        "done",
        "failed",
        "errors",
        "p50",
        "p95",
        "p99",
        "restarts",
    )
    lines.append(table(headers, rows) if rows else "no workers")
    queues = body.get("queues")
    if queues is None:
        lines += ["", "broker: unreachable"]
    elif queues:
        ordered = sorted(queues.items())
        # A queue whose counts could not be read (QueueStats.broken) shows no
        # made-up zeros: dashes, and its reason after its row.
        queue_rows = [
            (name, q["ready"], q["delayed"], q["in_flight"], q["dead"])
            if not q.get("broken")
            else (name, *("-" * 4))
            for name, q in ordered
        ]
        shown = table(("queue", "ready", "delayed", "in_flight", "dead"), queue_rows).split("\n")
        for i, (_, q) in enumerate(ordered, start=1):
            if q.get("broken"):
                shown[i] += f"  broken: {q['broken']}"
        lines += ["", *shown]
    processes = body.get("processes") or {}
    if processes:
        process_rows = [
            (
                index,
                p["pid"] if p["pid"] is not None else "-",
                "up" if p["up"] else "down",
                p["status"] or "-",
                p["totals"]["active"],
                p["totals"]["processed"],
                p["totals"]["failed"],
                p["totals"]["dead"],
                p["restarts"],
            )
            for index, p in sorted(processes.items(), key=lambda item: int(item[0]))
        ]
        process_headers = ("process", "pid", "up", "status", "active", "done", "failed", "dead")
        lines += ["", table((*process_headers, "restarts"), process_rows)]
    periodic = body.get("periodic") or []
    if periodic:
        periodic_rows = []
        for entry in periodic:
            when, fire, zone = schedule_words(entry)
            periodic_rows.append(
                (entry["name"], entry["queue"], when, f"{fire:%Y-%m-%d %H:%M:%S} {zone}")
            )
        shown = table(("periodic", "queue", "schedule", "next"), periodic_rows).split("\n")
        for i, entry in enumerate(periodic, start=1):
            if entry.get("error"):
                # Its last enqueue failed (the tick was skipped): why, after its row.
                shown[i] += f"  failing: {entry['error']}"
        lines += ["", *shown]
    running = body.get("running") or []
    if running:
        oldest = max(job["age"] for job in running)
        lines += ["", f"running: {len(running)} jobs, the oldest for {_seconds(oldest)}"]
    failures = body.get("failures") or []
    if failures:
        lines += ["", "recent failures:"]
        lines += [
            f"  {f['id']} ({f['worker']}, attempt {f['attempt']}, {f['outcome']}): {f['error']}"
            for f in failures[:5]
        ]
    problems = [
        f"  {name}: {check['status']}" + (f" ({check['detail']})" if check.get("detail") else "")
        for name, check in body.get("checks", {}).items()
        if check["status"] != "healthy"
    ]
    if problems:
        lines += ["", "problems:", *problems]
    return "\n".join(lines)
