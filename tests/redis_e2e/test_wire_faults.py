"""Broker faults on the lean Redis connections (``_redis_wire``), with real servers:
a redis-server killed and restarted, stopped and continued, refusing clients,
forgetting scripts, asking for a password, and on another database or a unix
socket. Every app here opens the broker from a ``redis://`` URL, so its per-job
calls go through the lean pool (checked by ``_lean``)."""

from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio

import guild
from guild._codec import encode_result
from guild.brokers._redis_errors import map_redis_exceptions
from guild.brokers._redis_wire import WireAddress, WireConnectionError, WirePool
from guild.brokers.redis import RedisBroker
from tests._poll import until
from tests._redis_server import (
    RedisServer,
    free_port,
    redis_cli,
    redis_server_binary,
    running_redis_server,
)

from .._state_log import StateLog
from ._support import QUEUE, enqueue_batched, queue_stats, results, wait_for_done

TOLERANT = guild.SupervisorOptions(max_restarts=30, period=5.0)


_cli = redis_cli


def _kill(server: RedisServer) -> None:
    """SIGKILL: no shutdown, no last write; only what the AOF holds survives."""
    assert server.process is not None
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()
    server.process = None


def _fsync_always(server: RedisServer) -> None:
    # Every write on disk before its reply: a SIGKILL loses nothing acknowledged.
    _cli(server.port, "CONFIG", "SET", "appendfsync", "always")


def _app(seen: collections.Counter[str], **worker: float) -> tuple[guild.Guild, StateLog]:
    log = StateLog()
    app = guild.Guild("wire-faults", instruments=[log], supervision=TOLERANT)
    options = {"concurrency": 8, "lease": 2.0, "timeout": 30.0, **worker}

    @app.worker(QUEUE, **options)  # type: ignore[arg-type]
    async def work(job: guild.Job) -> object:
        seen[job.id] += 1
        await trio.sleep(0.005)
        return job.payload

    return app, log


async def _lean(url: str) -> None:
    broker = await RedisBroker.open(url)
    try:
        assert broker._wire is not None, f"{url} does not take the lean path"
    finally:
        await broker.aclose()


async def _all_done(
    broker: guild.Broker, jobs: list[guild.Job], seen: collections.Counter[str]
) -> None:
    stats = await queue_stats(broker)
    assert (stats.done, stats.ready, stats.delayed, stats.in_flight, stats.dead) == (
        len(jobs),
        0,
        0,
        0,
        0,
    )
    assert [job.payload for job in jobs if seen[job.id] == 0] == []
    for job, result in zip(jobs, await results(broker, jobs), strict=True):
        assert result is not None and result.ok and result.value == job.payload, (job, result)


@pytest.fixture
def aof_server() -> Iterator[RedisServer]:
    with running_redis_server(appendonly=True) as server:
        _fsync_always(server)
        yield server


# --- a hung server and cancelled replies ----------------------------------------


async def test_a_stopped_server_is_unavailable_after_the_reply_deadline() -> None:
    with running_redis_server() as server:
        address = WireAddress.from_url(server.url)
        assert address is not None
        pool = WirePool(address, reply_timeout=0.5, connect_timeout=0.5)
        assert await pool.call("PING") == b"PONG"
        assert server.process is not None
        server.process.send_signal(signal.SIGSTOP)
        try:
            with trio.fail_after(5):
                with pytest.raises(WireConnectionError, match=r"no reply from redis within 0\.5 s"):
                    await pool.call("PING")
                # A new connection's handshake has a deadline too (the kernel accepts).
                with pytest.raises(WireConnectionError, match=r"timed out after 0\.5 s"):
                    await pool.call("PING")
        finally:
            server.process.send_signal(signal.SIGCONT)
        with trio.fail_after(5):
            assert await pool.call("PING") == b"PONG"
        server.process.send_signal(signal.SIGSTOP)
        try:
            # A blocking command gets its own wait on top of the deadline.
            with trio.fail_after(5):
                started = trio.current_time()
                with pytest.raises(WireConnectionError, match=r"within 1\.5 s"):
                    await pool.call("BLPOP", "inbox", "1", blocks=1.0)
                assert trio.current_time() - started >= 1.5
        finally:
            server.process.send_signal(signal.SIGCONT)
        with trio.fail_after(5):
            assert await pool.call("PING") == b"PONG"
        pool.close()


