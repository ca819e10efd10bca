"""The Redis broker: Streams and consumer groups, for many processes on many machines.

Theory of operation (the Lua side is ``_redis_functions.lua``):

* Each queue is a stream with one consumer group. An enqueue writes the job's
  hash and ``XADD``s ``{j: id}``; a delayed job (or a retry) waits in a sorted
  set by due time instead.
* ``claim`` is one script call while there is work (``@claim``): move due
  delayed jobs and expired leases back to the stream (dead-lettering those
  whose attempts are spent), a non-blocking ``XREADGROUP`` of up to N entries,
  and the mark (attempt + 1, a lease in a sorted set, a fresh receipt, the
  entry ``XACK``ed and ``XDEL``ed).
* A claim that leaves the queue dry registers its consumer as idle (with its
  free capacity, until its wait ends or the next due time) and the worker
  ``BLPOP``s its own inbox list. Every script that makes a job ready ends by
  claiming ready jobs for the first idle consumer, in the same atomic step
  (the same mark and lease), and pushing them to its inbox: the wake-up reply
  is the job itself, and a worker that dies with it loses nothing (the lease
  brings it back). While the registration has room, the worker's next claim
  is the next ``BLPOP`` (``_Idle``): no claim script runs between a job and
  its ack. A worker that stops claiming ends the registration
  (``stop_claiming``), giving back what was handed and not taken.
* A lease is an entry in ``q:<queue>:leases``, scored by its expiry rounded up
  to a whole second (Redis sorts whole numbers without parsing them, a quarter
  of its CPU per job in a drain on Redis 7.0); the exact expiry, whatever lease
  each claimer asked for, is the job hash's ``lease_expires``, which decides.
  Renewed by ``extend`` only for the receipt that holds it.
  The claim script also walks the consumer group's pending list with a
  persistent ``XAUTOCLAIM`` cursor and gives back any entry read but never
  marked (a script that failed half-way), so nothing can be stranded there.
* Results live under ``result:<id>`` with a TTL. ``get_result(wait=…)`` is one
  round trip: a script (``_redis_await.lua``) and a ``BLPOP`` of ``notify:<id>``,
  pipelined. The script counts the caller in ``waiting:<id>``, or pushes a
  result that is there already for the ``BLPOP`` to take; the script that
  finishes the job pushes the result itself to ``notify:<id>`` once per waiter.
  No pub/sub subscription per job. (On a cluster: the script, then the
  ``BLPOP``.) ``enqueue_and_wait`` puts the enqueue script before those two in
  the same pipeline, its await script (``@await`` of ``_redis_await.lua``) pushing an empty
  marker when the enqueue left no job under the id, so that a refused enqueue
  does not leave the ``BLPOP`` blocked for the wait.

When the broker opened a single Redis from its URL, every call of a worker and
a producer goes through a lean Trio connection pool over hiredis
(``_redis_wire``): the open's checks, the scripts, the inbox ``BLPOP``, results,
job reads, the ledger and the workflow store. coredis (0.3 s to import) is then
loaded only when something needs it (``purge``, ``redis_client()``: a Redis-shared
``guild.Limit``), in a thread, and its client runs in a nursery the broker opens
with itself. A cluster, a URL the lean pool does not speak (TLS, options), and a
client passed in use coredis for everything (docs/brokers.md, "Why coredis").
Every error of either is translated at one boundary (``map_redis_exceptions``):
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
import hashlib
import importlib
import json
import math
import secrets
import sys
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any, Literal

import attrs
import outcome
import structlog
import trio

from .._codec import (
    ROW_FIELDS,
    BadRow,
    ResultJSON,
    encode_payloads,
    job_from_row,
    lenient_seconds,
)
from .._errors import BrokerClosed, BrokerError, BrokerUnavailable, UnknownBrokerURL
from .._groups import leaves
from .._ids import new_id
from .._job import (
    DeadLetter,
    Delivery,
    Job,
    JobStatus,
    Priority,
    QueueStats,
    Result,
    make_delivery,
    replace_fields,
    with_attempt,
)
from .._jobinfo import JobInfo, JobProgress
from .._retention import Retention
from . import _redis_jobinfo, _redis_purge
from . import _redis_keys as keys
from ._canary import RedisShares
from ._delegate import WorkflowDelegate
from ._protocol import BrokerIssue, check_purge_args
from ._redis_checks import CONFIG_KEYS, DataLoss, config_issues
from ._redis_errors import (
    GroupExistsError,
    WrongTypeError,
    map_redis_exceptions,
    unreachable,
    wrong_type_text,
)
from ._redis_layout import layout_version
from ._redis_ledger import RedisLedger
from ._redis_scripts import load_scripts
from ._redis_wire import ReplyError, WireCommands, WirePool
from ._redis_workflows import RedisWorkflows
from ._stored import reading_record
from ._url import display_url, unix_spelling

_ORPHAN_IDLE_MS = 5_000
_JOB_FIELDS = 14
# A claimed row's priority field: missing or empty for a normal job.
_LEVELS: dict[Any, Priority] = {b"1": Priority.HIGH, b"-1": Priority.LOW}
_CLAIM_RETRY_PAUSE = 0.05
_WAKE_SLACK = 1.0
"""Seconds a self-woken BLPOP (``_pop_woken``) may outlast its wake, if the wake is lost."""
# How often a claiming broker re-reads the epoch marker and its queue's counts
# (what it can say was lost if Redis loses the queue), and Redis' config.
_WATCH_EVERY = 5.0
_CONFIG_EVERY = 60.0
# The reply deadline of the coredis client made on first use (next to the lean
# connections, whose deadline is the same): a hung Redis fails its calls.
_COREDIS_REPLY_TIMEOUT = 5.0
_log = structlog.get_logger("guild.brokers.redis")


SCRIPTS = load_scripts("_redis_functions.lua")
# Sent whole (EVAL) with every wait: without their comment lines, under half the bytes.
_AWAIT = "\n".join(
    line
    for line in load_scripts("_redis_await.lua")["await"].splitlines()
    if not line.lstrip().startswith("--")
)
_SHAS = {name: hashlib.sha1(body.encode()).hexdigest() for name, body in SCRIPTS.items()}


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
    except Exception as exc:
        if _is_unreachable(exc):
            raise BrokerUnavailable(f"redis: connect to {url}: {exc}") from exc
        raise


def _is_unreachable(exc: BaseException) -> bool:
    # Looked up, not imported: only a cluster client (coredis loaded) raises it.
    errors = sys.modules.get("coredis.exceptions")
    return (
        errors is not None
        and isinstance(exc, errors.RedisClusterError)
        and (isinstance(exc.__cause__, unreachable()) or "cannot be connected" in str(exc))
    )


def _is_cluster_client(client: Any) -> bool:
    # A client passed in is coredis's, so coredis is loaded.
    found = sys.modules.get("coredis")
    return found is not None and isinstance(client, found.RedisCluster)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _opt_float(value: Any) -> float | None:
    text = _text(value) if value is not None else ""
    return float(text) if text else None


@attrs.define(slots=True)
class _Idle:
    """A consumer's idle registration (the claim script's, see ``dispatch`` in the
    Lua), counted down as Redis counts it down, for the jobs handed to it."""

    until: float  # time.monotonic(); Redis' own expiry is a little later
    room: int  # jobs it may still be handed
    start: int  # of which to start (the rest are prefetched)
    due: bool = False  # it ends when a job falls due, not when the claim's wait ends
    handed: bool = False  # its last wait brought jobs (see claim)

    def fits(self, start: int | None, wait: float) -> bool:
        """Whether a claim that may wait ``wait`` seconds and start ``start`` jobs
        (``None``: all) can just wait for handoffs: room is left, and a handoff
        starts no more jobs than wanted, and prefetches none that idle handlers
        would then have to start with a round trip of their own."""
        if wait <= 0 or self.room < 1 or self.until - time.monotonic() <= 0.001:
            return False
        if start is None:
            return self.start >= self.room
        return self.start <= start and (self.start > 0 or start == 0)


class RedisBroker(WorkflowDelegate):
    """A broker on Redis (>= 6.2) through coredis.

    Open it with ``await RedisBroker.open(url)`` (or ``guild.open_broker(url)``),
    inside the Trio run that will use it.

    Args:
        client: a connected ``coredis.Redis`` or ``coredis.RedisCluster``; ``None``
            with ``wire`` (``open``'s single Redis: coredis made on first use).
        prefix: namespace of every key (several apps can share one Redis). On a
            cluster it is made a hash tag (``guild`` -> ``{guild}``): one prefix,
            one shard.
        key_ttl: seconds an idempotency key holds.
        result_ttl: the older spelling of ``retention=Retention(results=s, done=s)``.
        retention: how long results, finished jobs and dead letters are kept: a
            done or cancelled job's keys expire on their own; claims prune dead
            letters past ``Retention.dead``.
        wire: the lean connections to the same Redis, for every call they speak.
    """

    # Each call is a script call of its own (guild.brokers._protocol.CallsApart).
    calls_apart: Literal[True] = True

    def __init__(
        self,
        client: Any,
        *,
        prefix: str = keys.DEFAULT_PREFIX,
        key_ttl: float = 86_400.0,
        result_ttl: float | None = None,
        retention: Retention | None = None,
        exit_stack: AsyncExitStack | None = None,
        wire: WirePool | None = None,
    ) -> None:
        retention = retention or Retention()
        if result_ttl is not None:
            retention = Retention(
                results=result_ttl,
                done=result_ttl,
                dead=retention.dead,
                keep_payload=retention.keep_payload,
            )
        if client is None and wire is None:
            raise BrokerError("RedisBroker needs a coredis client (or open it from a URL)")
        self._client = client
        self._cluster = _is_cluster_client(client)
        self._prefix = keys.cluster_prefix(prefix) if self._cluster else prefix
        # KEYS[1] of every script: on a cluster it routes the call to the node
        # owning the prefix's slot (and declares that slot to Redis).
        self._script_keys = [keys.anchor(self._prefix)]
        self._canary_shares = RedisShares()
        self._key_ttl = key_ttl
        self._retention = retention
        # A finished job's keys (hash and result) expire with its record; a
        # result older than Retention.results is not answered (get_result).
        self._result_ttl_ms = max(1, int(retention.record * 1000))
        self._dead_pruned: dict[str, float] = {}
        # The lean connections (_redis_wire), on a single Redis opened from its
        # URL, serve every call they speak; a client passed in serves every call.
        self._wire = wire
        self._scripts = (
            {} if wire is not None else {n: client.register_script(b) for n, b in SCRIPTS.items()}
        )
        # The coredis-shaped reads and scripts of the helpers (ledger, workflows,
        # job info, canary shares): on the lean connections when there are some.
        self._commands: Any = WireCommands(wire) if wire is not None else client
        # With the lean connections, coredis is made on first use (redis_client),
        # from this URL, run by a task in this nursery (opened and closed with
        # the broker, in the opener's task, as coredis's own task group needs).
        self._url: str | None = None
        self._host: trio.Nursery | None = None
        self._client_lock = trio.Lock()
        self._groups: set[str] = set()
        # (queue, consumer) -> its idle registration, as Redis counts it.
        self._idle: dict[tuple[str, str], _Idle] = {}
        self._exit_stack = exit_stack
        self._closed = False
        self._epoch: str | None = None
        self._counts: dict[str, tuple[QueueStats, float]] = {}
        self._watched: dict[str, float] = {}
        self._losses: dict[str, DataLoss] = {}
        self._config: list[BrokerIssue] = []
        self._config_read = -math.inf
        self._ledger = RedisLedger(self._commands, self._prefix)
        self._workflows = RedisWorkflows(
            self._commands, self._prefix, lambda: self._closed, self.now
        )

    @classmethod
    async def open(cls, url: str, **options: Any) -> RedisBroker:
        """Connect to ``redis://host:port/db``, ``rediss://…``, a unix socket
        (``unix:///path/redis.sock?db=N`` or ``redis+unix://…``), or a Redis Cluster
        through any of its nodes: ``redis+cluster://host:port`` (``rediss+cluster://…``).

        Raises:
            BrokerUnavailable: Redis cannot be reached.
            UnknownBrokerURL: a cluster URL names a database other than 0.
        """
        url = unix_spelling(url)  # redis+unix:// is a socket too (guild.brokers._url)
        shown = display_url(url)  # errors are logged and printed: no password in them
        cluster_url = cluster_client_url(url)
        wire = None if cluster_url is not None else WirePool.from_url(url)
        if wire is not None:
            return await cls._open_wire(url, shown, wire, options)
        from ._redis_pool import cluster_client, single_client

        stack = AsyncExitStack()
        client: Any = single_client(url) if cluster_url is None else cluster_client(cluster_url)
        try:
            with map_redis_exceptions(f"connect to {shown}"), _unreachable_cluster(shown):
                await stack.enter_async_context(client)
                await client.ping()
        except BaseException:
            # The client's task group is open once entered: left unexited, trio's
            # nursery stack is corrupt for the caller even when it catches the error.
            # Closing may fail the same way the ping did; the ping's error is the news.
            with contextlib.suppress(Exception):
                await stack.aclose()
            raise
        broker = cls(client, exit_stack=stack, **options)
        await broker._check_at_open(shown)
        return broker

    @classmethod
    async def _open_wire(
        cls, url: str, shown: str, wire: WirePool, options: Mapping[str, Any]
    ) -> RedisBroker:
        """Open on the lean connections alone: coredis waits for its first use."""
        stack = AsyncExitStack()
        host = await stack.enter_async_context(trio.open_nursery())
        broker = cls(None, exit_stack=stack, wire=wire, **options)
        broker._url, broker._host = url, host
        try:
            with map_redis_exceptions(f"connect to {shown}"):
                await wire.call("PING")
        except BaseException:
            await broker.aclose()
            raise
        await broker._check_at_open(shown)
        return broker

    async def _check_at_open(self, shown: str) -> None:
        try:
            await self._read_config(at_start=True)
            await self._check_epoch()
            await self.layout_version(shown)
        except BaseException:
            await self.aclose()
            raise

    async def layout_version(self, shown_url: str) -> int:
        """The key layout version under this prefix (see ``_redis_layout``); written
        as the current one when there is none (a new Redis, or one written before
        layouts had versions, which is version 1).

        Raises:
            SchemaMismatch: the stored layout is another version than this guild's.
        """
        key = keys.layout(self._prefix)
        with map_redis_exceptions("layout version"):
            # Read first: a Redis at maxmemory (noeviction) refuses every write, and
            # its workers must still open to drain the jobs that fill it.
            found = await self._commands.get(key)
            if found is None:
                # Absent means version 1 (the layout before versions), whatever is current.
                await self._commands.set(key, "1", condition="NX")
                found = await self._commands.get(key)
        return layout_version(None if found is None else _text(found), self._prefix, shown_url)

    def __repr__(self) -> str:
        return f"RedisBroker(prefix={self._prefix!r})"

    @property
    def client(self) -> Any:
        """The coredis client, once made (``redis_client()`` makes it).

        Raises:
            BrokerError: the broker opened a single Redis from its URL and has not
                needed coredis yet: ``await redis_client()`` instead.
        """
        if self._client is None:
            raise BrokerError(
                "the redis broker makes its coredis client on first use:"
                " await broker.redis_client()"
            )
        return self._client

    async def redis_client(self) -> Any:
        """The coredis client: worker limits (``guild.Limit``) share this Redis through it.

        A broker opened from a single Redis' URL makes it here the first time,
        importing coredis in a thread (0.3 s the event loop does not wait for).

        Raises:
            BrokerClosed: the broker is closed.
            BrokerUnavailable: Redis cannot be reached.
        """
        self._check_open()
        if self._client is not None:
            await trio.lowlevel.checkpoint()
            return self._client
        async with self._client_lock:
            if self._client is None:
                self._client = await self._start_client()
        return self._client

    async def _start_client(self) -> Any:
        host, url = self._host, self._url
        if host is None or url is None:
            raise BrokerError("the redis broker has neither a coredis client nor its URL")
        await trio.to_thread.run_sync(importlib.import_module, "guild.brokers._redis_pool")
        self._check_open()
        with map_redis_exceptions(f"connect to {display_url(url)}"):
            return await host.start(self._run_client, url)

    @staticmethod
    async def _run_client(
        url: str, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Make the coredis client, hand it over, and keep it entered until the
        broker closes (its task group lives in this task, under the broker's nursery)."""
        from ._redis_pool import single_client

        client = single_client(url, reply_timeout=_COREDIS_REPLY_TIMEOUT)
        async with client:
            task_status.started(client)
            await trio.sleep_forever()

    @property
    def prefix(self) -> str:
        """The key namespace (a hash tag on a cluster): limits' keys go under it too."""
        return self._prefix

    def now(self) -> float:
        return time.time()

    @property
    def retention(self) -> Retention:
        """How long this broker keeps what finished jobs leave behind."""
        return self._retention

    async def _call(self, name: str, args: Sequence[Any]) -> Any:
        if self._closed:
            raise BrokerClosed("the redis broker is closed")
        with map_redis_exceptions(name):
            if self._wire is not None:
                return await self._wire.evalsha(
                    _SHAS[name], SCRIPTS[name], self._script_keys, [self._prefix, *args]
                )
            return await self._scripts[name](keys=self._script_keys, args=[self._prefix, *args])

    async def _named_wrong_type(
        self, verb: str, queues: Iterable[str], error: WrongTypeError, *, alone: str | None = None
    ) -> WrongTypeError:
        """``error`` again, naming the key it met (Redis' WRONGTYPE names none):
        the first of the shared keys or of ``queues``' keys holding another type
        than guild's (``@wrong_key``), with its queue after ``verb`` (a shared
        key's error says ``alone``, else ``verb``, with no queue). ``error``
        itself when none does (a job's key) or the look-up fails: only ever on
        the way out of a failed call."""
        try:
            found = await self._call("wrong_key", list(dict.fromkeys(queues)))
        except BrokerError:
            return error
        if not found:
            return error
        key, kind, wanted, queue = (_text(v) for v in found)
        what = f"{verb} {queue!r}" if queue else (alone or verb)
        return WrongTypeError(f"redis: {what}: {wrong_type_text(key, kind, wanted)}")

    # --- producing -------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[Job]) -> list[Job]:
        if not jobs:
            await trio.lowlevel.checkpoint()
            return []
        self._check_open()
        jobs = await self._canary_shares.route(self._commands, self._prefix, jobs)
        now = self.now()
        try:
            stored = [_text(i) for i in await self._call("enqueue", self._enqueue_args(jobs, now))]
        except WrongTypeError as exc:
            raise await self._named_wrong_type("enqueue to", (j.queue for j in jobs), exc) from exc
        out: list[Job] = []
        for job, stored_id in zip(jobs, stored, strict=True):
            if stored_id == job.id:
                out.append(_stored(job, now))
            else:
                out.append(await self._load_job(stored_id))
        return out

    def _enqueue_args(self, jobs: Sequence[Job], now: float) -> list[Any]:
        """The enqueue script's ARGV after the prefix."""
        args: list[Any] = [repr(now), math.ceil(self._key_ttl)]
        for job, payload in zip(jobs, encode_payloads(jobs), strict=True):
            args += [
                job.id,
                job.queue,
                payload,
                "" if job.max_attempts is None else job.max_attempts,
                "" if job.not_before is None else repr(job.not_before),
                "" if job.timeout is None else repr(job.timeout),
                job.key or "",
                job.trace_id,
                int(job.priority) or "",
            ]
        return args

    async def enqueue_and_wait(self, job: Job, *, wait: float) -> tuple[Job, Result | None]:
        """Enqueue ``job`` and wait up to ``wait`` seconds for its result
        (``guild.brokers._protocol.EnqueuesAndWaits``): on one Redis, one round
        trip, the enqueue script, ``@await`` (for a job just enqueued) and the ``BLPOP`` of the
        job's notify list pipelined on one connection (Redis runs them in order).

        A failed enqueue leaves no job, so the await script pushes its marker
        (an empty element) and the ``BLPOP`` returns at once; the enqueue's error
        is raised. A key held by another job: that job is waited on, as
        ``get_result`` does. A cluster, a coredis client or no wait: the two calls
        one after the other.
        """
        if self._closed:
            raise BrokerClosed("the redis broker is closed")
        wire = self._wire
        if wire is None or wait <= 0:
            return await self._enqueue_then_wait(job, wait)
        (routed,) = await self._canary_shares.route(self._commands, self._prefix, [job])
        now = self.now()
        tail: tuple[str | int, ...] = (1, *self._script_keys, self._prefix)
        with map_redis_exceptions("enqueue"):
            replies = await wire.execute(
                ("EVALSHA", _SHAS["enqueue"], *tail, *self._enqueue_args([routed], now)),
                ("EVAL", _AWAIT, *tail, routed.id, math.ceil(wait * 1000), 1),
                ("BLPOP", keys.notify(self._prefix, routed.id), _seconds(wait)),
                blocks=wait,
            )
        enqueued, awaited, popped = replies
        if isinstance(enqueued, ReplyError) and str(enqueued).startswith("NOSCRIPT"):
            # Nothing ran (a restart, a SCRIPT FLUSH): the marker answered at once,
            # and the enqueue sends the script's body, which caches it again.
            return await self._enqueue_then_wait(job, wait)
        if isinstance(enqueued, ReplyError):
            try:
                with map_redis_exceptions("enqueue"):
                    raise enqueued
            except WrongTypeError as exc:
                raise await self._named_wrong_type("enqueue to", [routed.queue], exc) from exc
        with map_redis_exceptions("wait for result"):
            for reply in (awaited, popped):
                if isinstance(reply, ReplyError):
                    raise reply
        stored_id = _text(enqueued[0])
        if stored_id != routed.id:
            # The key is another job's: the marker came back at once; wait on that one.
            held = await self._load_job(stored_id)
            return held, await self.get_result(stored_id, wait=wait)
        raw = popped[1] if popped else b""
        if raw == b"":
            # No result pushed in time, or the job was gone by the await (finished
            # and expired, or purged, in between): whatever result is stored.
            with map_redis_exceptions("wait for result"):
                raw = await wire.call("GET", keys.result(self._prefix, stored_id))
        result = None if raw is None else self._fresh(_result_from_json(raw, stored_id))
        return _stored(routed, now), result

    async def _enqueue_then_wait(self, job: Job, wait: float) -> tuple[Job, Result | None]:
        (stored,) = await self.enqueue([job])
        return stored, await self.get_result(stored.id, wait=wait)

    async def _load_job(self, job_id: str) -> Job:
        with map_redis_exceptions("load job"):
            fields = await self._commands.hgetall(keys.job(self._prefix, job_id))
        return _job_from_hash({_text(k): v for k, v in fields.items()})

    # --- claiming --------------------------------------------------------------

    async def _ensure_group(self, queue: str) -> None:
        if queue in self._groups:
            return
        # Another process may have made the group first; that is fine.
        stream = keys.ready(self._prefix, queue)
        try:
            with contextlib.suppress(GroupExistsError), map_redis_exceptions("create group"):
                await self._commands.xgroup_create(stream, keys.GROUP, "0", mkstream=True)
        except WrongTypeError as exc:
            raise await self._named_wrong_type("create the group of", [queue], exc) from exc
        self._groups.add(queue)

    async def _claim_script(self, queue: str, args: list[Any]) -> Any:
        try:
            return await self._call("claim", args)
        except WrongTypeError as exc:
            raise await self._named_wrong_type("claim from", [queue], exc) from exc

    async def claim(
        self,
        queue: str,
        *,
        consumer: str,
        limit: int,
        lease: float,
        wait: float = 0.0,
        start: int | None = None,
        max_attempts: int = 5,
    ) -> list[Delivery]:
        if self._closed:
            raise BrokerClosed("the redis broker is closed")
        await self._ensure_group(queue)
        await self._watch(queue)
        await self._prune_dead(queue, self.now())
        if limit < 1:
            return []  # XREADGROUP's COUNT 0 would mean "all"
        deadline = self.now() + wait
        key = (queue, consumer)
        while True:
            idle = self._idle.get(key)
            if idle is not None and idle.fits(start, deadline - self.now()):
                # Still registered, with room: wait for a handoff, no script.
                if idle.handed:
                    # Not before the acks of the jobs the last wait brought have
                    # gone out: what is handed meanwhile waits in the inbox, and
                    # this BLPOP's write would come first on each job's round trip
                    # (its caller's result waits for the ack). A worker lets two
                    # scheduling rounds pass after a claim that brought jobs, for
                    # their handlers (guild._worker, _claimer); this one is the
                    # acker's.
                    idle.handed = False
                    await trio.lowlevel.checkpoint()
                taken = await self._pop_handed(queue, consumer, idle, deadline - self.now())
                if taken or self.now() >= deadline:
                    return taken
                continue
            # The script ends the registration (or renews it) in any case.
            self._idle.pop(key, None)
            now = self.now()
            lease_expires = now + lease
            block_ms = max(0, int((deadline - now) * 1000))
            args = [queue, repr(now), self._result_ttl_ms, _ORPHAN_IDLE_MS]
            args += [repr(lease_expires), consumer, limit, new_id()]
            args += [limit if start is None else start, max_attempts, block_ms, repr(lease)]
            sent = time.monotonic()
            # The script takes the jobs under a lease before it returns: a
            # cancellation while its reply is on the way would strand them until
            # their leases expire, so the reply is always read; a reply lost with
            # its connection is asked for again under the same token.
            with trio.CancelScope(shield=True):
                try:
                    flat = await self._claim_script(queue, args)
                except BrokerUnavailable:
                    # The lost call may have registered the consumer, which a replay
                    # does not say: kept as a registration with no room, so that the
                    # next claim or stop_claiming ends it.
                    self._idle[key] = _Idle(until=sent + block_ms / 1000, room=0, start=0)
                    await trio.sleep(_CLAIM_RETRY_PAUSE)
                    flat = await self._claim_script(queue, args)
            if _text(flat[0]) == "nogroup":
                # Redis lost the group (a restart without persistence): say so
                # loudly, then make it again so that new jobs run. Unless a
                # concurrent epoch check reported this loss already (it forgets
                # the groups): once acknowledged, the same loss is not news.
                if queue in self._groups:
                    self._lost(queue, "its consumer group vanished")
                await self._check_epoch()
                self._groups.discard(queue)
                await self._ensure_group(queue)
                continue
            taken, bad = _deliveries(flat[2:], queue, consumer, lease_expires)
            registered = int(_text(flat[1]))
            if registered:
                rows = (len(flat) - 2) // _JOB_FIELDS
                self._idle[key] = _Idle(
                    until=sent + registered / 1000,
                    room=limit - rows,
                    start=max(0, (limit if start is None else start) - rows),
                    due=registered < block_ms,
                )
            if bad:
                await self._bury_bad(queue, bad)
            remaining = deadline - self.now()
            if taken or remaining <= 0:
                return taken
            if not registered:
                # Something falls due within the millisecond: claim again then.
                await trio.sleep(min(remaining, 0.001))

    async def _pop_handed(
        self, queue: str, consumer: str, idle: _Idle, wait: float
    ) -> list[Delivery]:
        """Wait (BLPOP) for the jobs a script hands to ``consumer`` while it is
        registered as idle (``dispatch`` in the Lua): claimed already, each
        under its lease. Keeps ``idle`` as Redis counts it, while it lasts."""
        timeout = min(wait, idle.until - time.monotonic())
        try:
            inbox = keys.inbox(self._prefix, queue, consumer)
            if idle.due and timeout < wait:
                popped = await self._pop_woken(queue, consumer, inbox, timeout)
            else:
                popped = await self._blpop(inbox, timeout)
        except BrokerError:
            # Redis may have lost the registration (a restart): claim afresh.
            idle.room = 0
            raise
        if not popped:
            return []
        lease_expires, rows = _unpack(popped[1])
        if not rows:
            # A wake (wake_idlers in the Lua): a job delayed since this worker
            # registered falls due first. Claim again, which registers no later.
            self._idle.pop((queue, consumer), None)
            return []
        count = len(rows) // _JOB_FIELDS
        # A row without its id was cancelled while it waited here (strike_handed
        # in the Lua): it took room all the same.
        rows = [
            field
            for i in range(0, len(rows), _JOB_FIELDS)
            if rows[i] is not None
            for field in rows[i : i + _JOB_FIELDS]
        ]
        idle.room -= count
        idle.start = max(0, idle.start - count)
        idle.handed = True
        if idle.room < 1:
            self._idle.pop((queue, consumer), None)  # Redis ended it too
        if lease_expires <= self.now():
            # Handed while this worker was not listening, and held past its
            # lease: whoever claims next gives it back (or has already).
            _log.warning("handed_jobs_expired", queue=queue, count=count)
            return []
        taken, bad = _deliveries(rows, queue, consumer, lease_expires)
        if bad:
            await self._bury_bad(queue, bad)
        return taken

    async def _blpop(self, inbox: str, timeout: float) -> Any:
        with map_redis_exceptions("wait for jobs"):
            if self._wire is not None:
                return await self._wire.call(
                    "BLPOP", inbox, _seconds(timeout), blocks=max(0.0, timeout)
                )
            return await self._client.blpop([inbox], timeout=max(0.001, timeout))

    async def _pop_woken(self, queue: str, consumer: str, inbox: str, timeout: float) -> Any:
        """BLPOP ``inbox`` for a registration that ends when a job falls due, in
        ``timeout`` seconds: ended then by the worker's own wake (``@wake`` in the
        Lua), since Redis would time the BLPOP out only on its next timer tick.
        The BLPOP's own timeout, later, is for a wake that was lost."""
        got: list[outcome.Outcome[Any]] = []

        async def pop(done: trio.CancelScope) -> None:
            got.append(await outcome.acapture(self._blpop, inbox, timeout + _WAKE_SLACK))
            done.cancel()

        async def wake() -> None:
            await trio.sleep(timeout)
            with contextlib.suppress(BrokerError):  # lost: the BLPOP times out itself
                await self._call("wake", [queue, consumer])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pop, nursery.cancel_scope)
            nursery.start_soon(wake)
        return got[0].unwrap()

    async def stop_claiming(self, queue: str, consumer: str) -> None:
        """End ``consumer``'s idle registration on ``queue``: the jobs handed to it
        and not yet taken go back to ready, their runs not counted."""
        if self._idle.pop((queue, consumer), None) is None or self._closed:
            await trio.lowlevel.checkpoint()
            return
        args = [queue, consumer, repr(self.now()), self._result_ttl_ms]
        try:
            await self._call("unregister", args)
        except WrongTypeError as exc:
            raise await self._named_wrong_type("stop claiming from", [queue], exc) from exc

    # --- settling --------------------------------------------------------------

    async def _bury_bad(self, queue: str, bad: Sequence[tuple[BadRow, str]]) -> None:
        """Dead-letter entries that are no valid job, with the reason, in one call.

        Shielded: the claim's good jobs are taken, and a cancellation here must
        not lose them. If it fails, the bad entries come back when their leases
        expire, and the next claim tries again.
        """
        args: list[Any] = [queue, repr(self.now()), self._result_ttl_ms]
        for row, receipt in bad:
            args += [row.job.id, receipt, row.reason]
        with trio.CancelScope(shield=True):
            try:
                await self._call("dead_many", args)
            except BrokerError as error:
                _log.warning(
                    "bad_rows_not_buried", jobs=[r.job.id for r, _ in bad], error=str(error)
                )
                return
        for row, _ in bad:
            _log.error("bad_row_dead_lettered", job_id=row.job.id, reason=row.reason)

    async def ack(self, done: Sequence[tuple[Delivery, ResultJSON]]) -> None:
        if not done:
            await trio.lowlevel.checkpoint()
            return
        keep = "1" if self._retention.keep_payload else "0"
        args: list[Any] = [repr(self.now()), self._result_ttl_ms, keep]
        for delivery, text in done:
            args += [delivery.job.id, text]
        try:
            await self._call("ack", args)
        except WrongTypeError as exc:
            queues = (d.job.queue for d, _ in done)
            raise await self._named_wrong_type("ack jobs of", queues, exc, alone="ack") from exc

    async def retry(
        self, delivery: Delivery, *, at: float, error: str, traceback: str | None = None
    ) -> None:
        args: list[Any] = [repr(self.now()), delivery.job.id, delivery.receipt, repr(at), error]
        args += [self._result_ttl_ms, traceback or ""]
        try:
            await self._call("retry", args)
        except WrongTypeError as exc:
            queues = [delivery.job.queue]
            raise await self._named_wrong_type(
                "retry a job of", queues, exc, alone="retry"
            ) from exc

    async def dead(self, delivery: Delivery, *, error: str, traceback: str | None = None) -> None:
        args: list[Any] = [repr(self.now()), delivery.job.id, delivery.receipt, error]
        args.append(traceback or "")
        args.append(self._result_ttl_ms)
        try:
            await self._call("dead", args)
        except WrongTypeError as exc:
            raise await self._named_wrong_type(
                "dead-letter a job of", [delivery.job.queue], exc, alone="dead-letter"
            ) from exc

    async def start(self, deliveries: Sequence[Delivery]) -> list[Delivery]:
        if not deliveries:
            await trio.lowlevel.checkpoint()
            return []
        args: list[Any] = [repr(self.now())]
        for delivery in deliveries:
            args += [delivery.job.id, delivery.receipt]
        try:
            flat = await self._call("start", args)
        except WrongTypeError as exc:
            queues = (d.job.queue for d in deliveries)
            raise await self._named_wrong_type("start jobs of", queues, exc, alone="start") from exc
        attempts = {_text(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}
        return [
            make_delivery(
                with_attempt(d.job, attempts[d.job.id]),
                d.receipt,
                d.consumer,
                d.lease_expires,
                True,
                d.interrupted,
            )
            for d in deliveries
            if d.job.id in attempts
        ]

    async def release(self, deliveries: Sequence[Delivery]) -> None:
        args: list[Any] = [repr(self.now()), self._result_ttl_ms]
        for delivery in deliveries:
            args += [delivery.job.id, delivery.receipt]
        try:
            await self._call("release", args)
        except WrongTypeError as exc:
            raise await self._named_wrong_type(
                "hand back jobs of", (d.job.queue for d in deliveries), exc, alone="hand back"
            ) from exc

    async def release_consumers(self, prefix: str) -> int:
        return int(
            await self._call("release_consumers", [prefix, repr(self.now()), self._result_ttl_ms])
        )

    async def extend(self, deliveries: Sequence[Delivery], *, lease: float) -> list[Delivery]:
        if not deliveries:
            await trio.lowlevel.checkpoint()
            return []
        now = self.now()
        lease_expires = now + lease
        args: list[Any] = [repr(now), repr(lease_expires)]
        for delivery in deliveries:
            args += [delivery.job.id, delivery.receipt]
        try:
            renewed = {_text(i) for i in await self._call("extend", args)}
        except WrongTypeError as exc:
            raise await self._named_wrong_type(
                "extend leases in", (d.job.queue for d in deliveries), exc, alone="extend leases"
            ) from exc
        return [
            make_delivery(d.job, d.receipt, d.consumer, lease_expires, d.started, d.interrupted)
            for d in deliveries
            if d.job.id in renewed
        ]

    # --- results, stats, dead letters ---------------------------------------------

    async def cancel(self, job_ids: Sequence[str]) -> list[str]:
        if not job_ids:
            await trio.lowlevel.checkpoint()
            return []
        answered = await self._call("cancel", [repr(self.now()), self._result_ttl_ms, *job_ids])
        return [_text(i) for i in answered]

    async def cancel_requested(self, job_ids: Sequence[str]) -> set[str]:
        if not job_ids:
            await trio.lowlevel.checkpoint()
            return set()
        try:
            return {_text(i) for i in await self._call("cancel_requested", list(job_ids))}
        except WrongTypeError as exc:
            raise await self._named_wrong_type("look for cancel requests", [], exc) from exc

    async def finish_cancelled(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            await trio.lowlevel.checkpoint()
            return
        args: list[Any] = [repr(self.now()), self._result_ttl_ms]
        for delivery in deliveries:
            args += [delivery.job.id, delivery.receipt]
        try:
            await self._call("finish_cancelled", args)
        except WrongTypeError as exc:
            queues = (d.job.queue for d in deliveries)
            raise await self._named_wrong_type(
                "end cancelled jobs of", queues, exc, alone="end cancelled"
            ) from exc

    async def get_result(self, job_id: str, *, wait: float = 0.0) -> Result | None:
        if self._closed:
            raise BrokerClosed("the redis broker is closed")
        key = keys.result(self._prefix, job_id)
        if wait <= 0:
            with map_redis_exceptions("get result"):
                if self._wire is not None:
                    raw = await self._wire.call("GET", key)
                else:
                    raw = await self._client.get(key)
            return None if raw is None else self._fresh(_result_from_json(raw, job_id))
        notify = keys.notify(self._prefix, job_id)
        args: list[str | int] = [self._prefix, job_id, math.ceil(wait * 1000)]
        if self._cluster:
            # Two round trips: the script returns the result or registers us as a
            # waiter; the finishing script pushes the result to each waiter's BLPOP.
            raw = await self._call("await", args[1:])
            if raw is None:
                with map_redis_exceptions("wait for result"):
                    popped = await self._client.blpop([notify], timeout=wait)
                    raw = popped[1] if popped else await self._client.get(key)
            return None if raw is None else self._fresh(_result_from_json(raw, job_id))
        # One round trip: the script and the BLPOP behind it, pipelined on one
        # connection. The script pushes a result that is there already for the
        # BLPOP to take, or registers us as a waiter for the finishing script.
        with map_redis_exceptions("wait for result"):
            if self._wire is not None:
                replies = await self._wire.execute(
                    ("EVAL", _AWAIT, 1, *self._script_keys, *args, ""),
                    ("BLPOP", notify, _seconds(wait)),
                    blocks=wait,
                )
                for reply in replies:
                    if isinstance(reply, Exception):
                        raise reply
                popped = replies[1]
                raw = popped[1] if popped else await self._wire.call("GET", key)
                return None if raw is None else self._fresh(_result_from_json(raw, job_id))
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.eval(_AWAIT, keys=self._script_keys, args=[*args, ""])
                pipe.blpop([notify], timeout=wait)
            popped = pipe.results[1] if pipe.results else None
            raw = popped[1] if popped else await self._client.get(key)
        return None if raw is None else self._fresh(_result_from_json(raw, job_id))

    async def get_results(self, job_ids: Sequence[str]) -> dict[str, Result]:
        """The stored results of ``job_ids`` (those with none are left out), in one
        MGET (every key of a prefix shares one hash slot in cluster mode)."""
        if self._closed:
            raise BrokerClosed("the redis broker is closed")
        wanted = list(dict.fromkeys(job_ids))
        if not wanted:
            await trio.lowlevel.checkpoint()
            return {}
        with map_redis_exceptions("get results"):
            raws = await self._commands.mget([keys.result(self._prefix, id_) for id_ in wanted])
        found: dict[str, Result] = {}
        for id_, raw in zip(wanted, raws, strict=True):
            result = None if raw is None else self._fresh(_result_from_json(raw, id_))
            if result is not None:
                found[id_] = result
        return found

    def _fresh(self, result: Result) -> Result | None:
        """The result, or None once Retention.results is past (its key may live on
        with the job's record, for Retention.done)."""
        if result.status is JobStatus.DEAD:
            return result
        if result.finished_at + self._retention.results <= self.now():
            return None
        return result

    async def purge(
        self, queue: str, statuses: Collection[JobStatus], *, older_than: float | None = None
    ) -> int:
        """Delete the jobs of ``queue`` in ``statuses`` (see ``guild.brokers.Purgeable``),
        ``_redis_purge.BATCH`` ids per script call."""
        check_purge_args(statuses, older_than)
        self._check_open()
        now = self.now()
        cutoff = None if older_than is None else now - older_than
        client = await self.redis_client()
        with map_redis_exceptions("purge"):
            return await _redis_purge.purge(
                client, self._call, self._prefix, queue, statuses, now, cutoff
            )

    async def _prune_dead(self, queue: str, now: float) -> None:
        # Dead letters past Retention.dead: once a sweep period per queue, from claim.
        last = self._dead_pruned.get(queue, -math.inf)
        if self._retention.dead is None or now - last < self._retention.sweep_every:
            return
        self._dead_pruned[queue] = now
        await _redis_purge.prune_dead(self._call, queue, now - self._retention.dead)

    async def job_info(self, job_id: str) -> JobInfo | None:
        if self._closed:
            raise BrokerClosed("the redis broker is closed")
        with map_redis_exceptions("job info"), reading_record(job_id, "hash"):
            return await _redis_jobinfo.job_info(self._commands, self._prefix, job_id, self.now())

    async def set_progress(self, updates: Sequence[tuple[Delivery, JobProgress]]) -> None:
        if not updates:
            await trio.lowlevel.checkpoint()
            return
        args: list[Any] = []
        for delivery, progress in updates:
            args += [delivery.job.id, delivery.receipt, repr(progress.fraction)]
            args += [progress.message or "", repr(progress.at)]
        await self._call("set_progress", args)

    async def stats(self, queues: Sequence[str] | None = None) -> dict[str, QueueStats]:
        flat = await self._call("stats", [repr(self.now()), *(queues or [])])
        out: dict[str, QueueStats] = {}
        for i in range(0, len(flat), 7):
            name = _text(flat[i])
            if not isinstance(flat[i + 1], int):
                # A key of another type, named by the script (@stats): key, type
                # found, type expected.
                key, found, wanted = (_text(v) for v in flat[i + 1 : i + 4])
                out[name] = QueueStats(queue=name, broken=wrong_type_text(key, found, wanted))
                continue
            ready, delayed, in_flight, done, dead, cancelled = (int(v) for v in flat[i + 1 : i + 7])
            out[name] = QueueStats(
                queue=name,
                ready=ready,
                delayed=delayed,
                in_flight=in_flight,
                done=done,
                dead=dead,
                cancelled=cancelled,
            )
        at = self.now()
        for name, counted in out.items():
            if counted.broken is None:
                self._counts[name] = (counted, at)
        return out

    # --- lost data and durability (see _redis_checks) ------------------------------

    async def diagnose(self) -> list[BrokerIssue]:
        """Redis' durability settings, and any lost queue not yet acknowledged."""
        await self._check_epoch()
        if time.monotonic() - self._config_read >= _CONFIG_EVERY:
            await self._read_config(at_start=False)
        return [*self._config, *(loss.issue() for loss in self._losses.values())]

    def acknowledge(self) -> int:
        """Forget the lost queues reported so far; returns how many."""
        count = len(self._losses)
        if count:
            _log.warning("redis_data_loss_acknowledged", queues=sorted(self._losses))
        self._losses.clear()
        return count

    async def _read_config(self, *, at_start: bool) -> None:
        if self._closed:
            raise BrokerClosed("the redis broker is closed")
        self._config_read = time.monotonic()
        read: dict[str, str] = {}
        config: dict[str, str] | None = read
        refusal = None
        try:
            with map_redis_exceptions("config get"):
                for name in CONFIG_KEYS:
                    answer = await self._commands.config_get([name])
                    read.update({_text(key): _text(value) for key, value in answer.items()})
        except BrokerUnavailable:
            raise
        except BrokerError as exc:
            # Disabled or renamed (managed services often do): say so, carry on.
            config, refusal = None, str(exc)
        issues = config_issues(config, refusal)
        if at_start or [i.name for i in issues] != [i.name for i in self._config]:
            for issue in issues:
                log = _log.info if issue.severity == "info" else _log.warning
                log("redis_" + issue.name, detail=issue.detail)
        self._config = issues

    async def _check_epoch(self) -> None:
        """Compare the epoch marker with the one seen before: gone or changed means
        Redis lost data (for every queue this broker knew); then adopt the new one."""
        if self._closed:
            raise BrokerClosed("the redis broker is closed")
        key = keys.epoch(self._prefix)
        with map_redis_exceptions("epoch"):
            found = await self._commands.get(key)
            if found is None:
                await self._commands.set(key, secrets.token_hex(8), condition="NX")
                found = await self._commands.get(key)
        current = None if found is None else _text(found)
        if self._epoch is not None and current != self._epoch:
            for queue in sorted(set(self._groups) | set(self._counts)):
                self._lost(queue, "Redis lost its data: guild's epoch marker vanished")
            self._groups.clear()  # gone with the data: made again before the next claim
        self._epoch = current

    async def _watch(self, queue: str) -> None:
        # Every few seconds, a claiming broker notes its queue's counts (what it
        # can say was lost) and checks the epoch marker.
        now = time.monotonic()
        if now - self._watched.get(queue, -math.inf) < _WATCH_EVERY:
            return
        self._watched[queue] = now
        # A shared key another program overwrote (stats fails as a whole on one):
        # the calls that need it say so, each time; a claim that does not goes
        # on, rather than fail once every few seconds.
        with contextlib.suppress(WrongTypeError):
            await self._check_epoch()
            await self.stats([queue])

    def _lost(self, queue: str, how: str) -> None:
        if queue in self._losses:
            return
        last, last_at = self._counts.get(queue, (None, None))
        loss = DataLoss(queue=queue, how=how, at=self.now(), last=last, last_at=last_at)
        self._losses[queue] = loss
        self._counts.pop(queue, None)
        _log.error(
            "redis_data_lost",
            queue=queue,
            how=how,
            lost=loss.lost,
            ready=None if last is None else last.ready,
            delayed=None if last is None else last.delayed,
            in_flight=None if last is None else last.in_flight,
            detail=loss.describe(),
        )

    async def list_dead(self, queue: str | None = None, *, limit: int = 100) -> list[DeadLetter]:
        if self._closed:
            raise BrokerClosed("the redis broker is closed")
        with map_redis_exceptions("list dead"):
            if queue is None:
                names = [_text(q) for q in await self._commands.smembers(keys.queues(self._prefix))]
            else:
                names = [queue]
            scored: list[tuple[float, str]] = []
            for name in names:
                rows = await self._commands.zrange(
                    keys.dead(self._prefix, name), 0, limit - 1, withscores=True
                )
                scored += [(float(score), _text(member)) for member, score in rows]
        scored.sort()
        letters = []
        for died_at, job_id in scored[:limit]:
            try:
                letter = await self.get_dead(job_id)
            except WrongTypeError:
                # One record overwritten by something else (its key of another
                # type) must not hide every other dead letter: it is listed,
                # with what went wrong in place of its error.
                letter = DeadLetter(
                    job=_job_from_hash({"id": job_id.encode()}),
                    error=f"its record {keys.job(self._prefix, job_id)} is not the job's hash",
                    traceback=None,
                    died_at=died_at,
                )
            if letter is not None:
                letters.append(letter)
        return letters

    async def get_dead(self, job_id: str) -> DeadLetter | None:
        if self._closed:
            raise BrokerClosed("the redis broker is closed")
        with map_redis_exceptions("get dead"):
            raw = await self._commands.hgetall(keys.job(self._prefix, job_id))
        fields = {_text(k): v for k, v in raw.items()}
        if _text(fields.get("status", b"")) != "dead":
            return None
        return DeadLetter(
            job=_job_from_hash(fields),
            error=_lenient_text(fields.get("error", b"")),
            traceback=_text(fields.get("traceback", b"")) or None,
            died_at=lenient_seconds(fields.get("died_at")) or 0.0,
        )

    async def requeue_dead(
        self, job_ids: Sequence[str] | None = None, *, queue: str | None = None
    ) -> int:
        if job_ids is not None and not job_ids:
            await trio.lowlevel.checkpoint()
            return 0
        args = [repr(self.now()), queue or "", *(job_ids or [])]
        try:
            return int(await self._call("requeue", args))
        except WrongTypeError as exc:
            # Jobs named by id alone may be of any queue: only the shared keys are
            # looked at then (the error as Redis said it when none is damaged).
            queues = [] if queue is None else [queue]
            raise await self._named_wrong_type(
                "requeue dead jobs of", queues, exc, alone="requeue dead jobs"
            ) from exc

    async def store_raw_for_test(self, queue: str, fields: Mapping[str, str | bytes]) -> bool:
        """Store a job hash as given, ready now on ``queue`` (the ``RawStorable`` test hook).

        Values are stored byte for byte; a field left out is absent from the hash.
        """
        args: list[Any] = [queue]
        for name, value in fields.items():
            args += [name, value]
        await self._call("store_raw", args)
        return True

    # --- the Ledger (guild.brokers.Ledger) ----------------------------------------

    async def add_counts(self, namespace: str, key: str, counts: Mapping[str, float]) -> None:
        self._check_open()
        await self._ledger.add_counts(namespace, key, counts)

    async def get_counts(self, namespace: str) -> dict[str, dict[str, float]]:
        self._check_open()
        return await self._ledger.get_counts(namespace)

    async def count_namespaces(self) -> list[str]:
        self._check_open()
        return await self._ledger.count_namespaces()

    async def mark(self, namespace: str, key: str, *, ttl: float, value: str = "") -> bool:
        self._check_open()
        return await self._ledger.mark(namespace, key, ttl=ttl, value=value)

    async def marked(self, namespace: str, keys: Collection[str]) -> dict[str, str]:
        self._check_open()
        return await self._ledger.marked(namespace, keys)

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerClosed("the redis broker is closed")

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._wire is not None:
            self._wire.close()
        if self._host is not None:
            # The coredis client's task, if it was made, ends; then the nursery.
            self._host.cancel_scope.cancel()
        if self._exit_stack is not None:
            # Not shielded: the client's task group must be exited in the same
            # cancel-scope nesting it was entered in.
            with map_redis_exceptions("close"):
                await self._exit_stack.aclose()
        await trio.lowlevel.checkpoint()


def _seconds(timeout: float) -> str:
    """A blocking command's timeout: never 0, which would mean forever."""
    return repr(max(0.001, round(timeout, 3)))


def _stored(job: Job, now: float) -> Job:
    return replace_fields(job, enqueued_at=now, attempt=0)


def _job_from_hash(fields: dict[str, Any]) -> Job:
    """The job a hash holds, or what can be read of it (for a dead letter)."""
    queue = fields.get("queue", b"")
    found = job_from_row(
        [fields.get(name) for name in ROW_FIELDS],
        queue=queue.decode("utf-8", "replace") if isinstance(queue, bytes) and queue else "?",
    )
    job = found.job if isinstance(found, BadRow) else found
    level = _LEVELS.get(fields.get("priority"))
    return job if level is None else replace_fields(job, priority=level)


def _lenient_text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _result_from_json(raw: Any, job_id: str) -> Result:
    with reading_record(job_id, "result"):
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


def _unpack(element: bytes) -> tuple[float, list[bytes | None]]:
    """An inbox element (``pack`` in the Lua): the lease expiry, then the rows."""
    fields: list[bytes | None] = []
    i, end = 0, len(element)
    while i < end:
        if element[i] == 0x2D:  # '-': a missing field
            fields.append(None)
            i += 1
            continue
        colon = element.index(b":", i)
        start = colon + 1
        i = start + int(element[i:colon])
        fields.append(element[start:i])
    return float(fields[0] or b"0"), fields[1:]


def _deliveries(
    flat: Sequence[Any], queue: str, consumer: str, lease_expires: float
) -> tuple[list[Delivery], list[tuple[BadRow, str]]]:
    """The claim script's rows as deliveries, and the rows that are no valid job
    (with their receipts, to dead-letter them)."""
    deliveries = []
    bad: list[tuple[BadRow, str]] = []
    for i in range(0, len(flat), _JOB_FIELDS):
        job = job_from_row(flat[i : i + 10], queue=queue)
        if isinstance(job, BadRow):
            bad.append((job, _text(flat[i + 10])))
            continue
        # A prefetched job's stored attempt counts only started runs; its
        # delivery carries the number its run will have (see _protocol).
        mark = flat[i + 11]
        started = mark != b"0" and mark != "0"
        if not started:
            job = with_attempt(job, job.attempt + 1)
        level = flat[i + 13]
        if level:
            job = replace_fields(job, priority=_LEVELS.get(level, Priority.NORMAL))
        interrupted = flat[i + 12]
        deliveries.append(
            make_delivery(
                job,
                _text(flat[i + 10]),
                consumer,
                lease_expires,
                started,
                interrupted == b"1" or interrupted == "1",
            )
        )
    return deliveries, bad
