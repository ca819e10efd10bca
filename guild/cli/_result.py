"""``guild result ID [--wait S]``: what became of one job (also behind ``enqueue --wait``).

Exit 0 when the job is done (its value printed as JSON), 1 when it finished
otherwise (dead, cancelled) or had not finished within ``--wait``, 2 for bad
input: an unknown id among it.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from .._client import client_url, job_result, job_status
from .._job import JobStatus, Result
from ..brokers._protocol import Broker
from ..brokers._url import open_broker
from ._args import CommandFailed, add_broker_flags, identifier, number
from ._output import EXIT_OK, print_json

MAX_WAIT = 86_400.0


class JobNotDone(CommandFailed):
    """The job finished without a value (dead, cancelled), or not within the wait."""

    def __init__(self, job_id: str, status: JobStatus, detail: str) -> None:
        super().__init__(f"job {job_id} is {status.value}{detail}")
        self.job_id = job_id
        self.status = status


def wait_option(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument(
        "--wait",
        type=number(0, MAX_WAIT),
        metavar="S",
        help=f"{help} (0 to {MAX_WAIT:g} s)",
    )


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("result", help="a job's result, waiting for it with --wait")
    parser.add_argument("id", type=identifier("a job id"))
    wait_option(parser, "seconds to wait for the job to finish (default: answer at once)")
    add_broker_flags(parser)
    parser.set_defaults(func=result)


async def result(args: argparse.Namespace) -> int:
    # Refuses memory:// (nothing there outside this process) before opening anything.
    url = client_url(args.broker)
    async with open_broker(url, create=False) as broker:
        return await show_result(broker, args.id, args.wait or 0.0, as_json=args.json)


async def show_result(broker: Broker, job_id: str, wait: float, *, as_json: bool) -> int:
    """Print the job's result; raise :class:`JobNotDone` unless it is done.

    Raises:
        UnknownJob: the broker knows no job with that id (exit 2).
    """
    return await show_found(broker, job_id, await job_result(broker, job_id, wait), wait, as_json)


async def show_found(
    broker: Broker, job_id: str, found: Result | None, wait: float, as_json: bool
) -> int:
    """:func:`show_result` of a result found already (``None``: not finished after ``wait``)."""
    if found is None:
        status = await job_status(broker, job_id)
        waited = f"after waiting {wait:g} s" if wait else "yet (--wait S waits for it)"
        raise JobNotDone(job_id, status, f": not finished {waited}")
    if as_json:
        print_json(_result_json(found))
    elif found.ok:
        print(json.dumps(found.value, ensure_ascii=False))
    if not found.ok:
        raise JobNotDone(
            job_id,
            found.status,
            f" after {found.attempts} attempt{'s' if found.attempts != 1 else ''}"
            + (f": {found.error}" if found.error else ""),
        )
    return EXIT_OK


def _result_json(found: Result) -> dict[str, Any]:
    return {
        "id": found.job_id,
        "queue": found.queue,
        "status": found.status.value,
        "value": found.value,
        "error": found.error,
        "attempts": found.attempts,
        "finished_at": found.finished_at,
    }
