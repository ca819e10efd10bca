"""ResultWorker: post job results to Slack, within Slack's limits, exactly once per part.

A job's payload names where the message goes and what it says:

* ``{"channel": "#ops", "text": "…"}`` — the Web API's ``chat.postMessage``
  (bot token), or ``{"webhook": "ops", "text": "…"}`` — the incoming webhook
  configured under that name (payloads name webhooks, never URLs);
* instead of ``text``, ``"job": "<job id>"`` posts that job's stored result
  (its status and value); a job not finished yet is retried later.

**Rate.** Every channel (a webhook counts as the channel ``hook:<name>``) has
its own limiter: ``rate`` posts per ``period``. On a Redis broker the limiters
are :class:`guild.ratelimit.RedisRateLimiter` on the broker's connection, so
every process shares each channel's limit; on SQLite and memory they are
per process. A ``429`` holds that channel's limiter for ``Retry-After``
seconds (:meth:`~guild.ratelimit.RateLimiter.hold_off`), for every job and,
on Redis, every process: the job that got it waits it out and posts again.

**Size.** Text over ``text_limit`` characters (default 40,000, the Web API's
limit on ``text``) is split into parts at newlines or spaces, posted in order,
the later ones in the thread of the first (Web API; webhooks cannot thread),
at most ``max_parts`` (the last one truncated with a marker if they cannot hold
it all); or, with ``oversize="truncate"``, cut to one part ending in the marker.

**Failures.** A 5xx, a transport error, or a Web API error that is Slack's own
trouble (``internal_error`` …) ends the run with :class:`guild.Retry`: the
worker's retry policy retries it with backoff. Any other 4xx, or Web API error
(``channel_not_found``, ``invalid_auth`` …), rejects the job
(:class:`guild.Reject`): it goes to the dead letters with the response body.

**Once per part, but for two windows.** After each part is posted, its
record (with the message's ``ts``) is written to the broker's Ledger
(:class:`guild.Ledger`) before the next part goes. A retried job skips the
parts recorded, and threads the rest under the recorded first part. A part is
posted twice only (1) when the process dies, or the broker is lost, between
the post and its record, or (2) when the answer to a post is lost (a timeout
or a dropped connection after the request went out: Slack may have posted it,
and ``chat.postMessage`` has no idempotency key), logged as
``result_transport_error`` with ``maybe_posted=True``. Records are kept
``record_ttl`` seconds (default 7 days); a job retried later than that posts
again. Parts are cut afresh on each run: change ``text_limit`` or
``max_parts`` while jobs are half posted and their remaining parts may not
line up with those already posted.

**Statistics.** Per channel, in the broker's Ledger under the namespace
``delivery:<queue>``: ``sent`` (messages fully posted), ``parts`` (posts
made), ``split``, ``truncated``, ``retried`` (runs ended in a retry),
``failed`` (jobs rejected), ``rate_limited`` (429s) and
``rate_limited_seconds`` (the ``Retry-After`` seconds they imposed). They
survive restarts, are shared by all processes, and show in ``guild stats``
and ``/metrics``. A run's figures are added when it ends; a process killed
mid-run loses that run's.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import types
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Literal, TypedDict, Unpack

import attrs
import httpx
import structlog
import trio

import guild
from guild import Ledger
from guild.ratelimit import RateLimiter, RedisRateLimiter

from ._result_plan import (
    SLACK_TEXT_LIMIT,
    TRUNCATION_MARKER,
    Outcome,
    Plan,
    Verdict,
    judge,
    plan_message,
)

_log = structlog.get_logger("guild_workers.result")

Limiter = RateLimiter | RedisRateLimiter


def _positive(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if isinstance(value, bool) or not (0 < value < math.inf):
        raise ValueError(f"{attribute.name} must be a positive finite number, got {value!r}")


def _at_least_one(_: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be an int >= 1, got {value!r}")


def _at_least_zero(_: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{attribute.name} must be an int >= 0, got {value!r}")


def _frozen_mapping(value: Mapping[str, str]) -> Mapping[str, str]:
    # A copy, so that changing the caller's dict cannot change frozen settings.
    return types.MappingProxyType(dict(value))


@attrs.frozen(kw_only=True)
class SlackSettings:
    """Where messages go and the limits they keep.

    Attributes:
        api_url: the Web API's base (``https://slack.com/api``); ``None`` refuses
            ``channel`` jobs.
        token: the bot token for the Web API.
        webhooks: incoming webhook URLs by the name payloads use.
        rate: posts per ``period`` on each channel (Slack allows about 1/s).
        period: seconds.
        burst: posts a channel may take at once after an idle spell.
        text_limit: characters of text in one post.
        oversize: ``"split"`` into threaded parts, or ``"truncate"`` with a marker.
        max_parts: parts of one message, at most.
        marker: what ends truncated text.
        record_ttl: seconds the record of a posted part is kept.
        max_holds: 429s one part may meet in a run before the job is retried later.
        max_idle_channels: channels' limiters kept while idle (no post going)
            before the least recently used are dropped (see ``_ChannelLimits``).
        timeout: seconds for one HTTP request.
    """

    api_url: str | None = "https://slack.com/api"
    token: str = ""
    webhooks: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_mapping)
    rate: float = attrs.field(default=1.0, validator=_positive)
    period: float = attrs.field(default=1.0, validator=_positive)
    burst: int = attrs.field(default=1, validator=_at_least_one)
    text_limit: int = attrs.field(default=SLACK_TEXT_LIMIT, validator=_at_least_one)
    oversize: Literal["split", "truncate"] = attrs.field(
        default="split", validator=attrs.validators.in_(("split", "truncate"))
    )
    max_parts: int = attrs.field(default=10, validator=_at_least_one)
    marker: str = TRUNCATION_MARKER
    record_ttl: float = attrs.field(default=7 * 86_400.0, validator=_positive)
    max_holds: int = attrs.field(default=20, validator=_at_least_one)
    max_idle_channels: int = attrs.field(default=10_000, validator=_at_least_zero)
    timeout: float = attrs.field(default=10.0, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if len(self.marker) >= self.text_limit:
            raise ValueError(
                f"marker ({len(self.marker)} characters) must be shorter than"
                f" text_limit ({self.text_limit})"
            )
        for name, url in self.webhooks.items():
            if not (isinstance(name, str) and name and isinstance(url, str) and "://" in url):
                raise ValueError(f"webhook {name!r}: {url!r} is not a URL")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> SlackSettings:
        """From ``GUILD_SLACK_API_URL``, ``GUILD_SLACK_TOKEN``, ``GUILD_SLACK_WEBHOOKS``
        (``name=url`` pairs, comma-separated) and ``GUILD_SLACK_RATE`` (posts per second).

        Raises:
            ValueError: a variable is malformed (named in the message).
        """
        env = os.environ if environ is None else environ
        fields: dict[str, Any] = {}
        if "GUILD_SLACK_API_URL" in env:
            fields["api_url"] = env["GUILD_SLACK_API_URL"] or None
        if "GUILD_SLACK_TOKEN" in env:
            fields["token"] = env["GUILD_SLACK_TOKEN"]
        hooks = env.get("GUILD_SLACK_WEBHOOKS", "").strip()
        if hooks:
            webhooks = {}
            for pair in hooks.split(","):
                name, sep, url = pair.strip().partition("=")
                if not sep:
                    raise ValueError(f"GUILD_SLACK_WEBHOOKS: {pair!r} is not name=url")
                webhooks[name.strip()] = url.strip()
            fields["webhooks"] = webhooks
        if "GUILD_SLACK_RATE" in env:
            try:
                fields["rate"] = float(env["GUILD_SLACK_RATE"])
            except ValueError:
                raise ValueError(
                    f"GUILD_SLACK_RATE: {env['GUILD_SLACK_RATE']!r} is not a number"
                ) from None
        fields.update(overrides)
        return cls(**fields)


@attrs.frozen
class _Target:
    """One message's destination: the channel (limiter and statistics key) and how to post."""

    channel: str
    kind: Literal["api", "webhook"]
    url: str


