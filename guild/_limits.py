"""Limits in the worker path: ``@app.worker(..., limit=guild.Limit(...))``.

A job waits at its key's limiter after it is claimed and before its handler's
timeout starts (the wait is not charged to the job), holds a token while its
handler runs, and gives it back however the handler ends. Admission is the
limiters' business (:mod:`guild.ratelimit`); this module only picks the key,
opens the right kind of limiters (shared through Redis when the broker is
Redis, in-process otherwise) and reports each wait to the instruments.

Why ``limit=`` and not ``rate=``/``concurrency=`` on the worker: a worker's
``concurrency`` already means its handler tasks (how many jobs this process
runs at once). A limit's ``concurrency`` is a different number — jobs *of one
key* running at once, across every process — and putting both side by side in
one signature would invite reading one for the other.
"""

from __future__ import annotations

import re
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ._exports import publish
from ._job import Job
from .brokers._protocol import Broker
from .observability._events import Instruments

if TYPE_CHECKING:
    # Imported where used: an app with no Limit never loads guild.ratelimit.
    from .ratelimit._gcra import Rate
    from .ratelimit._keyed import KeyedLimiters, LimiterSettings

_UNITS = {
    "ms": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
}
_RATE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*/\s*([0-9]*\.?[0-9]*)\s*([a-z]+)\s*")


def parse_rate(text: str) -> Rate:
    """``"10/s"``, ``"600/min"``, ``"5/10s"``, ``"0.5/s"``: admissions per period.

    Raises:
        ValueError: not ``<number>/[<number>]<unit>`` with a unit among
            ms, s, m(in), h(our), d(ay), or a number that is not positive.
    """
    from .ratelimit._gcra import Rate

    match = _RATE.fullmatch(text.lower())
    unit = match.group(3) if match else ""
    if unit not in _UNITS and unit.removesuffix("s") in _UNITS:
        unit = unit.removesuffix("s")  # plurals: "minutes", "hours"
    if match is None or unit not in _UNITS:
        raise ValueError(
            f'a rate is "<count>/<period>" such as "10/s", "600/min" or "5/10s", got {text!r}'
        )
    count = float(match.group(1))
    period = float(match.group(2) or 1) * _UNITS[unit]
    return Rate(rate=count, period=period)


def _to_rate(value: object) -> Rate | None:
    from .ratelimit._gcra import Rate

    if value is None or isinstance(value, Rate):
        return value
    if isinstance(value, str):
        return parse_rate(value)
    raise TypeError(
        f'rate must be a string such as "10/s" or a guild.ratelimit.Rate, got {value!r}'
    )


def _concurrency(_: object, __: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"concurrency must be an int >= 1 or None, got {value!r}")


def _burst(_: object, __: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"burst must be an int >= 1 or None, got {value!r}")


@attrs.frozen(kw_only=True)
class Limit:
    """How fast and how many of a worker's jobs may run, per key, in every process.

    Example::

        @app.worker(
            "sync",
            limit=guild.Limit(
                rate="10/s", concurrency=2, key=lambda job: job.payload["tenant"]
            ),
        )
        async def sync(job: guild.Job) -> None: ...

    Attributes:
        rate: admissions per period per key (``"10/s"``, ``"600/min"``,
            ``"5/10s"``, or a :class:`guild.ratelimit.Rate`); ``None``: no rate.
        concurrency: jobs of one key running at once; ``None``: no count.
        burst: admissions allowed at once after an idle spell (overrides the
            ``Rate``'s own).
        key: the job's key (``job.payload["tenant"]``, say); must return a
            string. ``None``: one limit for the whole worker. A key function
            that raises, or returns anything but a string, dead-letters that
            job with the reason.
        max_idle_keys: idle keys' limiters kept in this process before the
            least recently used are forgotten (see ``guild.ratelimit``).

    Raises:
        ValueError: neither ``rate`` nor ``concurrency``, a malformed rate, or
            an out-of-range number.
    """

    rate: Rate | None = attrs.field(default=None, converter=_to_rate)
    concurrency: int | None = attrs.field(default=None, validator=_concurrency)
    burst: int | None = attrs.field(default=None, validator=_burst)
    key: Callable[[Job], str] | None = None
    max_idle_keys: int = attrs.field(default=10_000, validator=attrs.validators.ge(0))

    def __attrs_post_init__(self) -> None:
        if self.rate is None and self.concurrency is None:
            raise ValueError("a Limit needs a rate, a concurrency, or both")
        if self.rate is None and self.burst is not None:
            raise ValueError("a Limit's burst needs a rate")

    @property
    def settings(self) -> LimiterSettings:
        """What each key's limiter is built with."""
        from .ratelimit._keyed import LimiterSettings

        rate = self.rate
        return LimiterSettings(
            rate=None if rate is None else rate.rate,
            period=1.0 if rate is None else rate.period,
            burst=self.burst or (1 if rate is None else rate.burst),
            concurrency=self.concurrency,
        )


