"""A real redis-server that starts asking for a password under a running app.

What a server restarted with another password, or a rotated ACL, does to its
clients: every connection is dropped, and every new one is refused at its
``HELLO … AUTH``. That is waited out like any other outage (nothing crashes,
nothing is lost, the finished jobs' acks are kept), and a producer gets a
``BrokerUnavailable`` that says what is wrong, in words.
"""

from __future__ import annotations

import collections
import subprocess

import pytest
import trio

import guild
from tests._redis_server import RedisServer, redis_cli_binary, running_redis_server

from .._state_log import StateLog
from ..observability.helpers import eventually
from ._support import QUEUE, enqueue_batched, queue_stats, wait_for_done

SECRET = "rotated-secret"
# One restart allowed: a credentials error that crashed a worker (or any loop of
# the app) would spend it at once.
TIGHT = guild.SupervisorOptions(
    max_restarts=1, period=600.0, backoff=guild.Backoff(initial=0.05, maximum=0.05)
)


def _cli(port: int, *args: str, password: str | None = None) -> str:
    auth = ["-a", password] if password is not None else []
    done = subprocess.run(
        [redis_cli_binary(), "-p", str(port), "--no-auth-warning", *auth, *args],
        capture_output=True,
        check=True,
        timeout=10,
    )
    return done.stdout.decode().strip()


async def test_a_password_set_under_a_running_app_is_waited_out() -> None:
    log = StateLog()
    app = guild.Guild("credentials", instruments=[log], supervision=TIGHT)
    runs: collections.Counter[int] = collections.Counter()
    started = 0
    finish = trio.Event()

    # A lease far longer than the test: a dropped ack would show as a job that
    # never finishes, a crash as a job run twice.
    @app.worker(QUEUE, concurrency=4, lease=120.0, timeout=None)
    async def work(job: guild.Job) -> object:
        nonlocal started
        runs[job.payload] += 1
        started += 1
        if job.payload < 4:
            await finish.wait()
        return job.payload * 2

    with running_redis_server() as server, trio.fail_after(60):
        async with guild.open_broker(server.url) as direct:
            first = await enqueue_batched(direct, [0, 1, 2, 3])
            async with app.open(server.url):
                await eventually(lambda: started == 4)
                await _set_password(server, SECRET, current=None)
                # Every connection is cut, as by a restart: new ones must authenticate.
                _cli(server.port, "CLIENT", "KILL", "TYPE", "normal", password=SECRET)
                finish.set()  # the four finish now: their acks must wait
                # First the cut connection, then the refused new ones.
                await eventually(lambda: "password" in (app.workers()[QUEUE].broker_error or ""))
                error = app.workers()[QUEUE].broker_error
                assert error is not None and error.startswith("BrokerUnavailable: "), error
                assert "asks for a password and the broker URL gives none" in error, error
                with pytest.raises(guild.BrokerUnavailable, match="asks for a password"):
                    await direct.enqueue([guild.Job(queue=QUEUE, payload=-1)])
                # Long enough for every loop of the app (the rollout recorder, the
                # workflow sweep) to have met the refusal a few times.
                await trio.sleep(2.0)
                assert app.workers()[QUEUE].held == 4, "acks were dropped"
                await _set_password(server, "", current=SECRET)
                later = await enqueue_batched(direct, list(range(4, 24)))
                await wait_for_done(direct, 24)
            stats = await queue_stats(direct)
            assert (stats.done, stats.ready, stats.in_flight, stats.dead) == (24, 0, 0, 0)
            for job in first + later:
                result = await direct.get_result(job.id)
                assert result is not None and result.value == job.payload * 2
    assert runs == collections.Counter(range(24)), "a job ran twice or never"
    assert log.count("crashed") == 0, log.errors()
    assert log.count("gave_up") == 0


async def _set_password(server: RedisServer, password: str, *, current: str | None) -> None:
    await trio.to_thread.run_sync(
        lambda: _cli(server.port, "CONFIG", "SET", "requirepass", password, password=current)
    )