def _reject_unless(condition: bool, reason: str) -> None:
    if not condition:
        raise guild.Reject(reason)


@attrs.define(eq=False)
class _Channel:
    """A channel's limiter and the runs posting through it now."""

    limiter: Limiter
    users: int = 0
    # A Redis limiter's keeper task (open_on's block): cancelled when it is dropped.
    stop: trio.CancelScope | None = None


class _ChannelLimits:
    """One limiter per channel, made on first use: in-process, or on the Redis
    broker's connection (kept open by a task in ``nursery`` until it closes).

    A channel posted to once must not keep its limiter for ever: once idle (no
    run posting through it) a limiter goes on an LRU list, and past ``max_idle``
    the least recently used are dropped, as ``guild.ratelimit.KeyedLimiters``
    drops its keys'. A local limiter is dropped only once it is fresh (no
    hold-off pending, its burst recharged), since a new one would grant the
    channel a fresh burst; the oldest not yet fresh stops the trim, so the list
    runs over by the channels used within a burst's recharge or held off by a
    429. A Redis limiter's state, hold-offs included, lives in Redis: dropping
    it loses nothing.
    """

    def __init__(self, settings: SlackSettings, nursery: trio.Nursery) -> None:
        self._settings = settings
        self._nursery = nursery
        self._channels: dict[str, _Channel] = {}
        self._opening: dict[str, trio.Event] = {}
        self._idle: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        """Limiters alive now (in use and idle)."""
        return len(self._channels)

    def limiter(self, channel: str) -> Limiter | None:
        """The limiter of ``channel``, if one exists now."""
        found = self._channels.get(channel)
        return None if found is None else found.limiter

    @asynccontextmanager
    async def using(self, channel: str, broker: guild.Broker) -> AsyncIterator[Limiter]:
        """``channel``'s limiter, kept for the block (not dropped while it runs)."""
        found = await self._get(channel, broker)
        # No checkpoint since _get found it: it cannot have been dropped meanwhile.
        found.users += 1
        self._idle.pop(channel, None)
        try:
            yield found.limiter
        finally:
            found.users -= 1
            if found.users == 0:
                self._idle[channel] = None
                self._trim()

    async def _get(self, channel: str, broker: guild.Broker) -> _Channel:
        while channel not in self._channels:
            opening = self._opening.get(channel)
            if opening is not None:
                await opening.wait()
                continue
            redis = await _redis_of(broker)
            if redis is None:
                limiter = RateLimiter(
                    self._settings.rate, self._settings.period, burst=self._settings.burst
                )
                self._channels[channel] = _Channel(limiter)
                break
            self._opening[channel] = opened = trio.Event()
            try:
                await self._nursery.start(self._keep_redis_limiter, channel, *redis)
            finally:
                del self._opening[channel]
                opened.set()
        return self._channels[channel]

    def _trim(self) -> None:
        while len(self._idle) > self._settings.max_idle_channels:
            channel = next(iter(self._idle))
            found = self._channels[channel]
            if isinstance(found.limiter, RateLimiter) and not found.limiter.is_fresh():
                # The rest were used later still: none of them is fresh either,
                # unless this one is held off (then they wait for it to end).
                return
            del self._idle[channel]
            del self._channels[channel]
            if found.stop is not None:
                found.stop.cancel()

    async def _keep_redis_limiter(
        self, channel: str, client: Any, prefix: str, *, task_status: trio.TaskStatus[None]
    ) -> None:
        settings = self._settings
        with trio.CancelScope() as stop:
            async with RedisRateLimiter.open_on(
                client,
                f"{prefix}:results:{channel}",
                settings.rate,
                settings.period,
                burst=settings.burst,
            ) as limiter:
                self._channels[channel] = _Channel(limiter, stop=stop)
                task_status.started()
                await trio.sleep_forever()


