"""Clients: enqueue jobs and read their fate from code that does not run Trio.

A producer is usually a web app: FastAPI on asyncio, Flask or Django on threads,
or a plain script. guild's brokers are Trio-native (SQLite through
``trio.to_thread``, Redis through coredis on anyio under Trio), so the broker of
an asyncio or synchronous client lives on a Trio loop of its own.

Theory of operation:

* :class:`Client` (synchronous) and :class:`AsyncClient` under asyncio own a
  ``_Portal``: one daemon thread running ``trio.run``, which opens the broker and
  holds it until the client closes. A call is submitted with the loop's
  ``TrioToken.run_sync_soon`` (thread-safe) as a task in the portal's nursery and
  answered through a ``concurrent.futures.Future``: a thread blocks on
  ``future.result()``, an asyncio task awaits ``asyncio.wrap_future``.
  Cancelling the future (an asyncio task cancelled, say) cancels the Trio task's
  scope, so a long ``result(wait=…)`` stops with it.
* :class:`AsyncClient` under Trio opens the broker in the caller's own run: no
  thread, no hop.
* :class:`Client` on SQLite enqueues in the calling thread
  (``SqliteBroker.enqueue_here``: the broker's own transaction, on a connection
  of the client's taken from a small pool), as Huey does: no hop to the
  portal's thread and back, the cost of a call that is mostly one commit.
* Every operation is written once, as an ``async`` function of the broker, and
  shared by the three ways in. Only guild's errors cross back: the broker's
  (``BrokerUnavailable``, ``PayloadEncodeError`` …) as they are, and
  ``BrokerClosed`` for any call made after ``close`` or cut short by it; no
  ``trio.Cancelled`` or ``RunFinishedError`` ever reaches the caller.
* ``memory://`` is refused: the jobs would vanish with the client's process.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import math
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, TypeVar, cast

import sniffio
import trio

from ._errors import BrokerClosed, UnknownBrokerURL, UnknownJob
from ._exports import publish
from ._job import Job, JobStatus, JSONValue, Priority, Result, check_priority, jobs_like
from ._jobinfo import JobInfo
from ._may_appear import time_to_appear
from .brokers._protocol import Broker, EnqueuesAndWaits
from .brokers._url import broker_url_from_env, check_broker_url, display_url, open_broker

T = TypeVar("T")
Operation = Callable[[Broker], Awaitable[T]]


def client_url(url: str | None) -> str:
    """The broker URL a client will use (``$GUILD_BROKER`` when ``None``).

    Raises:
        UnknownBrokerURL: malformed, or ``memory://`` (nothing outside this process
            would ever see its jobs, and they would vanish when it exits).
    """
    url = broker_url_from_env(url)
    if check_broker_url(url) == "memory":
        raise UnknownBrokerURL(
            url,
            "memory:// lives inside one process: a client's jobs would never reach a"
            " worker and would vanish when it exits; use sqlite:PATH or redis://HOST",
        )
    return url


# --- the operations, once for every client ---------------------------------------------


def _ids(jobs: str | Job | Iterable[str | Job]) -> list[str]:
    if isinstance(jobs, str | Job):
        jobs = [jobs]
    return [job.id if isinstance(job, Job) else job for job in jobs]


def _seconds(name: str, value: float | None) -> float | None:
    if value is not None and not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return value


def make_jobs(
    queue: str,
    payloads: Iterable[JSONValue],
    *,
    now: float,
    key: str | None = None,
    delay: float | None = None,
    max_attempts: int | None = None,
    timeout: float | None = None,
    trace_id: str | None = None,
    priority: Priority | int | str = Priority.NORMAL,
) -> list[Job]:
    """The jobs to store for one enqueue call (``now`` in the broker's clock).

    Raises:
        InvalidQueueName: ``queue`` is not a name a queue may have.
        ValueError: ``delay`` is negative or not finite, or a field is out of range.
    """
    delay = _seconds("delay", delay)
    level = check_priority(priority)
    not_before = now + delay if delay else None
    # Every field but the payload and the id is the same for the whole call:
    # validated once, on this template, then copied (see ``jobs_like``).
    template = Job(
        queue=queue,
        id="template",
        key=key,
        max_attempts=max_attempts,
        timeout=timeout,
        not_before=not_before,
        priority=level,
    )
    return jobs_like(template, payloads, trace_id)


async def job_info(broker: Broker, job_id: str) -> JobInfo:
    """What the broker knows of the job now (``Broker.job_info``).

    Raises:
        UnknownJob: the broker knows no job with that id.
    """
    found = await broker.job_info(job_id)
    if found is None:
        raise UnknownJob(job_id)
    return found


async def job_status(broker: Broker, job_id: str) -> JobStatus:
    """Where the job is now.

    Raises:
        UnknownJob: the broker knows no job with that id.
    """
    return (await job_info(broker, job_id)).status


async def job_result(broker: Broker, job_id: str, wait: float) -> Result | None:
    """The job's result, waiting up to ``wait`` seconds; ``None`` if it is not finished.

    An id the broker does not know is answered at once, not after ``wait``,
    unless its job may still appear (:mod:`guild._may_appear`): then it is
    waited for while it may still appear, and once it has, for the rest of ``wait``.

    Raises:
        UnknownJob: no result came and the broker knows no job with that id.
    """
    _seconds("wait", wait)
    deadline = trio.current_time() + wait
    unknown = wait > 0 and await broker.job_info(job_id) is None
    if unknown:
        # A wait for a job that does not exist would never end well: say so
        # now, unless it is still on its way.
        wait = min(wait, await time_to_appear(broker, job_id))
    found = await broker.get_result(job_id, wait=wait)
    if found is None and await broker.job_info(job_id) is None:
        raise UnknownJob(job_id)
    if found is None and unknown and (remaining := deadline - trio.current_time()) > 0:
        # It appeared within its window: wait the rest for it to finish.
        found = await broker.get_result(job_id, wait=remaining)
    return found


# Whether each broker class does EnqueuesAndWaits: a runtime Protocol's isinstance
# walks its members each time (several microseconds a call).
_ONE_CALL: dict[type, bool] = {}


async def enqueue_and_wait(broker: Broker, job: Job, wait: float) -> tuple[Job, Result | None]:
    """Enqueue ``job`` and wait up to ``wait`` seconds for its result: the job as
    stored (for a key another job holds: that job) and its result, or ``None``.

    One call of a broker that does both (``EnqueuesAndWaits``: Redis, one round
    trip); else ``enqueue`` then ``get_result``.

    Raises:
        ValueError: ``wait`` is negative or not finite.
    """
    _seconds("wait", wait)
    kind = type(broker)
    one_call = _ONE_CALL.get(kind)
    if one_call is None:
        one_call = _ONE_CALL[kind] = isinstance(broker, EnqueuesAndWaits)
    if one_call:
        return await cast("EnqueuesAndWaits", broker).enqueue_and_wait(job, wait=wait)
    (stored,) = await broker.enqueue([job])
    return stored, await broker.get_result(stored.id, wait=wait)


async def enqueue_one_and_wait(
    broker: Broker, queue: str, payload: JSONValue, wait: float, **options: Any
) -> Result | None:
    """Enqueue one job made of ``payload`` and wait for its result (Guild, Client, AsyncClient)."""
    (job,) = make_jobs(queue, [payload], now=broker.now(), **options)
    return (await enqueue_and_wait(broker, job, wait))[1]


async def cancel_jobs(broker: Broker, job_ids: Sequence[str]) -> list[str]:
    """Cancel jobs; returns the ids that were active (and are now cancelled or cancelling)."""
    return await broker.cancel(job_ids)


async def enqueue_jobs(
    broker: Broker, queue: str, payloads: list[JSONValue], **options: Any
) -> list[Job]:
    """Enqueue jobs made of ``payloads`` in one broker call (Guild, Client, AsyncClient)."""
    return await broker.enqueue(make_jobs(queue, payloads, now=broker.now(), **options))


def enqueue_options(
    key: str | None,
    delay: float | None,
    max_attempts: int | None,
    timeout: float | None,
    trace_id: str | None,
    priority: Priority | int | str,
) -> dict[str, Any]:
    """The options every enqueue takes, as :func:`make_jobs`' keywords."""
    return {
        "key": key,
        "delay": delay,
        "max_attempts": max_attempts,
        "timeout": timeout,
        "trace_id": trace_id,
        "priority": priority,
    }


# --- the portal: a Trio loop on a thread, holding the broker ----------------------------


def _settle(
    future: concurrent.futures.Future[T], *, value: Any = None, error: BaseException | None = None
) -> None:
    # The caller may have cancelled the future meanwhile; its answer then goes nowhere.
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)
    except concurrent.futures.InvalidStateError:
        pass


