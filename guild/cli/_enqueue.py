"""``guild enqueue QUEUE PAYLOAD_JSON`` and ``guild enqueue QUEUE -`` (JSON lines on stdin)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import Any

import trio

from .._job import Job, JSONValue
from ..brokers._url import open_broker
from ._output import EXIT_OK, error, print_json, progress

BATCH = 500


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("enqueue", help="enqueue jobs")
    parser.add_argument("queue")
    parser.add_argument("payload", help="a JSON payload, or - for one JSON payload per stdin line")
    parser.add_argument(
        "--broker", help="broker URL (default: $GUILD_BROKER, else sqlite:guild.db)"
    )
    parser.add_argument("--key", help="idempotency key (single payload only)")
    parser.add_argument("--delay", type=float, help="seconds before the job may run")
    parser.add_argument("--max-attempts", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=enqueue)


def _parse(text: str, where: str) -> JSONValue:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{where}: not valid JSON ({exc})") from exc


def _stdin_batches() -> Iterator[list[JSONValue]]:
    batch: list[JSONValue] = []
    for number, line in enumerate(sys.stdin, start=1):
        if line.strip():
            batch.append(_parse(line, f"stdin line {number}"))
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def enqueue(args: argparse.Namespace) -> int:
    if args.delay is not None and args.delay < 0:
        return error(f"--delay must be >= 0, got {args.delay}")
    if args.max_attempts < 1:
        return error(f"--max-attempts must be >= 1, got {args.max_attempts}")
    if args.payload == "-":
        if args.key is not None:
            return error("--key names one job; it cannot be used with - (many payloads)")
        # Parse everything first: a bad line must not leave half a file enqueued.
        try:
            batches = list(_stdin_batches())
        except ValueError as exc:
            return error(str(exc))
    else:
        try:
            batches = [[_parse(args.payload, "PAYLOAD_JSON")]]
        except ValueError as exc:
            return error(str(exc))
    jobs = trio.run(_enqueue_batches, args, batches)
    if args.json:
        print_json([{"id": j.id, "queue": j.queue, "key": j.key} for j in jobs])
    elif len(jobs) == 1:
        print(f"enqueued {jobs[0].id} on {jobs[0].queue}")
    else:
        print(f"enqueued {len(jobs):,} jobs on {args.queue}")
    return EXIT_OK


async def _enqueue_batches(args: argparse.Namespace, batches: list[list[JSONValue]]) -> list[Job]:
    stored: list[Job] = []
    async with open_broker(args.broker) as broker:
        now = broker.now()
        not_before = now + args.delay if args.delay else None
        with progress(f"enqueue {args.queue}") as bar:
            for payloads in batches:
                jobs = [
                    Job(
                        queue=args.queue,
                        payload=payload,
                        key=args.key,
                        not_before=not_before,
                        max_attempts=args.max_attempts,
                    )
                    for payload in payloads
                ]
                stored += await broker.enqueue(jobs)
                bar.advance(len(jobs))
    return stored
