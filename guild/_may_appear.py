"""How long a job id that the broker does not know may still take to appear.

``result(job_id, wait=S)`` of an id the broker has never heard of (a typo, an id
from another broker) or whose record retention removed would otherwise wait all
S seconds for a job that never comes. Only two kinds of unknown id can still
become a job:

* an id guild made in the last :data:`ARRIVAL_WINDOW` seconds: a producer makes
  a job's id before its enqueue lands (an enqueue may wait for SQLite's write
  lock, up to 30 s), so another process may hold the id a moment before the
  broker does. guild's ids carry the time they were made (:mod:`guild._ids`).
* the id of a workflow step's (or compensation's) job, ``<workflow id>.<n>``
  or ``<workflow id>.<n>.undo``, while that workflow runs: ``guild workflow
  show`` lists the ids of steps whose jobs are not enqueued yet.

Any other unknown id is answered at once. (``guild enqueue`` and the clients
hand an id out only once its enqueue has landed, so ``enqueue`` in one shell and
``result --wait`` in another never meets an unknown id.)
"""

from __future__ import annotations

import math
import re
import time

from ._ids import made_at
from .brokers._protocol import Broker
from .brokers._workflow_store import WorkflowStore

ARRIVAL_WINDOW = 60.0
"""Seconds after an id was made during which its job may still be on its way to
the broker: SQLite's 30 s write-lock patience, and room for clock skew between
the producer's machine and this one."""

_STEP_JOB_ID = re.compile(r"([A-Za-z0-9][A-Za-z0-9_-]{0,127})\.(?:0|[1-9][0-9]*)(?:\.undo)?")
"""A workflow step's job id (``guild.workflows._steps.step_job_id``) and its
workflow's id (the rule of ``Workflow.id``)."""


async def time_to_appear(broker: Broker, job_id: str) -> float:
    """Seconds within which the job ``job_id``, unknown to ``broker`` now, may
    still appear (``math.inf``: any time, a running workflow's step); 0 if it
    never will."""
    made = made_at(job_id)
    if made is not None:
        age = time.time() - made
        # An id from further ahead than any clock skew is no id of a job on its way.
        return ARRIVAL_WINDOW - age if abs(age) < ARRIVAL_WINDOW else 0.0
    step = _STEP_JOB_ID.fullmatch(job_id)
    if step is None or not isinstance(broker, WorkflowStore):
        return 0.0
    record = await broker.get_workflow(step.group(1))
    # Here, not at the top: a process that uses no workflow never loads their machine.
    from .workflows._machine import FINISHED_STATUSES

    if record is None or record.status in FINISHED_STATUSES:
        return 0.0
    return math.inf