async def test_a_reply_left_unread_by_a_cancelled_call_goes_to_no_other_call() -> None:
    """One connection at most: were the cancelled GET's connection reused, the next
    caller would read the reply meant for it ("value-of-a" instead of "value-of-b")."""
    with running_redis_server() as server:
        address = WireAddress.from_url(server.url)
        assert address is not None
        pool = WirePool(address, limit=1)
        await pool.execute(("SET", "a", "value-of-a"), ("SET", "b", "value-of-b"))
        assert server.process is not None
        for _ in range(3):
            server.process.send_signal(signal.SIGSTOP)
            try:
                with trio.move_on_after(0.2) as cancelled:
                    await pool.call("GET", "a")
                assert cancelled.cancelled_caught
            finally:
                server.process.send_signal(signal.SIGCONT)
            # The server answers the GET now, on the connection the pool closed.
            await trio.sleep(0.1)
            with trio.fail_after(5):
                assert await pool.call("GET", "b") == b"value-of-b"
                assert await pool.execute(("GET", "b"), ("GET", "a")) == [
                    b"value-of-b",
                    b"value-of-a",
                ]
        pool.close()


async def test_an_idle_connection_redis_closed_is_not_used() -> None:
    """After a restart (or ``CLIENT KILL``) the first call does not fail on the
    connection that was idle meanwhile: the pool sees it closed and connects anew."""
    with running_redis_server() as server, trio.fail_after(20):
        address = WireAddress.from_url(server.url)
        assert address is not None
        pool = WirePool(address)
        await pool.execute(("SET", "k", "before"))
        await trio.to_thread.run_sync(_kill, server)
        await trio.to_thread.run_sync(server.start)
        assert await pool.execute(("SET", "k", "after"), ("GET", "k")) == [b"OK", b"after"]
        assert _cli(server.port, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes") == "1"
        assert await pool.call("GET", "k") == b"after"
        pool.close()


async def test_a_stopped_server_during_a_drain_finishes_every_job(aof_server: RedisServer) -> None:
    server = aof_server
    seen: collections.Counter[str] = collections.Counter()
    app, supervision = _app(seen)
    assert server.process is not None
    with trio.fail_after(60):
        await _lean(server.url)
        async with guild.open_broker(server.url) as direct:
            jobs = await enqueue_batched(direct, list(range(600)))
            async with app.open(server.url):
                await wait_for_done(direct, 150)
                server.process.send_signal(signal.SIGSTOP)
                await trio.sleep(2.0)
                server.process.send_signal(signal.SIGCONT)
                await wait_for_done(direct, len(jobs))
            await _all_done(direct, jobs, seen)
    assert supervision.count("gave_up") == 0


async def test_a_shutdown_while_the_server_is_stopped_is_bounded() -> None:
    """A hung Redis cannot hold a drain forever. The bound is not the grace (1 s)
    alone: each call already sent gets its reply deadline (5 s), and the worker's
    drain makes a few in turn (a shielded start, an ack and the handshake of a new
    connection, then its bounded hand-back and unregistration, 5 s each at most;
    the acks cost two attempts per batch): measured 10-20 s; the bound allows six
    such steps after the grace."""
    seen: collections.Counter[str] = collections.Counter()
    app, _ = _app(seen, graceful_timeout=1.0)
    with running_redis_server() as server:
        assert server.process is not None
        async with guild.open_broker(server.url) as direct:
            await enqueue_batched(direct, list(range(300)))
            try:
                with trio.fail_after(45) as bound:
                    async with app.open(server.url):
                        await wait_for_done(direct, 50)
                        server.process.send_signal(signal.SIGSTOP)
                        await trio.sleep(0.2)
                        bound.deadline = trio.current_time() + 1.0 + 6 * 5.0 + 3.0
            finally:
                server.process.send_signal(signal.SIGCONT)


# --- killed and restarted --------------------------------------------------------


async def test_a_killed_server_restarted_mid_drain_loses_no_job(aof_server: RedisServer) -> None:
    server = aof_server
    seen: collections.Counter[str] = collections.Counter()
    app, supervision = _app(seen)
    with trio.fail_after(60):
        await _lean(server.url)
        async with guild.open_broker(server.url) as direct:
            jobs = await enqueue_batched(direct, list(range(1500)))
            async with app.open(server.url):
                await wait_for_done(direct, 300)
                await trio.to_thread.run_sync(_kill, server)
                await trio.sleep(0.5)
                await trio.to_thread.run_sync(server.start)
                await trio.to_thread.run_sync(_fsync_always, server)
                await wait_for_done(direct, len(jobs))
            await _all_done(direct, jobs, seen)
    assert supervision.count("crashed") == 0, supervision.errors()
    assert supervision.count("gave_up") == 0


@pytest.mark.parametrize("appendonly", [True, False], ids=["aof", "no-persistence"])
async def test_an_idle_worker_takes_new_jobs_soon_after_a_restart(appendonly: bool) -> None:
    """With the AOF, Redis still holds the worker's registration after the restart;
    without persistence it lost it (and the group): either way the worker claims
    afresh and registers again."""
    seen: collections.Counter[str] = collections.Counter()
    app, supervision = _app(seen)
    with running_redis_server(appendonly=appendonly) as server, trio.fail_after(40):
        _fsync_always(server)
        async with guild.open_broker(server.url) as direct:
            async with app.open(server.url):
                first = await enqueue_batched(direct, [1])
                await wait_for_done(direct, 1)
                await trio.sleep(0.3)  # idle now: blocked in its inbox BLPOP
                assert "cmd=blpop" in _cli(server.port, "CLIENT", "LIST")
                await trio.to_thread.run_sync(_kill, server)
                await trio.sleep(0.3)
                await trio.to_thread.run_sync(server.start)
                await trio.to_thread.run_sync(_fsync_always, server)
                back = trio.current_time()
                later = await enqueue_batched(direct, [2, 3, 4])
                # Prompt: the worker's outage backoff is short, not a lease or more.
                with trio.fail_after(5):
                    await wait_for_done(direct, 4 if appendonly else 3)
                print(f"\nnew jobs done {trio.current_time() - back:.2f} s after the restart")
                # And it is registered again: it is blocked in BLPOP once more.
                with trio.fail_after(5):
                    await until(lambda: "cmd=blpop" in _cli(server.port, "CLIENT", "LIST"))
            await _all_done(direct, first + later if appendonly else later, seen)
    assert supervision.count("gave_up") == 0


async def test_a_waiting_get_result_is_unavailable_when_redis_dies_then_works() -> None:
    with running_redis_server() as server:
        async with guild.open_broker(server.url) as broker:
            (job,) = await broker.enqueue([guild.Job(queue=QUEUE, payload=1)])
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:

                    async def kill_when_blocked() -> None:
                        await until(lambda: "cmd=blpop" in _cli(server.port, "CLIENT", "LIST"))
                        await trio.to_thread.run_sync(_kill, server)

                    nursery.start_soon(kill_when_blocked)
                    with pytest.raises(guild.BrokerUnavailable, match="wait for result"):
                        await broker.get_result(job.id, wait=30.0)
                await trio.to_thread.run_sync(server.start)
                # The restart (no persistence) lost the job: no result, no hang.
                assert await broker.get_result("no-such-job", wait=0.2) is None


# --- refusals: clients, scripts, memory -----------------------------------------


async def _drain_with(
    server: RedisServer, fault: str, *, count: int = 800
) -> tuple[list[guild.Job], collections.Counter[str], StateLog, guild.QueueStats]:
    seen: collections.Counter[str] = collections.Counter()
    app, supervision = _app(seen)
    killed = 0
    async with guild.open_broker(server.url) as direct:
        jobs = await enqueue_batched(direct, list(range(count)))
        async with app.open(server.url):
            while (await queue_stats(direct)).done < count:
                if fault == "kill":
                    killed += int(
                        _cli(server.port, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
                    )
                elif fault == "flush":
                    _cli(server.port, "SCRIPT", "FLUSH")
                await trio.sleep(0.05)
        stats = await queue_stats(direct)
        await _all_done(direct, jobs, seen)
    assert fault != "kill" or killed > 0, "no connection was killed"
    assert supervision.count("crashed") == 0, supervision.errors()
    assert supervision.count("gave_up") == 0
    return jobs, seen, supervision, stats


async def test_clients_killed_again_and_again_during_a_drain() -> None:
    with running_redis_server() as server, trio.fail_after(60):
        await _drain_with(server, "kill")


async def test_scripts_flushed_again_and_again_during_a_drain() -> None:
    with running_redis_server() as server, trio.fail_after(60):
        await _drain_with(server, "flush")


async def test_a_full_redis_during_a_drain_is_waited_out() -> None:
    seen: collections.Counter[str] = collections.Counter()
    app, supervision = _app(seen)
    with running_redis_server() as server, trio.fail_after(60):
        _cli(server.port, "CONFIG", "SET", "maxmemory-policy", "noeviction")
        async with guild.open_broker(server.url) as direct:
            jobs = await enqueue_batched(direct, list(range(600)))
            async with app.open(server.url):
                await wait_for_done(direct, 100)
                _cli(server.port, "CONFIG", "SET", "maxmemory", "1")
                with pytest.raises(guild.BrokerUnavailable, match="OOM"):
                    await direct.enqueue([guild.Job(queue=QUEUE, payload=-1)])
                await trio.sleep(1.0)
                _cli(server.port, "CONFIG", "SET", "maxmemory", "0")
                await wait_for_done(direct, len(jobs))
            await _all_done(direct, jobs, seen)
    assert supervision.count("crashed") == 0, supervision.errors()


async def test_max_clients_reached_is_unavailable_then_waited_out() -> None:
    with running_redis_server() as server, trio.fail_after(30):
        _cli(server.port, "CONFIG", "SET", "maxclients", "2")
        holders = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(2)]
        try:
            # Redis answers "ERR max number of clients reached" and hangs up: which
            # of the two a client sees first is a race; both are an outage.
            with pytest.raises(guild.BrokerUnavailable):
                await RedisBroker.open(server.url)
            pool = WirePool.from_url(server.url)
            assert pool is not None
            with (
                pytest.raises(guild.BrokerUnavailable, match="claim"),
                map_redis_exceptions("claim"),
            ):
                await pool.call("PING")
            pool.close()
        finally:
            for holder in holders:
                holder.close()
        async with guild.open_broker(server.url) as broker:
            assert broker.__class__ is RedisBroker
            (job,) = await broker.enqueue([guild.Job(queue=QUEUE, payload=1)])
            taken = await broker.claim(QUEUE, consumer="c", limit=1, lease=5.0)
            assert [d.job.id for d in taken] == [job.id]


async def test_max_clients_reached_during_a_drain_is_waited_out() -> None:
    """Far fewer connections allowed than the app holds: its new connections are
    refused (and ones killed so that it must reconnect), until the limit is lifted."""
    seen: collections.Counter[str] = collections.Counter()
    app, supervision = _app(seen)
    with running_redis_server() as server, trio.fail_after(60):
        address = WireAddress.from_url(server.url)
        assert address is not None
        # Connected before the limit, so that it can lift the limit again.
        admin = WirePool(address, limit=1)
        assert await admin.call("PING") == b"PONG"
        async with guild.open_broker(server.url) as direct:
            jobs = await enqueue_batched(direct, list(range(600)))
            async with app.open(server.url):
                await wait_for_done(direct, 100)
                await admin.call("CONFIG", "SET", "maxclients", "2")
                for _ in range(5):
                    await admin.call("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
                    await trio.sleep(0.2)
                assert (await admin.call("CONFIG", "GET", "maxclients")) == {b"maxclients": b"2"}
                await admin.call("CONFIG", "SET", "maxclients", "10000")
                await wait_for_done(direct, len(jobs))
            await _all_done(direct, jobs, seen)
        admin.close()
    assert supervision.count("crashed") == 0, supervision.errors()
    assert supervision.count("gave_up") == 0


# --- who and where: passwords, ACL users, databases, unix sockets ------------------


@contextmanager
def _own_server(*args: str) -> Iterator[tuple[int, Path]]:
    with tempfile.TemporaryDirectory(prefix="guild-redis-") as directory:
        port = free_port()
        argv = [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--dir", directory, "--logfile", "redis.log", *args]
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    assert process.poll() is None and time.monotonic() < deadline
                    time.sleep(0.02)
            yield port, Path(directory)
        finally:
            process.terminate()
            process.wait(timeout=10)


SECRET = "p@ss:w/rd%"
SECRET_IN_URL = "p%40ss%3Aw%2Frd%25"


async def _round_trip(url: str) -> None:
    # RedisBroker.open, not open_broker: open_broker's URL check takes no unix://.
    broker = await RedisBroker.open(url)
    try:
        assert broker._wire is not None, f"{url} does not take the lean path"
        (job,) = await broker.enqueue([guild.Job(queue=QUEUE, payload="x")])
        (delivery,) = await broker.claim(QUEUE, consumer="c", limit=1, lease=5.0)
        await broker.ack([(delivery, encode_result("ok"))])
        result = await broker.get_result(job.id, wait=1.0)
        assert result is not None and result.value == "ok"
    finally:
        await broker.aclose()


async def test_a_password_with_special_characters_and_a_database() -> None:
    with _own_server("--requirepass", SECRET) as (port, _), trio.fail_after(20):
        url = f"redis://:{SECRET_IN_URL}@127.0.0.1:{port}/3"
        await _round_trip(url)
        # Everything landed in database 3, nothing in 0.
        assert _cli(port, "-n", "0", "DBSIZE", password=SECRET) == "0"
        assert int(_cli(port, "-n", "3", "DBSIZE", password=SECRET)) > 0
        wrong = f"redis://:not-{SECRET_IN_URL}@127.0.0.1:{port}/3"
        with pytest.raises(guild.BrokerError) as error:
            await RedisBroker.open(wrong)
        message = str(error.value)
        assert "WRONGPASS" in message or "invalid username-password" in message, message
        assert SECRET not in message and SECRET_IN_URL not in message, message
        assert "not-" not in message, message
        pool = WirePool.from_url(wrong)
        assert pool is not None
        with (
            pytest.raises(guild.BrokerError, match="invalid username-password") as error,
            map_redis_exceptions("claim"),
        ):
            await pool.call("PING")
        # Waited out by a running worker, like any server that will not serve it
        # now (tests/redis_e2e/test_credentials.py), and said in words.
        assert isinstance(error.value, guild.BrokerUnavailable)
        assert "refused the user and password of the broker URL" in str(error.value)
        assert SECRET not in str(error.value) and "not-" not in str(error.value)
        pool.close()


async def test_an_acl_user() -> None:
    with _own_server() as (port, _), trio.fail_after(20):
        _cli(port, "ACL", "SETUSER", "ann", "on", f">{SECRET}", "~*", "&*", "+@all")
        url = f"redis://ann:{SECRET_IN_URL}@127.0.0.1:{port}/0"
        await _round_trip(url)
        pool = WirePool.from_url(url)
        assert pool is not None
        assert await pool.call("ACL", "WHOAMI") == b"ann"
        pool.close()
        wrong = f"redis://ann:{SECRET_IN_URL}x@127.0.0.1:{port}/0"
        with pytest.raises(guild.BrokerError, match="invalid username-password") as error:
            await RedisBroker.open(wrong)
        assert SECRET_IN_URL not in str(error.value) and SECRET not in str(error.value)


async def test_a_unix_socket() -> None:
    with tempfile.TemporaryDirectory(prefix="guild-sock-") as sockets:
        path = os.path.join(sockets, "redis.sock")
        with _own_server("--unixsocket", path) as (port, _), trio.fail_after(20):
            url = f"unix://{path}?db=2"
            await _round_trip(url)
            assert int(_cli(port, "-n", "2", "DBSIZE")) > 0
