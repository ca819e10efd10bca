"""Canary lanes: where a queue's canary share of new jobs goes.

A queue ``emails`` under a rollout has a lane, the queue ``emails@canary``,
which only canary workers claim. A broker's ``enqueue`` passes its jobs through
:func:`route_jobs` with the shares stored in it, so every producer, in any
process, sends the canary its share without knowing a rollout exists.

Which jobs go is a pure function of the job: a hash of its idempotency key (or,
without one, of its id) against the share. A duplicate enqueue of a keyed job
lands where the first went as long as the share holds, and a test can say in
advance which jobs a share sends.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from .._job import Job, replace_fields

LANE_SUFFIX = "@canary"


def lane_of(queue: str) -> str:
    """The canary lane of ``queue``."""
    return queue + LANE_SUFFIX


def base_of(queue: str) -> str | None:
    """The queue whose lane ``queue`` is, or ``None`` when it is no lane."""
    if queue.endswith(LANE_SUFFIX) and len(queue) > len(LANE_SUFFIX):
        return queue[: -len(LANE_SUFFIX)]
    return None


def draw(job: Job) -> float:
    """A number in [0, 1) fixed by the job: it goes to the lane when under the share."""
    seed = (job.key if job.key is not None else job.id).encode()
    digest = hashlib.blake2b(seed, digest_size=8, person=b"guild-canary").digest()
    return int.from_bytes(digest, "big") / 2.0**64


def route_jobs(jobs: Sequence[Job], shares: Mapping[str, float]) -> Sequence[Job]:
    """``jobs``, each of a queue with a share sent to its lane when its draw is under it.

    ``shares`` maps a queue to its canary's share (0..1); a queue not in it, or at
    0, keeps its jobs. The same sequence comes back when nothing moves.
    """
    if not shares:
        return jobs
    routed: list[Job] | None = None
    for index, job in enumerate(jobs):
        share = shares.get(job.queue, 0.0)
        if share > 0 and draw(job) < share:
            if routed is None:
                routed = list(jobs)
            routed[index] = replace_fields(job, queue=lane_of(job.queue))
    return jobs if routed is None else routed
