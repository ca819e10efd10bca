"""``guild stats``: per queue ready, delayed, in flight, done, dead."""

from __future__ import annotations

import argparse
from typing import Any

import trio

from .._job import QueueStats
from ..brokers._url import open_broker
from ._args import broker_url
from ._output import EXIT_OK, print_json, table


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("stats", help="counts of jobs per queue")
    parser.add_argument(
        "--broker",
        type=broker_url,
        help="broker URL (default: $GUILD_BROKER, else sqlite:guild.db)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=stats)


async def _stats(url: str | None) -> dict[str, QueueStats]:
    # Reading never creates: a mistyped path is "no database at …", not a new empty one.
    async with open_broker(url, create=False) as broker:
        return await broker.stats()


def stats(args: argparse.Namespace) -> int:
    found = trio.run(_stats, args.broker)
    if args.json:
        print_json(found)
        return EXIT_OK
    if not found:
        print("no queues")
        return EXIT_OK
    rows = [
        (s.queue, s.ready, s.delayed, s.in_flight, s.done, s.dead)
        for s in sorted(found.values(), key=lambda s: s.queue)
    ]
    print(table(("queue", "ready", "delayed", "in_flight", "done", "dead"), rows))
    return EXIT_OK
