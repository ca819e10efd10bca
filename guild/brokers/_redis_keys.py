"""Every Redis key name guild uses, in one place (the Lua scripts build the same names).

In cluster mode the prefix is a hash tag (``{guild}``), so every name below
hashes to the one slot of that tag; see :func:`cluster_prefix`.
"""

from __future__ import annotations

GROUP = "guild"
"""The consumer group on every queue's stream."""

DEFAULT_PREFIX = "guild"


def hash_tag(name: str) -> str | None:
    """The hash tag Redis Cluster hashes ``name`` by, or ``None`` (it hashes the whole name).

    As Redis does: the text between the first ``{`` and the first ``}`` after it,
    if that text is not empty.
    """
    start = name.find("{")
    if start < 0:
        return None
    end = name.find("}", start + 1)
    if end < 0 or end == start + 1:
        return None
    return name[start + 1 : end]


def cluster_prefix(prefix: str) -> str:
    """The prefix to use on a Redis Cluster: one whose every key lands in one slot.

    ``guild`` becomes ``{guild}``; a prefix that already holds a hash tag
    (``app:{jobs}``) is kept as it is. Every key name starts with the prefix, so
    its first hash tag is the prefix's whatever the job id or queue name holds.
    """
    return prefix if hash_tag(prefix) is not None else "{" + prefix + "}"


def anchor(prefix: str) -> str:
    """The key passed as ``KEYS[1]`` to every script: it names the slot (and so the
    cluster node) the script runs on, and is one of the keys the scripts use."""
    return queues(prefix)


def job(prefix: str, job_id: str) -> str:
    return f"{prefix}:job:{job_id}"


def ready(prefix: str, queue: str) -> str:
    return f"{prefix}:q:{queue}:ready"


def ready_level(prefix: str, queue: str, level: int) -> str:
    """The zset of ready jobs of a priority other than normal (normal ones are
    the stream ``ready``): id -> the time it got ready."""
    return f"{prefix}:q:{queue}:ready:{level}"


def wake(prefix: str, queue: str) -> str:
    """A one-entry stream added to whenever a ``ready_level`` job gets ready: an
    idle claimer of an older guild blocks on it beside the ready stream (this
    one is handed its jobs: see :func:`idlers`)."""
    return f"{prefix}:q:{queue}:wake"


def idlers(prefix: str, queue: str) -> str:
    """Zset: the consumers idle on ``queue`` -> until when (Redis' clock, in ms); a
    script that makes a job ready claims it for the first of them."""
    return f"{prefix}:q:{queue}:idlers"


def inbox(prefix: str, queue: str, consumer: str) -> str:
    """The list an idle consumer BLPOPs: the jobs claimed for it while it was idle."""
    return f"{prefix}:q:{queue}:inbox:{consumer}"


def delayed(prefix: str, queue: str) -> str:
    return f"{prefix}:q:{queue}:delayed"


def dead(prefix: str, queue: str) -> str:
    return f"{prefix}:q:{queue}:dead"


def queues(prefix: str) -> str:
    return f"{prefix}:queues"


def result(prefix: str, job_id: str) -> str:
    return f"{prefix}:result:{job_id}"


def notify(prefix: str, job_id: str) -> str:
    return f"{prefix}:notify:{job_id}"


def cancels(prefix: str) -> str:
    """The set of job ids with a cancel request (the job hash's ``cancel`` says if live)."""
    return f"{prefix}:cancels"


def cancelled(prefix: str) -> str:
    """Hash: queue -> how many of its jobs ended cancelled."""
    return f"{prefix}:cancelled"


def epoch(prefix: str) -> str:
    """A random token written once: if it vanishes or changes, Redis lost data."""
    return f"{prefix}:epoch"


def workflow(prefix: str, workflow_id: str) -> str:
    """A workflow's hash (see ``_redis_workflows.lua`` for its indexes)."""
    return f"{prefix}:wf:{workflow_id}"


def layout(prefix: str) -> str:
    """The key layout version (an integer) of the keys under ``prefix``; see ``_redis_layout``."""
    return f"{prefix}:layout"