def merge_limit(current: Limit | None, changes: dict[str, Any]) -> Limit:
    """``current`` with ``changes`` (a ``[workers.NAME.limit]`` table) applied;
    with no current limit, a worker-wide one (the key function lives in code).

    Raises:
        ValueError: the result is no limit (see :class:`Limit`).
    """
    if current is None:
        return Limit(**changes)
    return attrs.evolve(current, **changes)


class BadLimitKey(Exception):
    """A job's limit key could not be had: the job is dead-lettered, with this reason."""


@attrs.define(eq=False)
class Permit:
    """A job's token of its key's limiter; :meth:`release` gives it back (once)."""

    gate: LimitGate
    key: str
    borrower: object
    held: bool = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.gate.limiters.release(self.key, self.borrower)


class LimitGate:
    """One worker's limits: keys jobs, admits them, reports the waits.

    Args:
        worker: the worker's name (metrics label, and part of the Redis name).
        limit: the limit.
        limiters: the keyed limiters to wait at.
        instruments: who hears of each admission's wait.
    """

    def __init__(
        self, worker: str, limit: Limit, limiters: KeyedLimiters, instruments: Instruments
    ) -> None:
        self.worker = worker
        self.limit = limit
        self.limiters = limiters
        self.instruments = instruments
        self._waits: set[trio.CancelScope] = set()
        self._closed = False

    def key_of(self, job: Job) -> str:
        """The job's key.

        Raises:
            BadLimitKey: the key function raised, or returned a non-string.
        """
        if self.limit.key is None:
            return ""
        try:
            key = self.limit.key(job)
        except Exception as error:
            text = str(error)
            shown = f"{type(error).__name__}: {text}" if text else type(error).__name__
            raise BadLimitKey(f"limit key function raised {shown}") from error
        if not isinstance(key, str):
            raise BadLimitKey(f"limit key function returned {key!r}, not a string")
        return key

    async def enter(self, job: Job, key: str, borrower: object) -> Permit | None:
        """Wait for ``key``'s limiter; ``None`` if :meth:`close` cut the wait short."""
        started = trio.current_time()
        with trio.CancelScope() as scope:
            if self._closed:
                scope.cancel()
            self._waits.add(scope)
            try:
                await self.limiters.acquire(key, borrower)
            finally:
                self._waits.discard(scope)
        if scope.cancelled_caught:
            return None
        if self.instruments.wants("job_limit_waited"):
            # Here, not at the top: an app with no Limit never builds it.
            from .observability._feature_events import JobLimitWaited

            self.instruments.emit(
                "job_limit_waited",
                JobLimitWaited(
                    worker=self.worker, job=job, key=key, waited=trio.current_time() - started
                ),
            )
        return Permit(self, key, borrower)

    def close(self) -> None:
        """Stop every wait now (the worker drains): those jobs go back unrun."""
        self._closed = True
        for scope in self._waits:
            scope.cancel()


def local_gate(worker: str, limit: Limit, instruments: Instruments) -> LimitGate:
    """A gate whose limiters live in this process."""
    from .ratelimit._keyed import KeyedLimiters

    return LimitGate(
        worker,
        limit,
        KeyedLimiters(limit.settings, max_idle=limit.max_idle_keys),
        instruments,
    )


@asynccontextmanager
async def open_gate(
    worker: str, limit: Limit | None, broker: Broker, instruments: Instruments
) -> AsyncIterator[LimitGate | None]:
    """The gate for a worker on ``broker``: shared through Redis when the broker
    is a :class:`guild.brokers.redis.RedisBroker` (on its connection, under its
    key prefix), in-process otherwise. ``None`` when there is no limit."""
    if limit is None:
        yield None
        return
    shared = await _redis_of(broker)
    if shared is None:
        yield local_gate(worker, limit, instruments)
        return
    client, prefix = shared
    from .ratelimit._keyed import open_redis_keyed_limiters

    async with open_redis_keyed_limiters(
        client, f"{prefix}:limit:{worker}:", limit.settings, max_idle=limit.max_idle_keys
    ) as limiters:
        yield LimitGate(worker, limit, limiters, instruments)


async def _redis_of(broker: Broker) -> tuple[Any, str] | None:
    # Looked up, not imported: a RedisBroker's module is loaded already, and
    # apps on other brokers never load coredis.
    module = sys.modules.get("guild.brokers.redis")
    if module is None or not isinstance(broker, module.RedisBroker):
        return None
    return await broker.redis_client(), broker.prefix


# Reprs, tracebacks and pickles name guild.X (see guild._exports).
publish(globals())
