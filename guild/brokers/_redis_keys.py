"""Every Redis key name guild uses, in one place (the Lua scripts build the same names)."""

from __future__ import annotations

GROUP = "guild"
"""The consumer group on every queue's stream."""

DEFAULT_PREFIX = "guild"


def job(prefix: str, job_id: str) -> str:
    return f"{prefix}:job:{job_id}"


def ready(prefix: str, queue: str) -> str:
    return f"{prefix}:q:{queue}:ready"


def dead(prefix: str, queue: str) -> str:
    return f"{prefix}:q:{queue}:dead"


def queues(prefix: str) -> str:
    return f"{prefix}:queues"


def result(prefix: str, job_id: str) -> str:
    return f"{prefix}:result:{job_id}"


def waiting(prefix: str, job_id: str) -> str:
    return f"{prefix}:waiting:{job_id}"


def notify(prefix: str, job_id: str) -> str:
    return f"{prefix}:notify:{job_id}"
