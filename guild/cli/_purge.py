"""``guild purge QUEUE [--status …] [--older-than S] [--yes]``: delete a queue's jobs by status.

Finished jobs go on their own when their retention runs out (``guild.Retention``);
a purge deletes now. It works in small batches (see ``Purgeable.purge``), so
workers keep claiming while it runs. Deleting jobs that have not run yet
(``ready``, ``delayed``, or ``all``) needs ``--yes``: they are work, not history.
"""

from __future__ import annotations

import argparse
from typing import Any

from .._job import JobStatus
from ..brokers._protocol import PURGEABLE, Purgeable
from ..brokers._url import open_broker
from ._args import MAX_SECONDS, UsageError, add_broker_flags, number, stored_queue_name
from ._output import EXIT_OK, print_json

STATUS_CHOICES = ("done", "dead", "cancelled", "ready", "delayed", "all")
UNRUN = frozenset({JobStatus.READY, JobStatus.DELAYED})
"""Statuses of jobs that have not run: purging them needs ``--yes``."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "purge",
        help="delete a queue's jobs by status (done by default)",
        description="Delete the jobs of QUEUE in the statuses given (default: done), with"
        " their results and dead letters, in small batches. Jobs in flight are never"
        " touched. ready, delayed and all delete work that has not run: they need --yes.",
    )
    parser.add_argument("queue", type=stored_queue_name, metavar="QUEUE")
    parser.add_argument(
        "--status",
        action="append",
        choices=STATUS_CHOICES,
        help="a status to purge; repeat for several (default: done)",
    )
    parser.add_argument(
        "--older-than",
        type=number(0, MAX_SECONDS),
        metavar="S",
        help="only jobs that finished (waiting ones: were enqueued) at least S seconds ago",
    )
    parser.add_argument("--yes", action="store_true", help="allow purging ready/delayed jobs")
    add_broker_flags(parser)
    parser.set_defaults(func=purge)


def chosen_statuses(names: list[str] | None) -> frozenset[JobStatus]:
    """The statuses ``--status`` names (``all``: every purgeable one; none: done)."""
    if not names:
        return frozenset({JobStatus.DONE})
    if "all" in names:
        return PURGEABLE
    return frozenset(JobStatus(name) for name in names)


async def purge(args: argparse.Namespace) -> int:
    statuses = chosen_statuses(args.status)
    unrun = sorted(s.value for s in statuses & UNRUN)
    if unrun and not args.yes:
        raise UsageError(
            f"purging {' and '.join(unrun)} jobs deletes work that has not run yet;"
            " add --yes to do it"
        )
    # create=False: refuses memory:// (nothing outside this process to purge) and a
    # SQLite file that is not there, rather than making an empty one.
    async with open_broker(args.broker, create=False) as broker:
        if not isinstance(broker, Purgeable):
            raise UsageError(f"{type(broker).__name__} cannot purge")
        count = await broker.purge(args.queue, statuses, older_than=args.older_than)
    names = sorted(s.value for s in statuses)
    if args.json:
        print_json(
            {
                "queue": args.queue,
                "statuses": names,
                "older_than": args.older_than,
                "purged": count,
            }
        )
    else:
        print(
            f"purged {count} job{'s' if count != 1 else ''} ({', '.join(names)}) from {args.queue}"
        )
    return EXIT_OK
