"""``guild dlq list|show ID|requeue (ID…|--all)``: the dead letters."""

from __future__ import annotations

import argparse
from typing import Any

import trio

from .._job import DeadLetter
from ..brokers._url import open_broker
from ._args import (
    CommandFailed,
    UsageError,
    add_broker_flags,
    identifier,
    integer,
    repeat_broker_flags,
    stored_queue_name,
)
from ._output import EXIT_FAILED, EXIT_OK, print_json, table

MAX_LIMIT = 1_000_000


class NoSuchDeadJob(CommandFailed):
    """``dlq show ID`` found no dead job with that id."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no dead job with id {job_id}")
        self.job_id = job_id


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("dlq", help="list, show and requeue dead jobs")
    add_broker_flags(parser)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="dead jobs, oldest first")
    listing.add_argument("--queue", type=stored_queue_name)
    listing.add_argument(
        "--limit", type=integer(1, MAX_LIMIT), default=100, help=f"at most (1 to {MAX_LIMIT:,})"
    )
    show = actions.add_parser("show", help="one dead job with its error and traceback")
    show.add_argument("id", type=identifier("a job id"))
    requeue = actions.add_parser("requeue", help="put dead jobs back to work, attempts reset")
    requeue.add_argument("ids", nargs="*", metavar="ID", type=identifier("a job id"))
    requeue.add_argument("--all", action="store_true", help="every dead job (of --queue if given)")
    requeue.add_argument("--queue", type=stored_queue_name)
    repeat_broker_flags(listing, show, requeue)
    parser.set_defaults(func=dlq)


def _letter_json(letter: DeadLetter) -> dict[str, Any]:
    job = letter.job
    return {
        "id": job.id,
        "queue": job.queue,
        "payload": job.payload,
        "attempts": job.attempt,
        "max_attempts": job.max_attempts,
        "priority": job.priority.name.lower(),
        "error": letter.error,
        "traceback": letter.traceback,
        "died_at": letter.died_at,
    }


def dlq(args: argparse.Namespace) -> int:
    if args.action == "requeue" and bool(args.ids) == bool(args.all):
        raise UsageError("dlq requeue takes job IDs or --all (not both, not neither)")
    return trio.run(_dlq, args)


async def _dlq(args: argparse.Namespace) -> int:
    # No command here makes a database: with none, there are no dead jobs to touch.
    async with open_broker(args.broker, create=False) as broker:
        if args.action == "list":
            letters = await broker.list_dead(args.queue, limit=args.limit)
            if args.json:
                print_json([_letter_json(d) for d in letters])
            elif not letters:
                print("no dead jobs")
            else:
                rows = [(d.job.id, d.job.queue, d.job.attempt, d.error[:70]) for d in letters]
                print(table(("id", "queue", "attempts", "error"), rows))
            return EXIT_OK
        if args.action == "show":
            letter = await broker.get_dead(args.id)
            if letter is None:
                raise NoSuchDeadJob(args.id)
            if args.json:
                print_json(_letter_json(letter))
            else:
                for key, value in _letter_json(letter).items():
                    if key != "traceback":
                        print(f"{key}: {value}")
                if letter.traceback:
                    print("traceback:\n" + letter.traceback.rstrip())
            return EXIT_OK
        count = await broker.requeue_dead(None if args.all else args.ids, queue=args.queue)
        if args.json:
            print_json({"requeued": count})
        else:
            print(f"requeued {count} job{'s' if count != 1 else ''}")
        return EXIT_OK if args.all or count == len(args.ids) else EXIT_FAILED
