"""A real redis-server that starts asking for a password under a running app.

What a server restarted with another password, or a rotated ACL, does to its
clients: every connection is dropped, and every new one is refused at its
``HELLO … AUTH``. That is waited out like any other outage (nothing crashes,
nothing is lost, the finished jobs' acks are kept), and a producer gets a
``BrokerUnavailable`` that says what is wrong, in words.
"""

from __future__ import annotations

import pytest
import trio

import guild
from tests._redis_server import RedisServer, redis_cli, running_redis_server

from ..observability.helpers import eventually
from ._support import QUEUE, FourHeld, check_doubled, enqueue_batched, wait_for_done

SECRET = "rotated-secret"


_cli = redis_cli


async def test_a_password_set_under_a_running_app_is_waited_out() -> None:
    held = FourHeld("credentials")
    app, finish = held.app, held.finish

    with running_redis_server() as server, trio.fail_after(60):
        async with guild.open_broker(server.url) as direct:
            first = await enqueue_batched(direct, [0, 1, 2, 3])
            async with app.open(server.url):
                await eventually(lambda: held.started == 4)
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
            await check_doubled(direct, first + later)
    held.check_clean(24)


async def _set_password(server: RedisServer, password: str, *, current: str | None) -> None:
    await trio.to_thread.run_sync(
        lambda: _cli(server.port, "CONFIG", "SET", "requirepass", password, password=current)
    )
