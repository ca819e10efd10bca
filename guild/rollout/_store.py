"""Where a rollout lives: its record and its share, in the broker every process shares.

One record per queue: the machine's state, the counts the current stage is
measured from, and the last decisions. Writes compare and set a version, so a
controller and an operator's command never overwrite each other: the loser
reads again and re-applies its event through the machine (which is how a
rollback wins a race with a promotion).

The share sits beside the record where each broker's ``enqueue`` reads it: the
SQLite table ``rollouts`` (read in the enqueue's own transaction), the Redis
hash ``<prefix>:canary:shares`` (read at most once a second per process, see
:data:`guild.brokers._canary.SHARE_CACHE_SECONDS`), the memory broker's ``canary_shares``.

:func:`move_lane` hands a lane's waiting jobs (ready and delayed) back to their
queue: in one transaction (SQLite), one script (Redis), one step (memory). Jobs
keep their ids, payloads, attempts and due times; ready ones keep their order
among themselves and go after the queue's own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .._exports import publish
from .._job import JobStatus, replace_fields
from ._kinds import kind_of as _kind
from ._lanes import lane_of
from ._machine import CanaryDecision, CanaryPolicy, CanaryState

if TYPE_CHECKING:
    # Only named in annotations: a run on Redis, which imports this module for
    # its rollouts, does not load sqlite3 at start-up.
    import sqlite3

KEEP_DECISIONS = 50
"""Decisions kept in a record (older ones stay in the logs)."""


@attrs.frozen(kw_only=True)
class CanaryRecord:
    """A queue's rollout as stored."""

    queue: str
    version: int = 0
    """Bumped by every write; 0 for a record not stored yet."""
    state: CanaryState | None = None
    policy: CanaryPolicy = attrs.field(factory=CanaryPolicy)
    baseline: Mapping[str, Mapping[str, float]] = attrs.field(factory=dict)
    """The versions' cumulative counts when the current stage began."""
    decisions: tuple[CanaryDecision, ...] = ()

    @property
    def share(self) -> float:
        return 0.0 if self.state is None else self.state.share(self.policy)

    def to_text(self) -> str:
        return json.dumps(
            {
                "queue": self.queue,
                "state": None if self.state is None else self.state.to_json(),
                "policy": {
                    "stages": list(self.policy.stages),
                    "soak": self.policy.soak,
                    "error_rate": self.policy.error_rate,
                    "p95": self.policy.p95,
                    "min_jobs": self.policy.min_jobs,
                },
                "baseline": {k: dict(v) for k, v in self.baseline.items()},
                "decisions": [d.to_json() for d in self.decisions],
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_text(cls, text: str, version: int) -> CanaryRecord:
        data = json.loads(text)
        state = data.get("state")
        return cls(
            queue=data["queue"],
            version=version,
            state=None if state is None else CanaryState.from_json(state),
            policy=CanaryPolicy(**data["policy"]),
            baseline={k: {n: float(x) for n, x in v.items()} for k, v in data["baseline"].items()},
            decisions=tuple(CanaryDecision.from_json(d) for d in data["decisions"]),
        )


# --- reading and writing records -------------------------------------------------


async def load(broker: Any, queue: str) -> CanaryRecord:
    """The queue's record (version 0, no state, when none is stored)."""
    found = (await load_all(broker, [queue])).get(queue)
    return found if found is not None else CanaryRecord(queue=queue)


async def load_all(broker: Any, queues: Sequence[str] | None = None) -> dict[str, CanaryRecord]:
    """Every stored record (of ``queues`` when given)."""
    kind = _kind(broker)
    rows: list[tuple[str, int, str]]
    if kind == "memory":
        await trio.lowlevel.checkpoint()
        rows = [(q, v, t) for q, (v, t) in broker.canary_records.items()]
    elif kind == "sqlite":

        def select(db: sqlite3.Connection) -> list[tuple[str, int, str]]:
            return [
                (str(q), int(v), str(t))
                for q, v, t in db.execute("SELECT queue, version, state FROM rollouts")
            ]

        rows = await broker._run(select)
    else:
        # Here, not at the top: only a Redis broker gets this far, and every
        # app imports this module; the others should not load coredis.
        from ..brokers._redis_errors import map_redis_exceptions

        with map_redis_exceptions("canary load"):
            texts = await broker._commands.hgetall(_redis_records(broker))
            versions = await broker._commands.hgetall(_redis_versions(broker))
        version_of = {_str(k): int(_str(v)) for k, v in versions.items()}
        rows = [(_str(q), version_of.get(_str(q), 0), _str(t)) for q, t in texts.items()]
    wanted = None if queues is None else set(queues)
    return {
        q: CanaryRecord.from_text(text, version)
        for q, version, text in rows
        if wanted is None or q in wanted
    }


async def save(broker: Any, record: CanaryRecord) -> CanaryRecord | None:
    """Store ``record`` if the stored version is still ``record.version``.

    Returns the stored record (its version bumped), or ``None`` when another
    writer got there first: read again and re-apply.
    """
    kind = _kind(broker)
    text, share, new_version = record.to_text(), record.share, record.version + 1
    stored = attrs.evolve(record, version=new_version)
    if kind == "memory":
        await trio.lowlevel.checkpoint()
        current = broker.canary_records.get(record.queue, (0, ""))[0]
        if current != record.version:
            return None
        broker.canary_records[record.queue] = (new_version, text)
        if share > 0:
            broker.canary_shares[record.queue] = share
        else:
            broker.canary_shares.pop(record.queue, None)
        return stored
    if kind == "sqlite":

        def put(db: sqlite3.Connection) -> bool:
            if record.version == 0:
                cursor = db.execute(
                    "INSERT INTO rollouts (queue, share, version, state) VALUES (?,?,?,?)"
                    " ON CONFLICT (queue) DO NOTHING",
                    (record.queue, share, new_version, text),
                )
            else:
                cursor = db.execute(
                    "UPDATE rollouts SET share = ?, version = ?, state = ?"
                    " WHERE queue = ? AND version = ?",
                    (share, new_version, text, record.queue, record.version),
                )
            return cursor.rowcount == 1

        return stored if await broker._write(put) else None
    done = await broker._call("canary_put", [record.queue, record.version, text, repr(share)])
    broker._canary_shares.forget()  # this process sees its own change at once
    return stored if int(done) == 1 else None


def with_decision(record: CanaryRecord, decision: CanaryDecision) -> tuple[CanaryDecision, ...]:
    """The record's decisions with ``decision`` added, the oldest dropped past the limit."""
    return (*record.decisions, decision)[-KEEP_DECISIONS:]


# --- moving a lane back ------------------------------------------------------------


async def move_lane(broker: Any, queue: str) -> int:
    """Hand every waiting job of ``queue``'s lane back to ``queue``; returns how many.

    Jobs held by a worker are left to it: when it gives one back (a retry, a
    release, a lease that ran out) the job waits in the lane again, so a
    controller calls this until nothing is held there.
    """
    kind, lane = _kind(broker), lane_of(queue)
    if kind == "memory":
        await trio.lowlevel.checkpoint()
        waiting = sorted(
            (
                e
                for e in broker._entries.values()
                if e.job.queue == lane and e.status in (JobStatus.READY, JobStatus.DELAYED)
            ),
            key=lambda e: (e.ready_at, e.job.id),
        )
        for entry in waiting:
            entry.job = replace_fields(entry.job, queue=queue)
            broker._make_waiting(entry, entry.ready_at)
        return len(waiting)
    if kind == "sqlite":

        def move(db: sqlite3.Connection) -> int:
            cursor = db.execute(
                "UPDATE jobs SET queue = ? WHERE queue = ? AND status = 'ready'", (queue, lane)
            )
            return int(cursor.rowcount)

        moved: int = await broker._write(move)
        if moved:
            broker._wake()
        return moved
    return int(await broker._call("canary_move", [lane, queue]))


async def hand_back_dead(broker: Any, queue: str) -> int:
    """Requeue on ``queue``, attempts reset, every job that died in its lane: the
    canary spent those attempts, and a rollback gives the job to the stable
    version whole. Returns how many."""
    kind, lane = _kind(broker), lane_of(queue)
    ids: list[str]
    if kind == "memory":
        await trio.lowlevel.checkpoint()
        ids = [i for i, letter in broker._dead.items() if letter.job.queue == lane]
        for job_id in ids:
            letter = broker._dead[job_id]
            broker._dead[job_id] = attrs.evolve(letter, job=replace_fields(letter.job, queue=queue))
            entry = broker._entries.get(job_id)
            if entry is not None:
                entry.job = replace_fields(entry.job, queue=queue)
    elif kind == "sqlite":

        def refile(db: sqlite3.Connection) -> list[str]:
            rows = db.execute(
                "UPDATE jobs SET queue = ? WHERE queue = ? AND status = 'dead' RETURNING id",
                (queue, lane),
            )
            return [str(row[0]) for row in rows]

        ids = await broker._write(refile)
    else:
        ids = [_str(i) for i in await broker._call("canary_move_dead", [lane, queue])]
    if not ids:
        return 0
    requeued: int = await broker.requeue_dead(ids, queue=queue)
    return requeued


async def lane_held(broker: Any, queue: str) -> int:
    """How many jobs of ``queue``'s lane are waiting or held now."""
    lane = lane_of(queue)
    stats = (await broker.stats([lane]))[lane]
    held: int = stats.ready + stats.delayed + stats.in_flight
    return held


def _redis_records(broker: Any) -> str:
    return f"{broker.prefix}:canary"


def _redis_versions(broker: Any) -> str:
    return f"{broker.prefix}:canary:versions"


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# Reprs, tracebacks and pickles name guild.X (see guild._exports).
publish(globals())