async def _redis_of(broker: guild.Broker) -> tuple[Any, str] | None:
    """The Redis connection and key prefix of a Redis broker, else ``None``."""
    from guild.brokers import RedisBroker

    if isinstance(broker, RedisBroker):
        return await broker.redis_client(), broker.prefix
    return None


@attrs.define
class _Run:
    """What one run of a job did, for the statistics."""

    parts: int = 0
    rate_limited: int = 0
    rate_limited_seconds: float = 0.0

    def counts(self, **extra: float) -> dict[str, float]:
        figures = {
            "parts": float(self.parts),
            "rate_limited": float(self.rate_limited),
            "rate_limited_seconds": self.rate_limited_seconds,
            **extra,
        }
        return {name: value for name, value in figures.items() if value}


@attrs.define
class ResultWorker:
    """The result handler and what it owns (an HTTP client and the channels' limiters).

    Register it with :func:`add_result_worker` (for ``guild run``) or
    :func:`open_result_worker` (in your own Trio program).

    Attributes:
        app: the app whose broker keeps the records and statistics.
        settings: where and how to post.
        queue: the queue it consumes (names its Ledger namespaces).
    """

    app: guild.Guild
    settings: SlackSettings
    queue: str = "results"
    _client: httpx.AsyncClient | None = attrs.field(init=False, default=None)
    _limits: _ChannelLimits | None = attrs.field(init=False, default=None)
    _sessions: int = attrs.field(init=False, default=0)

    @property
    def stats_namespace(self) -> str:
        """The Ledger namespace of the per-channel statistics."""
        return f"delivery:{self.queue}"

    @property
    def records_namespace(self) -> str:
        """The Ledger namespace of the posted parts' records."""
        return f"posted:{self.queue}"

    @asynccontextmanager
    async def session(self) -> AsyncIterator[ResultWorker]:
        """Own the HTTP client and the limiters for the block; nested blocks share them."""
        if self._sessions:
            self._sessions += 1
            try:
                yield self
            finally:
                self._sessions -= 1
            return
        async with AsyncExitStack() as stack:
            self._client = await stack.enter_async_context(
                httpx.AsyncClient(timeout=self.settings.timeout)
            )
            nursery = await stack.enter_async_context(trio.open_nursery())
            stack.callback(nursery.cancel_scope.cancel)
            self._limits = _ChannelLimits(self.settings, nursery)
            # A Redis broker makes its client for shared limiters on first use
            # (importing coredis, about 0.3 s): made here, before any post, so
            # the first channel's posts do not wait for it.
            with contextlib.suppress(guild.NotRunning):
                await _redis_of(self.app.broker)
            self._sessions = 1
            try:
                yield self
            finally:
                self._sessions = 0
                self._client = None
                self._limits = None

    async def statistics(self) -> dict[str, dict[str, float]]:
        """The per-channel statistics, as kept in the broker."""
        return await self._ledger().get_counts(self.stats_namespace)

    async def handle(self, job: guild.Job) -> dict[str, Any]:
        """The handler: post the message's parts not yet posted, and report them."""
        if self._client is None or self._limits is None:
            raise guild.NotRunning(f"result worker {self.queue!r} has no open session")
        target = self._target(job.payload)
        text = await self._text(job.payload)
        settings = self.settings
        plan = plan_message(
            text,
            limit=settings.text_limit,
            oversize=settings.oversize,
            max_parts=settings.max_parts,
            marker=settings.marker,
        )
        ledger = self._ledger()
        run = _Run()
        try:
            ts = await self._post_parts(job, target, plan, ledger, run)
        except guild.Reject:
            await self._count(ledger, target, run.counts(failed=1))
            raise
        except guild.Retry:
            await self._count(ledger, target, run.counts(retried=1))
            raise
        except BaseException:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self._count(ledger, target, run.counts())
            raise
        await self._count(
            ledger,
            target,
            run.counts(sent=1, split=float(len(plan.parts) > 1), truncated=float(plan.truncated)),
        )
        _log.info("result_posted", channel=target.channel, job_id=job.id, parts=len(plan.parts))
        return {
            "channel": target.channel,
            "parts": len(plan.parts),
            "ts": ts,
            "truncated": plan.truncated,
        }

    # --- the steps -----------------------------------------------------------------

    def _ledger(self) -> Ledger:
        broker = self.app.broker
        if not isinstance(broker, Ledger):
            raise guild.BrokerError(
                f"the result worker needs a broker with the Ledger protocol;"
                f" {type(broker).__name__} has none"
            )
        return broker

    def _target(self, payload: object) -> _Target:
        _reject_unless(isinstance(payload, dict), "payload must be an object")
        assert isinstance(payload, dict)
        channel, webhook = payload.get("channel"), payload.get("webhook")
        _reject_unless(
            (channel is None) != (webhook is None), "payload must have channel or webhook, not both"
        )
        if webhook is not None:
            _reject_unless(isinstance(webhook, str), "webhook must be a name")
            url = self.settings.webhooks.get(webhook)
            _reject_unless(url is not None, f"no webhook named {webhook!r} is configured")
            assert url is not None
            return _Target(channel=f"hook:{webhook}", kind="webhook", url=url)
        _reject_unless(isinstance(channel, str) and bool(channel), "channel must be non-empty text")
        api = self.settings.api_url
        _reject_unless(api is not None, "no Slack Web API is configured (api_url)")
        assert isinstance(channel, str) and api is not None
        return _Target(channel=channel, kind="api", url=api.rstrip("/") + "/chat.postMessage")

    async def _text(self, payload: dict[str, Any]) -> str:
        text, of_job = payload.get("text"), payload.get("job")
        _reject_unless(
            (text is None) != (of_job is None), "payload must have text or job, not both"
        )
        if text is not None:
            _reject_unless(isinstance(text, str), "text must be text")
            assert isinstance(text, str)
            return text
        _reject_unless(isinstance(of_job, str) and bool(of_job), "job must be a job id")
        assert isinstance(of_job, str)
        result = await self.app.result(of_job)
        if result is None:
            raise guild.Retry(after=5.0)  # not finished yet: look again later
        return format_result(of_job, result)

    async def _post_parts(
        self, job: guild.Job, target: _Target, plan: Plan, ledger: Ledger, run: _Run
    ) -> list[str]:
        keys = [f"{job.id}:{index}" for index in range(len(plan.parts))]
        done = await ledger.marked(self.records_namespace, keys)
        posted: list[str] = []
        for index, (key, part) in enumerate(zip(keys, plan.parts, strict=True)):
            if key in done:
                posted.append(done[key])
                continue
            thread = posted[0] if index and target.kind == "api" and posted[0] else None
            ts = await self._post_part(target, part, thread, run)
            # Recorded before the next part goes: a retry skips it. A crash
            # between the post and this line is the one window for a duplicate.
            await ledger.mark(self.records_namespace, key, ttl=self.settings.record_ttl, value=ts)
            posted.append(ts)
        return posted

    async def _post_part(self, target: _Target, text: str, thread: str | None, run: _Run) -> str:
        assert self._limits is not None and self._client is not None
        async with self._limits.using(target.channel, self.app.broker) as limiter:
            holds = 0
            while True:
                async with limiter:
                    outcome = await self._send(target, text, thread)
                if outcome.verdict is Verdict.POSTED:
                    run.parts += 1
                    return outcome.ts
                if outcome.verdict is Verdict.REJECT:
                    raise guild.Reject(f"{target.channel}: {outcome.reason}")
                if outcome.verdict is Verdict.RETRY:
                    raise guild.Retry()
                run.rate_limited += 1
                run.rate_limited_seconds += outcome.wait
                await limiter.hold_off(outcome.wait)
                _log.info("result_rate_limited", channel=target.channel, retry_after=outcome.wait)
                holds += 1
                if holds >= self.settings.max_holds:
                    raise guild.Retry(after=outcome.wait)

    async def _send(self, target: _Target, text: str, thread: str | None) -> Outcome:
        assert self._client is not None
        body: dict[str, Any] = {"text": text}
        headers = {}
        if target.kind == "api":
            body["channel"] = target.channel
            if thread:
                body["thread_ts"] = thread
            headers["authorization"] = f"Bearer {self.settings.token}"
        try:
            response = await self._client.post(target.url, json=body, headers=headers)
        except httpx.TransportError as exc:
            # Refused before a byte went out, the post was surely not made; after
            # that (a timeout, a dropped connection) Slack may have posted it, and
            # the retry posts it again: the second window for a duplicate.
            unsent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
            _log.warning(
                "result_transport_error",
                channel=target.channel,
                error=str(exc) or type(exc).__name__,
                maybe_posted=not unsent,
            )
            raise guild.Retry() from exc
        return judge(target.kind, response.status_code, response.headers, response.text)

    async def _count(self, ledger: Ledger, target: _Target, counts: dict[str, float]) -> None:
        if counts:
            await ledger.add_counts(self.stats_namespace, target.channel, counts)


