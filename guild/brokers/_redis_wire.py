"""A lean Trio connection pool over hiredis's parser, for the Redis broker's hot calls.

coredis on Trio spends about 150-200 µs of client CPU per call (several
scheduler passes per command); a Trio socket and hiredis's C parser spend
25-35 µs (docs/brokers.md, "Why coredis"). The broker sends its per-job calls
(the scripts, a worker's inbox ``BLPOP``, a caller's result wait) through this
pool on a single Redis, and everything else through coredis.

It speaks RESP3 (``HELLO 3``), as coredis does, so replies decode the same:
bytes for strings, ``None`` for nil, ``True``/``False`` for a script's booleans.
A checkout sends one command or a pipeline of them and reads every reply
before the connection goes back; a connection that fails, or whose call is
cancelled with its reply unread, is closed and never reused. Failed
connections tend to fail together (a restarted Redis), so one failure also
closes the idle ones. A reply has a deadline (``reply_timeout``, plus the time a
blocking command may block): a hung Redis (stopped, swapping) is unavailable,
not a call that waits forever, and a shielded call still ends.

Only what ``from_url`` accepts is spoken here (TCP or a unix socket, a user and
password, a database number); any other URL (TLS, query options) returns
``None``, and the broker keeps coredis for everything.
"""

from __future__ import annotations

import hashlib
import os
import select
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import attrs
import hiredis
import trio

Command = Sequence[str | bytes | int | float]

_CONNECT_TIMEOUT = 5.0
_REPLY_TIMEOUT = 5.0
_RECEIVE = 65536


class ReplyError(Exception):
    """An error reply from Redis; its message starts with the error code."""


class WireConnectionError(ConnectionError):
    """The connection to Redis failed or closed (an ``OSError``, like a refused connect)."""


class _NotYet:
    """hiredis's "no whole reply buffered yet" marker: its default, ``False``, is
    also a RESP3 boolean reply."""


_NOT_YET = _NotYet()


@attrs.frozen
class WireAddress:
    """Where and as whom to connect: ``path`` for a unix socket, else ``host``/``port``."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None
    username: str | None = None
    password: str | None = None
    db: int = 0

    @classmethod
    def from_url(cls, url: str) -> WireAddress | None:
        """The address of a ``redis://`` or ``unix://`` URL, or ``None`` for a URL
        with anything this module does not speak (TLS, options in the query)."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return None
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        if parts.fragment or (username is not None and password is None):
            return None
        if parts.scheme == "redis":
            db_text = parts.path.strip("/") or "0"
            if parts.query or not db_text.isdigit():
                return None
            host = parts.hostname or "localhost"
            return cls(host, port or 6379, None, username, password, int(db_text))
        if parts.scheme == "unix" and parts.path:
            query = parse_qs(parts.query, keep_blank_values=True)
            if set(query) - {"db"} or len(query.get("db", ["0"])) != 1:
                return None
            db_text = query.get("db", ["0"])[0]
            if not db_text.isdigit():
                return None
            return cls(path=parts.path, username=username, password=password, db=int(db_text))
        return None


def _pack(commands: Sequence[Command]) -> bytes:
    # hiredis's stub types the command as a 1-tuple; it takes any length.
    pack: Any = hiredis.pack_command
    return b"".join([pack(tuple(command)) for command in commands])


class _Connection:
    """One socket and its parser; one checkout at a time."""

    __slots__ = ("_fd", "_poller", "_reader", "_stream")

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._fd = stream.socket.fileno()
        self._poller = select.poll()
        self._poller.register(self._fd, select.POLLIN)
        self._reader = hiredis.Reader(
            replyError=ReplyError, protocolError=WireConnectionError, notEnoughData=_NOT_YET
        )

    async def roundtrip(self, packed: bytes, count: int) -> list[Any]:
        """Send ``packed`` (``count`` commands) and read their ``count`` replies.

        On the (non-blocking) socket's descriptor, not through the stream: the
        stream yields to the scheduler after each send and tries a receive
        before it waits, a scheduling round each; here the one wait is for the
        reply, the call's one schedule point (a reply there at once gets one
        too). ``close`` wakes a wait on a closed socket (trio's ``notify_closing``).
        """
        fd = self._fd
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            view = memoryview(packed)
            while view:
                try:
                    view = view[os.write(fd, view) :]
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(fd)
            replies: list[Any] = []
            waited = False
            while len(replies) < count:
                reply = self._reader.gets()
                if reply is not _NOT_YET:
                    replies.append(reply)
                    continue
                try:
                    data = os.read(fd, _RECEIVE)
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(fd)
                    waited = True
                    continue
                if not data:
                    raise WireConnectionError("redis closed the connection")
                self._reader.feed(data)
            if not waited:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return replies
        except WireConnectionError:
            raise
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise WireConnectionError(f"connection lost: {exc}") from exc

    def stale(self) -> bool:
        """Whether Redis closed this idle connection (a restart, ``CLIENT KILL``,
        its idle timeout) or sent it something unasked: either way it is not
        used. Sending a call on it first would fail that call for nothing. One
        ``poll`` system call, well under a microsecond."""
        return bool(self._poller.poll(0))

    def close(self) -> None:
        # The socket's own close is synchronous: usable while cancelled, with no
        # checkpoint between the failure and the close.
        self._stream.socket.close()


