"""``guild job show ID [--json]``: everything the broker knows of one job.

Exit 0 when the job was found (whatever its status), 2 for an id no job has.
The human form is one ``name  value`` line per field, then the traceback (if the
job's last error has one) indented under ``traceback:``; ``--json`` prints
:meth:`guild.JobInfo.to_json`.
"""

from __future__ import annotations

import datetime
import json

from .._client import job_info
from .._jobinfo import JobInfo
from ..brokers._protocol import Broker
from ._output import EXIT_OK, print_json


async def show_job(broker: Broker, job_id: str, *, as_json: bool) -> int:
    """Print the job.

    Raises:
        UnknownJob: no job has that id (exit 2).
    """
    info = await job_info(broker, job_id)
    if as_json:
        print_json(info.to_json())
    else:
        print(render(info))
    return EXIT_OK


_WIDTH = len("not before")


def _when(at: float | None) -> str:
    if at is None:
        return "-"
    moment = datetime.datetime.fromtimestamp(at, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _seconds(value: float) -> str:
    return f"{value:.3f} s"


def render(info: JobInfo) -> str:
    """The human form of ``info`` (times as UTC ISO 8601, to the millisecond)."""
    limit = "" if info.max_attempts is None else f" of {info.max_attempts}"
    rows: list[tuple[str, str]] = [
        ("id", info.id),
        ("queue", info.queue),
        ("status", info.status.value),
        ("attempts", f"{info.attempts}{limit}"),
        ("priority", info.priority.name.lower()),
        ("enqueued", _when(info.enqueued_at)),
    ]
    if info.not_before is not None:
        rows.append(("not before", _when(info.not_before)))
    rows.append(("started", _when(info.started_at)))
    finished = _when(info.finished_at)
    if info.finished_at is not None and info.started_at is not None:
        finished += f" (last run {_seconds(info.finished_at - info.started_at)})"
    rows.append(("finished", finished))
    rows.append(("worker", info.consumer or "-"))
    if info.progress is not None:
        progress = info.progress
        said = f"{progress.fraction * 100:.1f}%"
        if progress.message:
            said += f" {progress.message}"
        rows.append(("progress", f"{said} (at {_when(progress.at)})"))
    else:
        rows.append(("progress", "-"))
    rows.append(("error", info.error or "-"))
    if info.status.value == "done":
        rows.append(("result", json.dumps(info.result, ensure_ascii=False)))
    if info.key is not None:
        rows.append(("key", info.key))
    if info.trace_id != info.id:
        rows.append(("trace", info.trace_id))
    # One width whatever the rows, so that scripts may cut at a fixed column.
    lines = [f"{name.ljust(_WIDTH)}  {_one_line(value)}" for name, value in rows]
    if info.traceback:
        lines.append("traceback:")
        lines += ["  " + line for line in info.traceback.rstrip("\n").splitlines()]
    return "\n".join(lines)


def _one_line(text: str) -> str:
    # A value with a newline (an error message, a progress message) would forge
    # a field line; the traceback alone is printed over several.
    return " ".join(text.split("\n")) if "\n" in text else text
