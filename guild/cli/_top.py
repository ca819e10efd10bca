"""``guild top``: a live table of a running app's workers, fed by its ``/events`` feed.

Every ``--interval`` seconds it redraws one row per worker: its supervisor
state, jobs finished per second since the last frame, jobs in flight, and
failed attempts since it connected; a worker whose broker calls fail (the
broker away, or a damaged key of its queue) has the reason after its row. :class:`TopView` folds events into those
figures and renders frames; it does no I/O, so it is tested on its own, and
the command around it only reads the websocket and prints.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ..observability._access import TOKEN_VARIABLE, token_fault
from ._args import MAX_SECONDS, UsageError, http_url, number
from ._output import failure, table
from ._status import DEFAULT_URL

if TYPE_CHECKING:
    import trio_websocket

EXIT_OK = 0
EXIT_UNREACHABLE = 3
_CLEAR = "\x1b[H\x1b[2J"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "top",
        help="live view of a running app's workers",
        description=(
            "Watch a running app's workers (guild run --http) through /events;"
            " a server off loopback needs $GUILD_HTTP_TOKEN."
        ),
    )
    parser.add_argument(
        "--url", type=http_url, default=DEFAULT_URL, help=f"the app's HTTP server ({DEFAULT_URL})"
    )
    parser.add_argument(
        "--interval",
        type=number(above=0, high=3600),
        default=1.0,
        help="seconds between frames (more than 0, at most 3600)",
    )
    parser.add_argument("--once", action="store_true", help="print one frame and exit")
    parser.add_argument(
        "--duration",
        type=number(above=0, high=MAX_SECONDS),
        help="exit after this many seconds (more than 0)",
    )
    parser.set_defaults(func=top)


@attrs.define
class _Row:
    queue: str
    state: str = "?"
    running: set[str] = attrs.field(factory=set)
    active_at_hello: int = 0
    finished: int = 0
    failed: int = 0
    finished_at_frame: int = 0
    broker_error: str | None = None


class TopView:
    """Per-worker figures folded from ``/events`` messages; renders text frames."""

    def __init__(self) -> None:
        self.app = "guild"
        self.rows: dict[str, _Row] = {}
        self.events = 0
        self.closed: str | None = None

    def _row(self, worker: str, queue: str | None = None) -> _Row:
        row = self.rows.get(worker)
        if row is None:
            row = self.rows[worker] = _Row(queue=queue or worker)
        return row

    def apply(self, event: dict[str, Any]) -> None:
        """Fold one event into the figures."""
        self.events += 1
        kind = event.get("type")
        if kind == "hello":
            self.app = event.get("app", self.app)
            for name, worker in event.get("workers", {}).items():
                row = self._row(name, worker["queue"])
                row.state, row.active_at_hello = worker["state"], worker["active"]
                row.broker_error = worker.get("broker_error")
        elif kind == "job_started":
            self._row(event["worker"], event["queue"]).running.add(event["task_id"])
        elif kind == "job_finished":
            row = self._row(event["worker"], event["queue"])
            if event["task_id"] in row.running:
                row.running.discard(event["task_id"])
            elif row.active_at_hello:
                row.active_at_hello -= 1  # a job that was running when we connected
            if event["outcome"] != "released":
                row.finished += 1
                row.failed += event["outcome"] != "done"
        elif kind == "worker_state":
            self._row(event["worker"]).state = event["state"]
        elif kind == "worker_broker":
            self._row(event["worker"], event["queue"]).broker_error = event["error"]

    def frame(self, elapsed: float) -> str:
        """The table now; ``elapsed``: seconds since the previous frame (for jobs/s)."""
        lines = [f"{self.app}: {len(self.rows)} workers, {self.events} events"]
        rows = []
        for name, row in sorted(self.rows.items()):
            rate = (row.finished - row.finished_at_frame) / elapsed if elapsed > 0 else 0.0
            row.finished_at_frame = row.finished
            in_flight = len(row.running) + row.active_at_hello
            rows.append(
                (name, row.queue, row.state, f"{rate:.1f}", in_flight, row.finished, row.failed)
            )
        headers = ("worker", "queue", "state", "jobs/s", "in_flight", "finished", "failed")
        if not rows:
            lines.append("no workers yet")
            return "\n".join(lines)
        shown = table(headers, rows).split("\n")
        for i, (_, row) in enumerate(sorted(self.rows.items()), start=1):
            if row.broker_error:
                # Its figures stand still for a reason: said after its row.
                shown[i] += f"  broker: {row.broker_error}"
        lines += shown
        return "\n".join(lines)


def _events_url(url: str) -> str:
    base = url.rstrip("/")
    for http, ws in (("https://", "wss://"), ("http://", "ws://")):
        if base.startswith(http):
            base = ws + base[len(http) :]
    if not base.startswith(("ws://", "wss://")):
        base = "ws://" + base
    return base if base.endswith("/events") else base + "/events"


async def _read(
    ws: trio_websocket.WebSocketConnection, view: TopView, scope: trio.CancelScope
) -> None:
    from trio_websocket import ConnectionClosed

    try:
        while True:
            for event in json.loads(await ws.get_message()):
                view.apply(event)
    except ConnectionClosed as exc:
        # The app stopped, or dropped us as too slow: say so and end, rather than
        # leave the feed's error inside the nursery's exception group.
        view.closed = str(exc.reason)
        scope.cancel(reason="events feed closed")


async def top(args: argparse.Namespace) -> int:
    import trio_websocket  # here, not at the top: `guild run` should not pay for it

    url = _events_url(args.url)
    view = TopView()
    clear = sys.stdout.isatty() and not args.once
    # A server off loopback admits /events with its token only (see docs/operations.md).
    token = os.environ.get(TOKEN_VARIABLE)
    fault = token_fault(token) if token else None
    if fault is not None:  # the header could not be sent; its value is not echoed
        raise UsageError(f"${TOKEN_VARIABLE}: expected {fault}")
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else None
    try:
        async with (
            trio_websocket.open_websocket_url(url, extra_headers=headers) as ws,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(_read, ws, view, nursery.cancel_scope)
            started = last = trio.current_time()
            while True:
                await trio.sleep(args.interval)
                now = trio.current_time()
                print((_CLEAR if clear else "") + view.frame(now - last), flush=True)
                last = now
                if args.once or (args.duration is not None and now - started >= args.duration):
                    break
            nursery.cancel_scope.cancel(reason="top finished")
    except (OSError, trio_websocket.HandshakeError) as exc:
        print(f"guild: error: cannot watch {url}: {failure(exc)}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if view.closed is not None:
        print(f"guild: error: the events feed closed: {view.closed}", file=sys.stderr)
        return EXIT_UNREACHABLE
    return EXIT_OK