class _Portal:
    """One thread, one Trio run, one open broker; calls come in from any thread."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._lock = threading.Lock()
        self._closed = False
        self._opened: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._finished: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._nursery: trio.Nursery | None = None
        self._broker: Broker | None = None
        # SQLite's enqueue in the calling thread (``SqliteBroker.enqueue_here``), once open.
        self.enqueue_here: Callable[[Sequence[Job]], list[Job]] | None = None
        self._stopping = False
        self._thread = threading.Thread(
            target=self._main, name=f"guild-client {display_url(url)}", daemon=True
        )

    def start(self) -> concurrent.futures.Future[None]:
        """Start the thread; the future resolves once the broker is open (or with why not)."""
        self._thread.start()
        # Daemon, so a client never closed cannot hang the interpreter's exit; this
        # closes its broker properly before the interpreter goes.
        atexit.register(self.close)
        return self._opened

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:  # the thread's last word goes to whoever waits
            _settle(self._opened, error=exc)
        finally:
            _settle(self._opened, error=BrokerClosed("the guild client was closed"))
            _settle(self._finished)

    async def _serve(self) -> None:
        # Both set before the broker opens, so a close during the opening is heard.
        self._stop = trio.Event()
        self._token = trio.lowlevel.current_trio_token()
        async with open_broker(self._url) as broker, trio.open_nursery() as nursery:
            self._broker = broker
            self._nursery = nursery
            if check_broker_url(self._url) == "sqlite":
                from .brokers.sqlite import SqliteBroker  # imported by open_broker already

                if isinstance(broker, SqliteBroker):
                    self.enqueue_here = broker.enqueue_here
            with self._lock:
                closing = self._closed
            if not closing:
                _settle(self._opened)
                await self._stop.wait()
            self._stopping = True
            nursery.cancel_scope.cancel(reason="guild client closed")

    def submit(self, operation: Operation[T]) -> concurrent.futures.Future[T]:
        """Run ``operation(broker)`` on the portal's loop; thread-safe.

        Raises:
            BrokerClosed: the client is closed.
        """
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        scope = trio.CancelScope()

        async def run(broker: Broker) -> None:
            try:
                with scope:
                    _settle(future, value=await operation(broker))
                    return
            except Exception as exc:
                _settle(future, error=exc)
                return
            finally:
                if not future.done():
                    # Cut short by close (a cancel by the caller left it cancelled).
                    _settle(future, error=BrokerClosed("the guild client closed during the call"))

        def spawn() -> None:
            if self._stopping or self._nursery is None or self._broker is None:
                _settle(future, error=BrokerClosed("the guild client is closed"))
                return
            self._nursery.start_soon(run, self._broker)

        def on_done(done: concurrent.futures.Future[T]) -> None:
            if done.cancelled():
                self._soon(scope.cancel)

        with self._lock:
            if self._closed or self._token is None:
                raise BrokerClosed("the guild client is closed")
            if not self._soon(spawn):
                raise BrokerClosed("the guild client is closed")
        future.add_done_callback(on_done)
        return future

    def _soon(self, fn: Callable[[], object]) -> bool:
        token = self._token
        if token is None:
            return False
        try:
            token.run_sync_soon(fn)
        except trio.RunFinishedError:
            return False
        return True

    def check_open(self) -> None:
        """Raises:
        BrokerClosed: the client is closed."""
        if self._closed or self._stopping:
            raise BrokerClosed("the guild client is closed")

    def stop(self) -> concurrent.futures.Future[None]:
        """Begin closing (idempotent, thread-safe); the future resolves when the thread ended.

        Calls still running end with ``BrokerClosed``.
        """
        with self._lock:
            first = not self._closed
            self._closed = True
        if first:
            atexit.unregister(self.close)
            stop = self._stop
            if stop is not None:
                self._soon(stop.set)
        return self._finished

    def close(self) -> None:
        """Close and wait for the thread to end."""
        self.stop()
        if threading.current_thread() is not self._thread and self._thread.is_alive():
            self._thread.join()

    def call(self, operation: Operation[T]) -> T:
        """Run ``operation`` and block the calling thread for its answer."""
        future = self.submit(operation)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # Ctrl-C while waiting: stop the work too
            raise


# --- the public clients ---------------------------------------------------------------------


class Client:
    """A synchronous, thread-safe client of a SQLite or Redis broker.

    For Flask, Django, scripts and any thread: each call blocks the calling
    thread until the broker answered. One client may serve every thread of a
    process. The broker lives on a Trio loop in a thread of the client's own,
    opened here and closed by :meth:`close` (or the ``with`` block).

    Args:
        url: ``sqlite:PATH`` or ``redis://HOST:PORT/DB`` (any URL
            :func:`guild.open_broker` takes but ``memory://``); default
            ``$GUILD_BROKER``, else ``sqlite:guild.db``.

    Raises:
        UnknownBrokerURL: a malformed URL, or ``memory://``.
        BrokerUnavailable: the broker cannot be reached.

    Example::

        with guild.Client("sqlite:jobs.db") as client:
            job = client.enqueue("emails", {"to": "ada@example.com"})
            result = client.result(job, wait=10)
    """

    def __init__(self, url: str | None = None) -> None:
        self.url = client_url(url)
        self._portal = _Portal(self.url)
        try:
            self._portal.start().result()
        except BaseException:
            self._portal.close()
            raise

    def __repr__(self) -> str:
        return f"guild.Client({display_url(self.url)!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the broker and end the client's thread (idempotent).

        Calls made afterwards raise :class:`guild.BrokerClosed`; so do calls of
        other threads still running when it closes (an enqueue among them may
        have been stored).
        """
        self._portal.close()

    def enqueue(
        self,
        queue: str,
        payload: JSONValue = None,
        *,
        key: str | None = None,
        delay: float | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        trace_id: str | None = None,
        priority: Priority | int | str = Priority.NORMAL,
    ) -> Job:
        """Enqueue one job and return it (for a duplicate ``key``: the job that holds it).

        ``priority`` (a :class:`guild.Priority`, its int or its name): claimed
        before the waiting jobs of lower priority on its queue, in order within
        its level.

        Raises:
            InvalidQueueName, PayloadEncodeError, ValueError: bad input; nothing stored.
            BrokerClosed: the client is closed.
        """
        (job,) = self.enqueue_many(
            queue,
            [payload],
            key=key,
            delay=delay,
            max_attempts=max_attempts,
            timeout=timeout,
            trace_id=trace_id,
            priority=priority,
        )
        return job

    def enqueue_many(
        self,
        queue: str,
        payloads: Iterable[JSONValue],
        *,
        key: str | None = None,
        delay: float | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        trace_id: str | None = None,
        priority: Priority | int | str = Priority.NORMAL,
    ) -> list[Job]:
        """Enqueue many jobs in one broker call; all or none are stored.

        On SQLite the call runs in the calling thread, on a connection of the
        client's own (no hop to the client's thread): as fast as one commit
        at the broker's durability allows.
        """
        items = list(payloads)
        options = enqueue_options(key, delay, max_attempts, timeout, trace_id, priority)
        here = self._portal.enqueue_here
        if here is None:
            return self._portal.call(lambda broker: enqueue_jobs(broker, queue, items, **options))
        self._portal.check_open()
        # time.time(): SqliteBroker.now.
        return here(make_jobs(queue, items, now=time.time(), **options))

    def enqueue_and_wait(
        self,
        queue: str,
        payload: JSONValue = None,
        *,
        wait: float,
        key: str | None = None,
        delay: float | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        trace_id: str | None = None,
        priority: Priority | int | str = Priority.NORMAL,
    ) -> Result | None:
        """Enqueue one job and wait up to ``wait`` seconds for its result: what
        ``enqueue`` then ``result(job, wait=wait)`` answer, ``None`` if it has not
        finished in time (it stays enqueued and runs). For a duplicate ``key``:
        the result of the job that holds it. On a single Redis this is one round
        trip, not two.

        Raises:
            InvalidQueueName, PayloadEncodeError, ValueError: bad input; nothing stored.
            BrokerUnavailable: the broker refused or could not store the job
                (raised at once, not after the wait).
            BrokerClosed: the client is closed.
        """
        options = enqueue_options(key, delay, max_attempts, timeout, trace_id, priority)
        return self._portal.call(
            lambda broker: enqueue_one_and_wait(broker, queue, payload, wait, **options)
        )

    def result(self, job: Job | str, *, wait: float = 0.0) -> Result | None:
        """The job's result, waiting up to ``wait`` seconds; ``None`` if it is not finished.

        An id the broker does not know is answered at once, unless its job may
        still appear (an id guild made in the last minute, a running workflow's
        step): that one is waited for while it may.

        Raises:
            UnknownJob: the broker knows no job with that id.
        """
        job_id = _ids(job)[0]
        return self._portal.call(lambda broker: job_result(broker, job_id, wait))

    def status(self, job: Job | str) -> JobStatus:
        """Where the job is now: ready, delayed, in flight, or finished.

        Raises:
            UnknownJob: the broker knows no job with that id.
        """
        job_id = _ids(job)[0]
        return self._portal.call(lambda broker: job_status(broker, job_id))

    def info(self, job: Job | str) -> JobInfo:
        """Everything known of the job now: status, attempts, timings, the worker
        that ran it, its last error and traceback, its progress and its result
        (see :class:`guild.JobInfo`).

        Raises:
            UnknownJob: the broker knows no job with that id.
        """
        job_id = _ids(job)[0]
        return self._portal.call(lambda broker: job_info(broker, job_id))

    def cancel(self, jobs: str | Job | Iterable[str | Job]) -> list[str]:
        """Cancel jobs: a queued or delayed one never runs, a running one is stopped.

        Returns the ids that were still active; finished or unknown ones are left out.
        """
        job_ids = _ids(jobs)
        return self._portal.call(lambda broker: cancel_jobs(broker, job_ids))


