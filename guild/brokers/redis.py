"""The Redis broker: Streams and consumer groups, for many processes on many machines.

Theory of operation (the Lua side is ``_redis_functions.lua``):

* Each queue is a stream with one consumer group. An enqueue writes the job's
  hash and ``XADD``s ``{j: id}``; a delayed job (or a retry) waits in a sorted
  set by due time instead.
* ``claim`` is one script call while there is work (``@claim``): move due
  delayed jobs and expired leases back to the stream (dead-lettering those
  whose attempts are spent), a non-blocking ``XREADGROUP`` of up to N entries,
  and the mark (attempt + 1, a lease in a sorted set, a fresh receipt, the
  entry ``XACK``ed and ``XDEL``ed). An idle worker then blocks in ``XREAD …
  BLOCK`` for entries newer than the stream's last id (it takes nothing, so no
  delivery can be stranded between a read and a mark), bounded by the next due
  time — it wakes within a millisecond of an enqueue, with no polling.
* A lease is a score in ``q:<queue>:leases``: exact, whatever lease each claimer
  asked for, and renewed by ``extend`` only for the receipt that holds it.
  The claim script also walks the consumer group's pending list with a
  persistent ``XAUTOCLAIM`` cursor and gives back any entry read but never
  marked (a script that failed half-way), so nothing can be stranded there.
* Results live under ``result:<id>`` with a TTL. ``get_result(wait=…)`` is two
  round trips: ``@await`` returns the result or counts the caller in
  ``waiting:<id>``; the script that finishes the job pushes the result itself
  to ``notify:<id>`` once per waiter, which the caller ``BLPOP``s. No pub/sub
  subscription per job.

Every coredis error is translated at one boundary (``map_redis_exceptions``):
``BrokerUnavailable`` when Redis cannot be reached, ``BrokerClosed`` after
``aclose``.

Redis Cluster (``redis+cluster://host:port``, ``rediss+cluster://…``; any one
node will do, the client discovers the rest): the scripts touch many keys of a
job and its queue in one atomic step, and Redis Cluster only allows that for
keys of one hash slot. So in cluster mode the key prefix is a hash tag
(``guild`` becomes ``{guild}``, see ``_redis_keys.cluster_prefix``): every key of
one prefix hashes to one slot, and so lives on one shard. Every script call
names one real key of that slot as ``KEYS[1]``, so the client routes it to the
node that owns the slot and Redis lets the script use the slot's other keys;
the direct commands (``XREADGROUP``, ``XGROUP CREATE``, ``BLPOP``, …) use the same
tagged names and go to the same node. One prefix therefore scales like one
Redis primary (plus its replicas for failover); to spread load over the
cluster, give apps or groups of queues their own prefixes — the same trade-off
BullMQ-style queues make with their ``{queue}`` tags.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import AsyncExitStack
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import coredis
import trio
from coredis.connection import TCPLocation

from .._errors import BrokerClosed, BrokerUnavailable, UnknownBrokerURL
from .._groups import leaves
from .._ids import new_id
from .._job import (
    DeadLetter,
    Delivery,
    Job,
    JobStatus,
    JSONValue,
    QueueStats,
    Result,
    decode_payload,
    encode_payload,
    replace_fields,
)
from . import _redis_keys as keys
from ._redis_errors import UNREACHABLE, map_redis_exceptions
from ._redis_pool import SlotKeepingClusterPool, SlotKeepingPool

_ORPHAN_IDLE_MS = 5_000
_JOB_FIELDS = 11
_CLAIM_RETRY_PAUSE = 0.05


def _load_scripts() -> dict[str, str]:
    text = resources.files("guild.brokers").joinpath("_redis_functions.lua").read_text()
    sections: dict[str, list[str]] = {}
    name = ""
    for line in text.splitlines():
        if line.startswith("-- @"):
            name = line[4:].strip()
            sections[name] = []
        elif name:
            sections[name].append(line)
    common = "\n".join(sections.pop("common"))
    return {name: common + "\n" + "\n".join(body) for name, body in sections.items()}


SCRIPTS = _load_scripts()


_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def cluster_client_url(url: str) -> str | None:
    """The ``redis://`` URL coredis' cluster client takes for a ``redis+cluster://``
    (or ``rediss+cluster://``) URL; ``None`` for any other URL.

    Raises:
        UnknownBrokerURL: the URL names a database other than 0 (a cluster has only 0).
    """
    scheme, sep, rest = url.partition("://")
    plain = _CLUSTER_SCHEMES.get(scheme.lower()) if sep else None
    if plain is None:
        return None
    path = rest.split("?", 1)[0].partition("/")[2]
    if path not in ("", "0"):
        raise UnknownBrokerURL(url, "a Redis Cluster has only database 0")
    return f"{plain}://{rest}"


def _cluster_client(url: str) -> Any:
    """A ``coredis.RedisCluster`` bootstrapped from the one node ``url`` names."""
    parts = urlsplit(url)
    # The startup node is given as a TCPLocation: left to parse it from the URL,
    # coredis builds a deprecated ``Node`` dict and warns.
    startup = TCPLocation(host=parts.hostname or "localhost", port=parts.port or 6379)
    # Every key of one prefix lives on one node, so let each node's pool grow to
    # the whole connection budget (each blocked reader holds a connection).
    pool = SlotKeepingClusterPool.from_url(
        url, startup_nodes=[startup], max_connections_per_node=True
    )
    return coredis.RedisCluster(connection_pool=pool)


@contextlib.contextmanager
def _unreachable_cluster(url: str) -> Iterator[None]:
    """Cluster discovery reports "no startup node reachable" as a ``RedisClusterError``
    (caused by the last connection error): make that ``BrokerUnavailable`` too."""
    try:
        yield
    except BaseExceptionGroup as group:
        found = leaves(group)
        if len(found) == 1 and _is_unreachable(found[0]):
            raise BrokerUnavailable(f"redis: connect to {url}: {found[0]}") from found[0]
        raise
    except coredis.exceptions.RedisClusterError as exc:
        if _is_unreachable(exc):
            raise BrokerUnavailable(f"redis: connect to {url}: {exc}") from exc
        raise


def _is_unreachable(exc: BaseException) -> bool:
    return isinstance(exc, coredis.exceptions.RedisClusterError) and (
        isinstance(exc.__cause__, UNREACHABLE) or "cannot be connected" in str(exc)
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _opt_float(value: Any) -> float | None:
    text = _text(value) if value is not None else ""
    return float(text) if text else None


class RedisBroker:
    """A broker on Redis (>= 6.2) through coredis.

    Open it with ``await RedisBroker.open(url)`` (or ``guild.open_broker(url)``),
    inside the Trio run that will use it.

    Args:
        client: a connected ``coredis.Redis`` or ``coredis.RedisCluster``.
        prefix: namespace of every key (several apps can share one Redis). On a
            cluster it is made a hash tag (``guild`` -> ``{guild}``): one prefix,
            one shard.
        key_ttl: seconds an idempotency key holds.
        result_ttl: seconds a result is kept.
    """

    def __init__(
        self,
        client: Any,
        *,
        prefix: str = keys.DEFAULT_PREFIX,
        key_ttl: float = 86_400.0,
        result_ttl: float = 86_400.0,
        exit_stack: AsyncExitStack | None = None,
    ) -> None:
        self._client = client
        self._cluster = isinstance(client, coredis.RedisCluster)
        self._prefix = keys.cluster_prefix(prefix) if self._cluster else prefix
        # KEYS[1] of every script: on a cluster it routes the call to the node
        # owning the prefix's slot (and declares that slot to Redis).
        self._script_keys = [keys.anchor(self._prefix)]
        self._key_ttl = key_ttl
        self._result_ttl_ms = max(1, int(result_ttl * 1000))
        self._scripts = {name: client.register_script(body) for name, body in SCRIPTS.items()}
        self._groups: set[str] = set()
        self._exit_stack = exit_stack
        self._closed = False

    @classmethod
    async def open(cls, url: str, **options: Any) -> RedisBroker:
        """Connect to ``redis://host:port/db``, ``rediss://…``, or a Redis Cluster
        through any of its nodes: ``redis+cluster://host:port`` (``rediss+cluster://…``).

        Raises:
            BrokerUnavailable: Redis cannot be reached.
            UnknownBrokerURL: a cluster URL names a database other than 0.
        """
        stack = AsyncExitStack()
        client: Any
        if (cluster_url := cluster_client_url(url)) is not None:
            client = _cluster_client(cluster_url)
        else:
            client = coredis.Redis(connection_pool=SlotKeepingPool.from_url(url))
        with map_redis_exceptions(f"connect to {url}"), _unreachable_cluster(url):
            await stack.enter_async_context(client)
            await client.ping()
        return cls(client, exit_stack=stack, **options)

    def __repr__(self) -> str:
        return f"RedisBroker(prefix={self._prefix!r})"

    def now(self) -> float:
        return time.time()

    async def _call(self, name: str, args: Sequence[Any]) -> Any:
        if self._closed:
            raise BrokerClosed("the redis broker is closed")
        with map_redis_exceptions(name):
            return await self._scripts[name](keys=self._script_keys, args=[self._prefix, *args])

    # --- producing -------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[Job]) -> list[Job]:
        if not jobs:
            await trio.lowlevel.checkpoint()
            return []
        now = self.now()
        args: list[Any] = [repr(now), math.ceil(self._key_ttl)]
        for job in jobs:
            args += [
                job.id,
                job.queue,
                encode_payload(job.payload),
                job.max_attempts,
                "" if job.not_before is None else repr(job.not_before),
                "" if job.timeout is None else repr(job.timeout),
                job.key or "",
                job.trace_id,
            ]
        stored = [_text(i) for i in await self._call("enqueue", args)]
        out: list[Job] = []
        for job, stored_id in zip(jobs, stored, strict=True):
            if stored_id == job.id:
                out.append(_stored(job, now))
            else:
                out.append(await self._load_job(stored_id))
        return out

    async def _load_job(self, job_id: str) -> Job:
        with map_redis_exceptions("load job"):
            fields = await self._client.hgetall(keys.job(self._prefix, job_id))
        return _job_from_hash({_text(k): v for k, v in fields.items()})

    # --- claiming --------------------------------------------------------------

    async def _ensure_group(self, queue: str) -> None:
        if queue in self._groups:
            return
        # Another process may have made the group first; that is fine.
        with (
            map_redis_exceptions("create group"),
            contextlib.suppress(coredis.exceptions.StreamDuplicateConsumerGroupError),
        ):
            await self._client.xgroup_create(
                keys.ready(self._prefix, queue), keys.GROUP, "0", mkstream=True
            )
        self._groups.add(queue)

    async def claim(
        self, queue: str, *, consumer: str, limit: int, lease: float, wait: float = 0.0
    ) -> list[Delivery]:
        if self._closed:
            raise BrokerClosed("the redis broker is closed")
        await self._ensure_group(queue)
        if limit < 1:
            return []  # XREADGROUP's COUNT 0 would mean "all"
        deadline = self.now() + wait
        while True:
            now = self.now()
            lease_expires = now + lease
            args = [queue, repr(now), self._result_ttl_ms, _ORPHAN_IDLE_MS]
            args += [repr(lease_expires), consumer, limit, new_id()]
            # The script takes the jobs under a lease before it returns: a
            # cancellation while its reply is on the way would strand them until
            # their leases expire, so the reply is always read; a reply lost with
            # its connection is asked for again under the same token.
            with trio.CancelScope(shield=True):
                try:
                    flat = await self._call("claim", args)
                except BrokerUnavailable:
                    await trio.sleep(_CLAIM_RETRY_PAUSE)
                    flat = await self._call("claim", args)
            if _text(flat[0]) == "nogroup":
                # Redis lost the group (a restart without persistence): make it again.
                self._groups.discard(queue)
                await self._ensure_group(queue)
                continue
            taken = _deliveries(flat[2:], consumer, lease_expires)
            remaining = deadline - self.now()
            if taken or remaining <= 0:
                return taken
            next_due = float(_text(flat[0]))
            until = remaining if next_due < 0 else min(remaining, max(0.0, next_due - now))
            await self._wait_for_entries(queue, _text(flat[1]), max(1, int(until * 1000)))

    async def _wait_for_entries(self, queue: str, after: str, block_ms: int) -> None:
        """Block until the stream has an entry newer than ``after`` (or ``block_ms``
        passed). ``XREAD`` takes nothing: the next claim script does, atomically,
        so an idle worker wakes within a millisecond of an enqueue, no polling."""
        with map_redis_exceptions("xread"):
            await self._client.xread({keys.ready(self._prefix, queue): after}, block=block_ms)

    # --- settling --------------------------------------------------------------

    async def ack(self, done: Sequence[tuple[Delivery, JSONValue]]) -> None:
        if not done:
            await trio.lowlevel.checkpoint()
            return
        args: list[Any] = [repr(self.now()), self._result_ttl_ms]
        for delivery, value in done:
            args += [delivery.job.id, encode_payload(value)]
        await self._call("ack", args)

    async def retry(self, delivery: Delivery, *, at: float, error: str) -> None:
        await self._call(
            "retry", [repr(self.now()), delivery.job.id, delivery.receipt, repr(at), error]
        )

    async def dead(self, delivery: Delivery, *, error: str, traceback: str | None = None) -> None:
        await self._call(
            "dead",
            [
                repr(self.now()),
                delivery.job.id,
                delivery.receipt,
                error,
                traceback or "",
                self._result_ttl_ms,
            ],
        )

    async def release(self, deliveries: Sequence[Delivery]) -> None:
        args: list[Any] = []
        for delivery in deliveries:
            args += [delivery.job.id, delivery.receipt]
        await self._call("release", args)

    async def extend(self, deliveries: Sequence[Delivery], *, lease: float) -> list[Delivery]:
        if not deliveries:
            await trio.lowlevel.checkpoint()
            return []
        now = self.now()
        lease_expires = now + lease
        args: list[Any] = [repr(now), repr(lease_expires)]
        for delivery in deliveries:
            args += [delivery.job.id, delivery.receipt]
        renewed = {_text(i) for i in await self._call("extend", args)}
        return [
            Delivery(job=d.job, receipt=d.receipt, consumer=d.consumer, lease_expires=lease_expires)
            for d in deliveries
            if d.job.id in renewed
        ]

    # --- results, stats, dead letters ---------------------------------------------

    async def get_result(self, job_id: str, *, wait: float = 0.0) -> Result | None:
        if self._closed:
            raise BrokerClosed("the redis broker is closed")
        key = keys.result(self._prefix, job_id)
        if wait <= 0:
            with map_redis_exceptions("get result"):
                raw = await self._client.get(key)
            return None if raw is None else _result_from_json(raw)
        # Two round trips: the script returns the result or registers us as a
        # waiter; the finishing script pushes the result to each waiter's BLPOP.
        raw = await self._call("await", [job_id, math.ceil(wait * 1000)])
        if raw is None:
            with map_redis_exceptions("wait for result"):
                popped = await self._client.blpop([keys.notify(self._prefix, job_id)], timeout=wait)
                raw = popped[1] if popped else await self._client.get(key)
        return None if raw is None else _result_from_json(raw)

    async def stats(self, queues: Sequence[str] | None = None) -> dict[str, QueueStats]:
        flat = await self._call("stats", [repr(self.now()), *(queues or [])])
        out: dict[str, QueueStats] = {}
        for i in range(0, len(flat), 6):
            name = _text(flat[i])
            ready, delayed, in_flight, done, dead = (int(v) for v in flat[i + 1 : i + 6])
            out[name] = QueueStats(
                queue=name, ready=ready, delayed=delayed, in_flight=in_flight, done=done, dead=dead
            )
        return out

    async def list_dead(self, queue: str | None = None, *, limit: int = 100) -> list[DeadLetter]:
        if self._closed:
            raise BrokerClosed("the redis broker is closed")
        with map_redis_exceptions("list dead"):
            if queue is None:
                names = [_text(q) for q in await self._client.smembers(keys.queues(self._prefix))]
            else:
                names = [queue]
            scored: list[tuple[float, str]] = []
            for name in names:
                rows = await self._client.zrange(
                    keys.dead(self._prefix, name), 0, limit - 1, withscores=True
                )
                scored += [(float(score), _text(member)) for member, score in rows]
        scored.sort()
        letters = []
        for _, job_id in scored[:limit]:
            letter = await self.get_dead(job_id)
            if letter is not None:
                letters.append(letter)
        return letters

    async def get_dead(self, job_id: str) -> DeadLetter | None:
        if self._closed:
            raise BrokerClosed("the redis broker is closed")
        with map_redis_exceptions("get dead"):
            raw = await self._client.hgetall(keys.job(self._prefix, job_id))
        fields = {_text(k): v for k, v in raw.items()}
        if _text(fields.get("status", b"")) != "dead":
            return None
        return DeadLetter(
            job=_job_from_hash(fields),
            error=_text(fields.get("error", b"")),
            traceback=_text(fields.get("traceback", b"")) or None,
            died_at=float(_text(fields.get("died_at", b"0"))),
        )

    async def requeue_dead(
        self, job_ids: Sequence[str] | None = None, *, queue: str | None = None
    ) -> int:
        if job_ids is not None and not job_ids:
            await trio.lowlevel.checkpoint()
            return 0
        return int(await self._call("requeue", [queue or "", *(job_ids or [])]))

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._exit_stack is not None:
            # Not shielded: the client's task group must be exited in the same
            # cancel-scope nesting it was entered in.
            with map_redis_exceptions("close"):
                await self._exit_stack.aclose()
        await trio.lowlevel.checkpoint()


def _stored(job: Job, now: float) -> Job:
    return replace_fields(job, enqueued_at=now, attempt=0)


def _job_from_row(row: Sequence[Any]) -> Job:
    job_id = _text(row[0])
    base = Job(queue=_text(row[1]), id=job_id, trace_id=_text(row[9]) or job_id)
    return replace_fields(
        base,
        payload=decode_payload(job_id, row[2]),
        attempt=int(_text(row[3])),
        max_attempts=int(_text(row[4])),
        enqueued_at=float(_text(row[5])),
        not_before=_opt_float(row[6]),
        timeout=_opt_float(row[7]),
        key=_text(row[8]) or None,
    )


def _job_from_hash(fields: dict[str, Any]) -> Job:
    order = (
        "id",
        "queue",
        "payload",
        "attempt",
        "max_attempts",
        "enqueued_at",
        "not_before",
        "timeout",
        "key",
        "trace_id",
    )
    return _job_from_row([fields.get(name, b"") for name in order])


def _result_from_json(raw: Any) -> Result:
    data = json.loads(raw)
    return Result(
        job_id=data["job_id"],
        queue=data["queue"],
        status=JobStatus(data["status"]),
        value=data.get("value"),
        error=data.get("error"),
        attempts=int(data["attempts"]),
        finished_at=float(data["finished_at"]),
    )


def _deliveries(flat: Sequence[Any], consumer: str, lease_expires: float) -> list[Delivery]:
    deliveries = []
    for i in range(0, len(flat), _JOB_FIELDS):
        row = flat[i : i + _JOB_FIELDS]
        deliveries.append(
            Delivery(
                job=_job_from_row(row),
                receipt=_text(row[10]),
                consumer=consumer,
                lease_expires=lease_expires,
            )
        )
    return deliveries
