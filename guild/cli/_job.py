"""``guild job cancel ID``: stop one job, wherever it is. (``guild job show ID``,
everything known of a job, is in ``_jobshow``.)

Exit 0 when the job was cancelled (it was waiting) or its cancel requested (it
is running: its worker stops it within about a second); 1 when it had already
finished; 2 for bad input: an id no job has.
"""

from __future__ import annotations

import argparse
from typing import Any

from .._client import client_url
from .._errors import UnknownJob
from .._job import JobStatus
from ..brokers._protocol import Broker
from ..brokers._url import open_broker
from ._args import CommandFailed, add_broker_flags, identifier, repeat_broker_flags
from ._jobshow import show_job
from ._output import EXIT_OK, print_json


class AlreadyFinished(CommandFailed):
    """``job cancel ID``: the job had finished before the cancel came."""

    def __init__(self, job_id: str, status: JobStatus) -> None:
        super().__init__(f"job {job_id} has already finished: it is {status.value}")
        self.job_id = job_id
        self.status = status


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("job", help="act on one job: show it, cancel it")
    add_broker_flags(parser)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = actions.add_parser(
        "show",
        help="everything known of a job: status, attempts, timings, worker, last error"
        " with its traceback, progress, result",
    )
    show.add_argument("id", type=identifier("a job id"))
    cancel = actions.add_parser(
        "cancel",
        help="cancel a job: a waiting one never runs, a running one is stopped within a second",
    )
    cancel.add_argument("id", type=identifier("a job id"))
    repeat_broker_flags(show, cancel)
    parser.set_defaults(func=job)


async def job(args: argparse.Namespace) -> int:
    # Refuses memory:// (nothing there outside this process) before opening anything.
    url = client_url(args.broker)
    async with open_broker(url, create=False) as broker:
        if args.action == "show":
            return await show_job(broker, args.id, as_json=args.json)
        return await cancel_job(broker, args.id, as_json=args.json)


async def cancel_job(broker: Broker, job_id: str, *, as_json: bool) -> int:
    """Cancel one job and say what became of it.

    Raises:
        AlreadyFinished: it had finished (exit 1).
        UnknownJob: no job has that id (exit 2).
    """
    answered = await broker.cancel([job_id])
    if not answered:
        found = await broker.get_result(job_id)
        if found is None:
            raise UnknownJob(job_id)
        raise AlreadyFinished(job_id, found.status)
    # Ended at once (it was waiting), or still running with a request standing.
    ended = await broker.get_result(job_id)
    state = "cancelled" if ended is not None else "cancelling"
    if as_json:
        print_json({"id": job_id, "state": state})
    elif ended is not None:
        print(f"cancelled {job_id}")
    else:
        print(f"cancelling {job_id}: it is running; its worker stops it within a second")
    return EXIT_OK