class AsyncClient:
    """An async client of a SQLite or Redis broker, for Trio and for asyncio.

    Use it as ``async with guild.AsyncClient(url) as client``. Under Trio the
    broker opens in your own run; under asyncio (FastAPI, aiohttp …) it lives on
    a Trio loop in a thread of the client's own, and each call is awaited
    without blocking the event loop. Cancelling the awaiting task cancels the call.

    Args:
        url: as for :class:`guild.Client`.

    Raises:
        UnknownBrokerURL: a malformed URL, or ``memory://``.
    """

    def __init__(self, url: str | None = None) -> None:
        self.url = client_url(url)
        self._broker: Broker | None = None  # under Trio
        self._stack: AsyncExitStack | None = None
        self._portal: _Portal | None = None  # under asyncio
        self._state = "new"

    def __repr__(self) -> str:
        return f"guild.AsyncClient({display_url(self.url)!r})"

    async def __aenter__(self) -> AsyncClient:
        """Open the broker.

        Raises:
            BrokerUnavailable: the broker cannot be reached.
            BrokerClosed: the client was opened before (a client opens once).
        """
        if self._state != "new":
            raise BrokerClosed(f"{self!r} was opened before; make a new client")
        self._state = "opening"
        library = sniffio.current_async_library()
        if library == "trio":
            stack = AsyncExitStack()
            self._broker = await stack.enter_async_context(open_broker(self.url))
            self._stack = stack
        elif library == "asyncio":
            portal = _Portal(self.url)
            try:
                await asyncio.wrap_future(portal.start())
            except BaseException:
                await asyncio.wrap_future(portal.stop())
                portal.close()  # the thread has ended: the join returns at once
                raise
            self._portal = portal
        else:
            raise RuntimeError(f"guild.AsyncClient runs under trio or asyncio, not {library}")
        self._state = "open"
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the broker (idempotent); later calls raise :class:`guild.BrokerClosed`."""
        self._state = "closed"
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()
        if self._portal is not None:
            await asyncio.wrap_future(self._portal.stop())
            self._portal.close()  # the thread has ended: the join returns at once

    async def _call(self, operation: Operation[T]) -> T:
        if self._state != "open":
            raise BrokerClosed(
                f"{self!r} is not open: use `async with guild.AsyncClient(url) as client`"
                if self._state == "new"
                else f"{self!r} is closed"
            )
        if self._portal is not None:
            return await asyncio.wrap_future(self._portal.submit(operation))
        assert self._broker is not None
        return await operation(self._broker)

    async def enqueue(
        self,
        queue: str,
        payload: JSONValue = None,
        *,
        key: str | None = None,
        delay: float | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        trace_id: str | None = None,
        priority: Priority | int | str = Priority.NORMAL,
    ) -> Job:
        """As :meth:`guild.Client.enqueue`."""
        (job,) = await self.enqueue_many(
            queue,
            [payload],
            key=key,
            delay=delay,
            max_attempts=max_attempts,
            timeout=timeout,
            trace_id=trace_id,
            priority=priority,
        )
        return job

    async def enqueue_many(
        self,
        queue: str,
        payloads: Iterable[JSONValue],
        *,
        key: str | None = None,
        delay: float | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        trace_id: str | None = None,
        priority: Priority | int | str = Priority.NORMAL,
    ) -> list[Job]:
        """As :meth:`guild.Client.enqueue_many`."""
        items = list(payloads)
        options = enqueue_options(key, delay, max_attempts, timeout, trace_id, priority)
        return await self._call(lambda broker: enqueue_jobs(broker, queue, items, **options))

    async def enqueue_and_wait(
        self,
        queue: str,
        payload: JSONValue = None,
        *,
        wait: float,
        key: str | None = None,
        delay: float | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        trace_id: str | None = None,
        priority: Priority | int | str = Priority.NORMAL,
    ) -> Result | None:
        """As :meth:`guild.Client.enqueue_and_wait`."""
        options = enqueue_options(key, delay, max_attempts, timeout, trace_id, priority)
        return await self._call(
            lambda broker: enqueue_one_and_wait(broker, queue, payload, wait, **options)
        )

    async def result(self, job: Job | str, *, wait: float = 0.0) -> Result | None:
        """As :meth:`guild.Client.result`."""
        job_id = _ids(job)[0]
        return await self._call(lambda broker: job_result(broker, job_id, wait))

    async def status(self, job: Job | str) -> JobStatus:
        """As :meth:`guild.Client.status`."""
        job_id = _ids(job)[0]
        return await self._call(lambda broker: job_status(broker, job_id))

    async def info(self, job: Job | str) -> JobInfo:
        """As :meth:`guild.Client.info`."""
        job_id = _ids(job)[0]
        return await self._call(lambda broker: job_info(broker, job_id))

    async def cancel(self, jobs: str | Job | Iterable[str | Job]) -> list[str]:
        """As :meth:`guild.Client.cancel`."""
        job_ids = _ids(jobs)
        return await self._call(lambda broker: cancel_jobs(broker, job_ids))


# Reprs, tracebacks and pickles name guild.X (see guild._exports).
publish(globals())
