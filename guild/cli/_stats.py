"""``guild stats``: per queue ready, delayed, in flight, done, dead; and the
counts workers keep in the broker's Ledger (``--counts`` for those alone)."""

from __future__ import annotations

import argparse
from typing import Any

import trio

from .._job import QueueStats
from ..brokers._ledger import Ledger
from ..brokers._url import open_broker
from ._args import add_broker_flags
from ._output import EXIT_FAILED, EXIT_OK, print_json, table


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("stats", help="counts of jobs per queue")
    add_broker_flags(parser)
    parser.add_argument(
        "--counts",
        action="store_true",
        help="only the counts workers keep in the broker (namespace, key, name: value)",
    )
    parser.set_defaults(func=stats)


Counts = dict[str, dict[str, dict[str, float]]]


async def _stats(url: str | None) -> tuple[dict[str, QueueStats], Counts]:
    # Reading never creates: a mistyped path is "no database at …", not a new empty one.
    async with open_broker(url, create=False) as broker:
        counts: Counts = {}
        if isinstance(broker, Ledger):
            for namespace in await broker.count_namespaces():
                counts[namespace] = await broker.get_counts(namespace)
        return await broker.stats(), counts


def _counts_tables(counts: Counts) -> list[str]:
    tables = []
    for namespace, by_key in sorted(counts.items()):
        names = sorted({name for numbers in by_key.values() for name in numbers})
        rows = [
            (key, *(f"{numbers.get(name, 0.0):g}" for name in names))
            for key, numbers in sorted(by_key.items())
        ]
        tables.append(table((namespace, *names), rows))
    return tables


def stats(args: argparse.Namespace) -> int:
    found, counts = trio.run(_stats, args.broker)
    if args.counts:
        if args.json:
            print_json(counts)
        else:
            print("\n\n".join(_counts_tables(counts)) or "no counts")
        return EXIT_OK
    # A queue whose counts could not be read (QueueStats.broken) is shown, and
    # the others with it; the exit code says one was.
    code = EXIT_FAILED if any(s.broken is not None for s in found.values()) else EXIT_OK
    if args.json:
        print_json(found)
        return code
    if not found:
        print("no queues")
        for text in _counts_tables(counts):
            print(f"\n{text}")
        return EXIT_OK
    ordered = sorted(found.values(), key=lambda s: s.queue)
    rows = [
        (s.queue, s.ready, s.delayed, s.in_flight, s.done, s.dead, s.cancelled)
        if s.broken is None
        else (s.queue, *("-" * 6))
        for s in ordered
    ]
    lines = table(("queue", "ready", "delayed", "in_flight", "done", "dead", "cancelled"), rows)
    shown = lines.split("\n")
    for i, s in enumerate(ordered, start=1):
        if s.broken is not None:
            # Its reason on its own line of the table, left as it reads.
            shown[i] += f"  broken: {s.broken}"
    print("\n".join(shown))
    for text in _counts_tables(counts):
        print(f"\n{text}")
    return code
