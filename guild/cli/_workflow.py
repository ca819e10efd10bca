"""``guild workflow show ID | list | cancel ID | purge``: stored workflows, from any process.

Exit 0 when the command did its work; 1 for ``cancel`` of a workflow that had
finished or was already stopping; 2 for bad input, an id no workflow has among
it. Like the other reading commands these never create a database and refuse
``memory://``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import Any

from ..brokers._url import open_broker
from ..workflows._coordinator import cancel, view, views
from ..workflows._expiry import expire, retention_of
from ..workflows._machine import FINISHED_STATUSES
from ..workflows._transition import store_of
from ..workflows._view import StepView, WorkflowView
from ._args import (
    MAX_SECONDS,
    CommandFailed,
    add_broker_flags,
    identifier,
    integer,
    number,
    repeat_broker_flags,
)
from ._output import EXIT_OK, print_json

MAX_LIMIT = 1_000_000
MAX_REASON = 1_000
STATUSES = ("running", "compensating", "done", "failed", "cancelled")
STEP_STATES = ("pending", "running", "done", "failed", "cancelled", "skipped")
# Human output cuts a result or error to this many characters (--json has it whole).
CELL = 60


class WorkflowNotCancelled(CommandFailed):
    """``workflow cancel ID``: it had finished, or was stopping, before the cancel came."""

    def __init__(self, workflow_id: str, status: str) -> None:
        why = "has already finished" if status in FINISHED_STATUSES else "is already stopping"
        super().__init__(f"workflow {workflow_id} {why}: it is {status}")
        self.workflow_id = workflow_id
        self.status = status


def _reason(text: str) -> str:
    if not text.strip() or len(text) > MAX_REASON:
        raise argparse.ArgumentTypeError(
            f"expected a reason of 1 to {MAX_REASON:,} characters, got {text[:40]!r}"
        )
    return text


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("workflow", help="show, list and cancel workflows")
    add_broker_flags(parser)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = actions.add_parser(
        "show",
        help="one workflow: each step's state, attempts, timings, result or error,"
        " and its compensation",
    )
    show.add_argument("id", type=identifier("a workflow id"))
    listing = actions.add_parser("list", help="stored workflows, oldest first")
    listing.add_argument(
        "--status",
        action="append",
        choices=STATUSES,
        help="only workflows in this status (repeat for several)",
    )
    listing.add_argument(
        "--limit", type=integer(1, MAX_LIMIT), default=100, help=f"at most (1 to {MAX_LIMIT:,})"
    )
    stop = actions.add_parser(
        "cancel",
        help="stop a workflow: no new step starts, running ones are cancelled,"
        " completed ones compensated",
    )
    stop.add_argument("id", type=identifier("a workflow id"))
    stop.add_argument(
        "--reason",
        type=_reason,
        default="cancelled from the command line",
        help="why (stored as the workflow's error)",
    )
    purge = actions.add_parser(
        "purge",
        help="delete finished workflows whose retention ran out (or --older-than S) now",
    )
    purge.add_argument(
        "--older-than",
        type=number(0, MAX_SECONDS),
        metavar="S",
        default=0.0,
        help="delete every finished workflow last written at least S seconds ago",
    )
    repeat_broker_flags(show, listing, stop, purge)
    parser.set_defaults(func=workflow)


async def workflow(args: argparse.Namespace) -> int:
    # create=False refuses memory:// (nothing is stored there for another process
    # to read) and a SQLite path with no database, before anything is made.
    async with open_broker(args.broker, create=False) as broker:
        if args.action == "show":
            found = await view(broker, args.id)
            if args.json:
                print_json(found.to_dict())
            else:
                print(render(found))
            return EXIT_OK
        if args.action == "list":
            statuses = None if args.status is None else sorted(set(args.status))
            found_all = await views(broker, statuses=statuses, limit=args.limit)
            if args.json:
                print_json([summary(one) for one in found_all])
            elif not found_all:
                print("no workflows")
            else:
                print(render_list(found_all))
            return EXIT_OK
        if args.action == "purge":
            deleted = await expire(
                store_of(broker),
                retention_of(broker),
                broker.now(),
                older_than=args.older_than,
            )
            if args.json:
                print_json({"deleted": deleted})
            else:
                print(f"deleted {deleted} finished workflow{_s(deleted)}")
            return EXIT_OK
        if not await cancel(broker, args.id, args.reason):
            now = await view(broker, args.id)
            raise WorkflowNotCancelled(args.id, now.status)
        after = await view(broker, args.id)
        if args.json:
            print_json({"id": after.id, "status": after.status})
        elif after.finished:
            print(f"cancelled {after.id}: nothing was running and nothing is to be undone")
        else:
            running = sum(1 for step in after.steps if step.state == "running")
            first = f"{running} running step{_s(running)} being cancelled, then " if running else ""
            print(
                f"cancelling {after.id}: {first}the completed ones compensated"
                " (by a running app's coordinator)"
            )
        return EXIT_OK


# --- what is printed ------------------------------------------------------------------


def summary(found: WorkflowView) -> dict[str, Any]:
    """One workflow of ``list --json``: its status and how many steps are in each state."""
    counts = dict.fromkeys(STEP_STATES, 0)
    for step in found.steps:
        counts[step.state] += 1
    return {
        "id": found.id,
        "name": found.name,
        "status": found.status,
        "failed_step": found.failed_step,
        "error": found.error,
        "steps": {"total": len(found.steps), **counts},
        "created_at": found.created_at,
        "updated_at": found.updated_at,
        "finished_at": found.finished_at,
    }


def render(found: WorkflowView) -> str:
    """The human view of one workflow: a header, then a row a step with its undo under it."""
    lines = [f"workflow {found.id}  {found.name!r}", f"status   {_status_line(found)}"]
    done = sum(1 for step in found.steps if step.state == "done")
    took = (
        f"finished after {_duration(found.finished_at - found.started_at)}"
        if found.finished_at is not None
        else f"running for {_duration(time.time() - found.started_at)}"
    )
    lines.append(f"started  {_clock(found.started_at)}, {took}")
    lines.append(f"steps    {done} of {len(found.steps)} done")
    lines.append("")
    rows: list[tuple[str, ...]] = []
    for step in found.steps:
        rows.append(_step_row(found, step))
        undo = step.compensation
        if undo is not None and undo.state != "none":
            rows.append(
                (
                    f"  undo: {undo.name}",
                    "",
                    undo.state,
                    str(undo.attempts),
                    _offset(found, undo.started_at),
                    _span(undo.started_at, undo.finished_at),
                    _cut(undo.error or ""),
                )
            )
    headers = ("step", "after", "state", "attempts", "started", "took", "result / error")
    lines.append(_columns(headers, rows))
    return "\n".join(lines)


def render_list(found: Sequence[WorkflowView]) -> str:
    rows = []
    for one in found:
        done = sum(1 for step in one.steps if step.state == "done")
        rows.append(
            (
                one.id,
                _cut(one.name, 30),
                one.status,
                f"{done}/{len(one.steps)}",
                _clock(one.created_at),
                one.failed_step or "",
            )
        )
    return _columns(("id", "name", "status", "done", "created", "failed step"), rows)


def _status_line(found: WorkflowView) -> str:
    if found.status == "failed":
        return f"failed at step {found.failed_step}: {_cut(found.error or '')}"
    if found.status == "cancelled" or (
        found.status == "compensating" and found.failed_step is None
    ):
        return f"{found.status} ({_cut(found.error or '')})"
    if found.status == "compensating":
        return f"compensating after step {found.failed_step} failed: {_cut(found.error or '')}"
    return found.status


def _step_row(found: WorkflowView, step: StepView) -> tuple[str, ...]:
    if step.state == "done":
        outcome = json.dumps(step.result, ensure_ascii=False)
    else:
        outcome = step.error or ""
    return (
        step.name,
        ",".join(step.after) or "-",
        step.state,
        str(step.attempts),
        _offset(found, step.started_at),
        _span(step.started_at, step.finished_at),
        _cut(outcome),
    )


def _columns(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns (text, unlike :func:`._output.table`'s numbers)."""
    cells = [list(headers), *[list(row) for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


def _cut(text: str, width: int = CELL) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= width else one_line[: width - 1] + "…"


def _s(count: int) -> str:
    return "" if count == 1 else "s"


def _duration(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def _offset(found: WorkflowView, at: float | None) -> str:
    return "-" if at is None else "+" + _duration(at - found.started_at)


def _span(start: float | None, end: float | None) -> str:
    return "-" if start is None or end is None else _duration(end - start)


def _clock(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))