def format_result(job_id: str, result: guild.Result) -> str:
    """How a job's result reads in Slack: its status, then its value or error."""
    head = f"job `{job_id}`: {result.status.value}"
    if result.error:
        return f"{head}\n```{result.error}```"
    value = result.value if isinstance(result.value, str) else json.dumps(result.value, indent=2)
    return f"{head}\n```{value}```"


def add_result_worker(
    app: guild.Guild,
    *,
    queue: str = "results",
    settings: SlackSettings | None = None,
    concurrency: int = 16,
    max_attempts: int = 8,
) -> ResultWorker:
    """Register a ResultWorker on ``app``; its client and limiters open and close with each run.

    Args:
        queue: the queue it consumes (also the worker's name).
        settings: where and how to post (default: :meth:`SlackSettings.from_env`).
        concurrency: jobs at once (across channels; each channel keeps its rate).
        max_attempts: runs of a job before it is dead-lettered (5xx keep retrying).
    """
    worker = ResultWorker(app=app, settings=settings or SlackSettings.from_env(), queue=queue)
    app.add_worker(
        guild.WorkerSpec(
            queue=queue,
            handler=worker.handle,
            concurrency=concurrency,
            max_attempts=max_attempts,
            # Waiting out a channel's rate and its 429s is part of a run.
            timeout=None,
        )
    )
    app.lifespan(lambda _app: worker.session())
    return worker


class ResultWorkerOptions(TypedDict, total=False):
    """The keyword arguments of :func:`add_result_worker`."""

    queue: str
    settings: SlackSettings | None
    concurrency: int
    max_attempts: int


@asynccontextmanager
async def open_result_worker(
    app: guild.Guild, **options: Unpack[ResultWorkerOptions]
) -> AsyncIterator[ResultWorker]:
    """:func:`add_result_worker`, with the worker's session open for the block (so
    ``handle`` can be called directly, as in tests)."""
    worker = add_result_worker(app, **options)
    async with worker.session():
        yield worker


app = guild.Guild("results")
"""A ready app for ``guild run guild_workers.result:app``: one ResultWorker on
``results``, configured from ``GUILD_SLACK_*`` (see :meth:`SlackSettings.from_env`)."""
add_result_worker(app)