class WirePool:
    """Connections to one Redis, opened on demand, at most ``limit`` at a time."""

    def __init__(
        self,
        address: WireAddress,
        *,
        limit: int = 64,
        reply_timeout: float = _REPLY_TIMEOUT,
        connect_timeout: float = _CONNECT_TIMEOUT,
    ) -> None:
        self._address = address
        self._reply_timeout = reply_timeout
        self._connect_timeout = connect_timeout
        self._idle: list[_Connection] = []
        self._slots = trio.Semaphore(limit)
        self._closed = False

    @classmethod
    def from_url(cls, url: str) -> WirePool | None:
        """A pool for ``url``, or ``None`` when the URL needs what only coredis speaks."""
        address = WireAddress.from_url(url)
        return None if address is None else cls(address)

    async def execute(self, *commands: Command, blocks: float = 0.0) -> list[Any]:
        """Each command's reply, in order, sent as one pipeline on one connection.
        An error reply is returned in its place as a ``ReplyError``, not raised.
        ``blocks``: the seconds a blocking command among them may wait, on top of
        the reply deadline.

        Raises:
            WireConnectionError: the connection failed or gave no reply in time
                (or the pool is closed).
            OSError: no connection could be opened.
        """
        packed = _pack(commands)
        # A free slot is taken without the semaphore's schedule point: the
        # roundtrip has one, and a scheduling round costs more than the call's
        # own Python.
        try:
            self._slots.acquire_nowait()
        except trio.WouldBlock:
            await self._slots.acquire()
        try:
            if self._is_closed():
                raise WireConnectionError("the connection pool is closed")
            connection = self._take_idle() or await self._connect()
            limit = self._reply_timeout + blocks
            try:
                with trio.move_on_after(limit) as waited:
                    replies = await connection.roundtrip(packed, len(commands))
            except BaseException as exc:
                connection.close()
                if isinstance(exc, WireConnectionError):
                    self._drop_idle()
                raise
            if waited.cancelled_caught:
                # Its reply may still come: the connection is never read again.
                connection.close()
                self._drop_idle()
                raise WireConnectionError(f"no reply from redis within {limit:g} s")
            if self._is_closed():
                connection.close()
            else:
                self._idle.append(connection)
            return replies
        finally:
            self._slots.release()

    async def call(self, *command: str | bytes | int | float, blocks: float = 0.0) -> Any:
        """One command's reply (``blocks``: as for ``execute``).

        Raises:
            ReplyError: Redis answered with an error.
            WireConnectionError: the connection failed.
        """
        (reply,) = await self.execute(command, blocks=blocks)
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    async def evalsha(
        self, sha: str, body: str, keys: Sequence[str], args: Sequence[str | bytes | int | float]
    ) -> Any:
        """Run a script by its SHA1; if Redis has not cached it (``NOSCRIPT``: a
        restart, a ``SCRIPT FLUSH``), run it by its body, which caches it again."""
        tail = (len(keys), *keys, *args)
        (reply,) = await self.execute(("EVALSHA", sha, *tail))
        if isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT"):
            # NOSCRIPT means nothing ran: sending it again cannot run it twice.
            (reply,) = await self.execute(("EVAL", body, *tail))
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    def _is_closed(self) -> bool:
        # A call, not the attribute: the pool may close while a call awaits.
        return self._closed

    def close(self) -> None:
        """Close the idle connections now and each busy one as its call returns."""
        self._closed = True
        self._drop_idle()

    def _take_idle(self) -> _Connection | None:
        if self._idle:
            connection = self._idle.pop()
            if not connection.stale():
                return connection
            # Closed connections come together (a restart): the others go too.
            connection.close()
            self._drop_idle()
        return None

    def _drop_idle(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    async def _connect(self) -> _Connection:
        address = self._address
        with trio.move_on_after(self._connect_timeout):
            if address.path is not None:
                stream = await trio.open_unix_socket(address.path)
            else:
                stream = await trio.open_tcp_stream(address.host, address.port)
            connection = _Connection(stream)
            hello: list[str | int] = ["HELLO", 3]
            if address.password is not None:
                hello += ["AUTH", address.username or "default", address.password]
            commands: list[Command] = [hello]
            if address.db:
                commands.append(("SELECT", address.db))
            packed = _pack(commands)
            try:
                replies = await connection.roundtrip(packed, len(commands))
            except BaseException:
                connection.close()
                raise
            for reply in replies:
                if isinstance(reply, ReplyError):
                    connection.close()
                    raise reply
            return connection
        where = address.path or f"{address.host}:{address.port}"
        raise WireConnectionError(f"connect to {where} timed out after {self._connect_timeout:g} s")


class WireScript:
    """A Lua script run on a :class:`WirePool` by its SHA1, called as a coredis
    ``Script`` is (``await script(keys=…, args=…)``)."""

    __slots__ = ("_body", "_pool", "_sha")

    def __init__(self, pool: WirePool, body: str) -> None:
        self._pool = pool
        self._body = body
        self._sha = hashlib.sha1(body.encode()).hexdigest()

    async def __call__(
        self, *, keys: Sequence[str], args: Sequence[str | bytes | int | float]
    ) -> Any:
        return await self._pool.evalsha(self._sha, self._body, keys, args)


class WireCommands:
    """The few coredis client methods the Redis broker's helpers call (the ledger,
    the workflow store, job inspection, canary shares), on a :class:`WirePool`.

    Named and answering as coredis's (RESP3 both), so a helper takes either:
    bytes for strings, ``None`` for nil, a dict for a hash, a float for a score.
    """

    __slots__ = ("_pool",)

    def __init__(self, pool: WirePool) -> None:
        self._pool = pool

    def register_script(self, body: str) -> WireScript:
        return WireScript(self._pool, body)

    async def get(self, key: str) -> Any:
        return await self._pool.call("GET", key)

    async def set(self, key: str, value: str | bytes, *, condition: str | None = None) -> bool:
        """``SET``, with ``condition`` ``"NX"`` or ``"XX"`` (coredis's ``PureToken``
        members equal their text, so the caller passes the text to either client);
        whether the value was set."""
        command: list[str | bytes] = ["SET", key, value]
        if condition is not None:
            command.append(condition)
        return await self._pool.call(*command) is not None

    async def xgroup_create(
        self, key: str, groupname: str, identifier: str, *, mkstream: bool = False
    ) -> bool:
        """``XGROUP CREATE``; a group made already fails with ``BUSYGROUP``, as
        coredis's call does (``map_redis_exceptions`` types it for either)."""
        command = ["XGROUP", "CREATE", key, groupname, identifier]
        if mkstream:
            command.append("MKSTREAM")
        await self._pool.call(*command)
        return True

    async def mget(self, keys: Sequence[str]) -> Any:
        return await self._pool.call("MGET", *keys)

    async def hgetall(self, key: str) -> Any:
        return await self._pool.call("HGETALL", key)

    async def hmget(self, key: str, fields: Sequence[str]) -> Any:
        return await self._pool.call("HMGET", key, *fields)

    async def smembers(self, key: str) -> Any:
        return await self._pool.call("SMEMBERS", key)

    async def zscore(self, key: str, member: str) -> Any:
        return await self._pool.call("ZSCORE", key, member)

    async def zrange(self, key: str, start: int, stop: int, *, withscores: bool = False) -> Any:
        """Members from ``start`` to ``stop``; with their scores: ``[member, score]`` pairs."""
        if withscores:
            return await self._pool.call("ZRANGE", key, start, stop, "WITHSCORES")
        return await self._pool.call("ZRANGE", key, start, stop)

    async def config_get(self, parameters: Sequence[str]) -> Any:
        return await self._pool.call("CONFIG", "GET", *parameters)
