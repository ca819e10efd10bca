"""``guild enqueue QUEUE PAYLOAD_JSON`` and ``guild enqueue QUEUE -`` (JSON lines on stdin)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import Any, NoReturn

import trio

from .._client import enqueue_and_wait
from .._codec import encode_payload
from .._errors import BrokerError, PayloadEncodeError
from .._job import PRIORITIES, Job, JSONValue, Priority, check_priority
from ..brokers._protocol import Broker
from ..brokers._url import open_broker
from ._args import (
    UsageError,
    broker_url,
    idempotency_key,
    integer,
    number,
    queue_name,
    refuse_memory,
)
from ._output import EXIT_OK, print_json, progress
from ._result import show_found, wait_option

BATCH = 500
MAX_DELAY = 10 * 365 * 86_400.0
"""Ten years: further out is a typo, and a clock sum that large loses its seconds."""
MAX_ATTEMPTS = 1_000_000
MAX_LINE = 16 << 20
"""The longest stdin line ``guild enqueue QUEUE -`` reads (16 MiB): one payload."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("enqueue", help="enqueue jobs")
    parser.add_argument("queue", type=queue_name)
    parser.add_argument("payload", help="a JSON payload, or - for one JSON payload per stdin line")
    parser.add_argument(
        "--broker",
        type=broker_url,
        help="broker URL (default: $GUILD_BROKER, else sqlite:guild.db)",
    )
    parser.add_argument("--key", type=idempotency_key, help="idempotency key (single payload only)")
    parser.add_argument(
        "--delay",
        type=number(0, MAX_DELAY),
        help=f"seconds before the job may run (0 to {MAX_DELAY:g})",
    )
    parser.add_argument(
        "--max-attempts",
        type=integer(1, MAX_ATTEMPTS),
        help=f"runs before the job is dead-lettered (1 to {MAX_ATTEMPTS:,};"
        " default: the worker's max_attempts)",
    )
    parser.add_argument(
        "--priority",
        type=_priority,
        default=Priority.NORMAL,
        metavar="LEVEL",
        help=f"{_LEVELS}: claimed before the waiting jobs of lower priority (default: normal)",
    )
    wait_option(
        parser,
        "wait for the job to finish and print its result instead (exit 1 unless it is done)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=enqueue)


_LEVELS = ", ".join(level.name.lower() for level in PRIORITIES)


def _priority(text: str) -> Priority:
    try:
        return check_priority(int(text) if text.strip().lstrip("-").isdigit() else text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected one of {_LEVELS} (or {', '.join(str(int(p)) for p in PRIORITIES)}),"
            f" got {text!r}"
        ) from None


def _no_constant(name: str) -> NoReturn:
    # Python's json reads NaN and Infinity; JSON has neither, and no broker could
    # store the job, so they are refused with the rest of the bad input.
    raise ValueError(f"{name} is not JSON")


def _parse(text: str, where: str) -> JSONValue:
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:
        raise UsageError(f"{where}: not valid JSON ({exc})") from None
    except RecursionError:
        raise UsageError(f"{where}: nested too deeply to be a payload") from None
    # Valid JSON may still be no payload a broker stores ("\udcff", 1e999, too
    # long): refused here, naming its line, before any batch is stored.
    try:
        encode_payload(value)
    except PayloadEncodeError as exc:
        raise UsageError(f"{where}: {exc}") from None
    return value


def _stdin_batches() -> Iterator[list[JSONValue]]:
    batch: list[JSONValue] = []
    line_number = 0
    # Read by bounded lines: ``< /dev/zero`` (or a binary file) has no newline,
    # and would otherwise be read into memory until the machine ran out.
    while raw := sys.stdin.buffer.readline(MAX_LINE + 1):
        line_number += 1
        if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
            raise UsageError(
                f"stdin line {line_number}: longer than {MAX_LINE:,} bytes (one JSON payload"
                " per line)"
            )
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(f"stdin line {line_number}: not UTF-8 ({exc})") from None
        if line.strip():
            batch.append(_parse(line, f"stdin line {line_number}"))
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def enqueue(args: argparse.Namespace) -> int:
    refuse_memory(args.broker, "a job enqueued from the command line")
    if args.payload == "-":
        if args.key is not None:
            raise UsageError("--key names one job; it cannot be used with - (many payloads)")
        if args.wait is not None:
            raise UsageError("--wait prints one job's result; it cannot be used with -")
        # Parse everything first: a bad line must not leave half a file enqueued.
        batches = list(_stdin_batches())
        if not batches:
            raise UsageError("stdin held no payloads (one JSON value per line)")
    else:
        batches = [[_parse(args.payload, "PAYLOAD_JSON")]]
    if args.wait is not None:
        return trio.run(_enqueue_and_wait, args, batches[0])
    try:
        jobs = trio.run(_enqueue_batches, args, batches)
    except _PartlyStored as partly:
        # Some batches are in: the caller must learn which, or a retry doubles them.
        _print_stored(args, partly.stored, ids=True)
        total = sum(len(batch) for batch in batches)
        raise BrokerError(
            f"enqueued the first {len(partly.stored):,} of {total:,} payloads (their ids are"
            f" on stdout), not the rest: {partly.cause}"
        ) from partly.cause
    _print_stored(args, jobs)
    return EXIT_OK


def _print_stored(args: argparse.Namespace, jobs: list[Job], *, ids: bool = False) -> None:
    if args.json:
        print_json([{"id": j.id, "queue": j.queue, "key": j.key} for j in jobs])
    elif len(jobs) == 1:
        print(f"enqueued {jobs[0].id} on {jobs[0].queue}")
    else:
        print(f"enqueued {len(jobs):,} jobs on {args.queue}")
        if ids:
            for job in jobs:
                print(job.id)


class _PartlyStored(Exception):
    """A batch failed after earlier batches of the same command were stored."""

    def __init__(self, stored: list[Job], cause: BrokerError) -> None:
        super().__init__(str(cause))
        self.stored = stored
        self.cause = cause


async def _enqueue_and_wait(args: argparse.Namespace, payloads: list[JSONValue]) -> int:
    async with open_broker(args.broker) as broker:
        # One broker call (one round trip on Redis): the enqueue and the wait.
        (job,) = _jobs(args, payloads, broker.now())
        stored, found = await enqueue_and_wait(broker, job, args.wait)
        return await show_found(broker, stored.id, found, args.wait, as_json=args.json)


async def _enqueue_batches(args: argparse.Namespace, batches: list[list[JSONValue]]) -> list[Job]:
    async with open_broker(args.broker) as broker:
        return await _store(broker, args, batches)


async def _store(
    broker: Broker, args: argparse.Namespace, batches: list[list[JSONValue]]
) -> list[Job]:
    stored: list[Job] = []
    now = broker.now()
    with progress(f"enqueue {args.queue}") as bar:
        for payloads in batches:
            jobs = _jobs(args, payloads, now)
            try:
                stored += await broker.enqueue(jobs)
            except BrokerError as error:
                if stored:
                    raise _PartlyStored(stored, error) from error
                raise
            bar.advance(len(jobs))
    return stored


def _jobs(args: argparse.Namespace, payloads: list[JSONValue], now: float) -> list[Job]:
    not_before = now + args.delay if args.delay else None
    return [
        Job(
            queue=args.queue,
            payload=payload,
            key=args.key,
            not_before=not_before,
            max_attempts=args.max_attempts,
            priority=args.priority,
        )
        for payload in payloads
    ]
