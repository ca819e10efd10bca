"""The ResultWorker's channel limiters are bounded: idle ones are dropped, least
recently used first, but never one in use or not yet fresh (a hold-off pending,
a burst not recharged), and on Redis a dropped limiter's hold-off still holds.

Local limiters run in virtual time: rate 1/s with burst 1 makes a limiter fresh
one second after its admission, so which limiters are alive after each step is
written out from that."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import guild
from guild.brokers import RedisBroker
from guild_workers.result import SlackSettings, _ChannelLimits
from tests._poll import until
from tests._redis_server import running_redis_server


def _settings(max_idle: int) -> SlackSettings:
    return SlackSettings(api_url=None, rate=1.0, period=1.0, burst=1, max_idle_channels=max_idle)


def _alive(limits: _ChannelLimits, names: list[str]) -> set[str]:
    return {name for name in names if limits.limiter(name) is not None}


async def _post(limits: _ChannelLimits, channel: str, broker: guild.Broker) -> None:
    async with limits.using(channel, broker) as limiter, limiter:
        pass


class TestLocal:
    async def test_idle_limiters_past_the_bound_are_dropped_oldest_first(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker = guild.MemoryBroker()
        names = [f"c{i}" for i in range(11)]
        async with trio.open_nursery() as nursery:
            limits = _ChannelLimits(_settings(3), nursery)
            for name in names[:10]:
                await _post(limits, name, broker)
            # Each was admitted just now: none is fresh, so none may go yet.
            assert len(limits) == 10
            await trio.sleep(1.0)
            await _post(limits, "c10", broker)
            assert _alive(limits, names) == {"c8", "c9", "c10"}

            # One new channel a second, a thousand times: never more than three kept.
            for i in range(1000):
                await trio.sleep(1.0)
                await _post(limits, f"n{i}", broker)
                assert len(limits) == 3
            assert _alive(limits, ["n997", "n998", "n999"]) == {"n997", "n998", "n999"}

    async def test_a_limiter_in_use_or_held_off_is_kept(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker = guild.MemoryBroker()
        names = ["busy", "held", "plain", "late", "last"]
        release = trio.Event()
        async with trio.open_nursery() as nursery:
            limits = _ChannelLimits(_settings(0), nursery)

            async def hold_busy(task_status: trio.TaskStatus[None]) -> None:
                async with limits.using("busy", broker):
                    task_status.started()
                    await release.wait()

            await nursery.start(hold_busy)
            async with limits.using("held", broker) as limiter:
                await limiter.hold_off(30.0)  # a 429's Retry-After: nobody posts till t=30
            await trio.sleep(2.0)
            await _post(limits, "plain", broker)
            # "held" is the oldest idle one and still held off: it stops the trim.
            assert _alive(limits, names) == {"busy", "held", "plain"}

            await trio.sleep(29.0)  # t=31: the hold is over, "plain" recharged
            await _post(limits, "late", broker)
            assert _alive(limits, names) == {"busy", "late"}
            release.set()
            await trio.testing.wait_all_tasks_blocked()
            # "late" (admitted at t=31) is not fresh until t=32: it stops the trim.
            assert _alive(limits, names) == {"busy", "late"}
            await trio.sleep(2.0)
            await _post(limits, "last", broker)
            assert _alive(limits, names) == {"last"}

    async def test_a_channel_dropped_and_made_again_keeps_its_rate(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker = guild.MemoryBroker()
        admitted: list[float] = []
        async with trio.open_nursery() as nursery:
            limits = _ChannelLimits(_settings(0), nursery)
            for _ in range(3):
                await _post(limits, "a", broker)
                admitted.append(trio.current_time())
                await _post(limits, "b", broker)
        # 1/s on "a" whatever was dropped between its posts.
        assert admitted == [0.0, 1.0, 2.0]

    def test_max_idle_channels_must_be_a_count(self) -> None:
        with pytest.raises(ValueError, match="max_idle_channels must be an int >= 0, got -1"):
            _settings(-1)
        with pytest.raises(ValueError, match=r"max_idle_channels must be an int >= 0, got 1\.5"):
            SlackSettings(max_idle_channels=1.5)  # type: ignore[arg-type]


class TestRedis:
    async def test_dropped_limiters_end_their_task_and_keep_their_hold_off(self) -> None:
        with running_redis_server() as server, trio.fail_after(30):
            broker = await RedisBroker.open(server.url)
            try:
                async with trio.open_nursery() as nursery:
                    limits = _ChannelLimits(_settings(1), nursery)
                    async with limits.using("held", broker) as limiter:
                        await limiter.hold_off(1.5)
                    held_at = trio.current_time()
                    for name in ["a", "b", "c"]:
                        await _post(limits, name, broker)
                    assert _alive(limits, ["held", "a", "b", "c"]) == {"c"}
                    # One keeper task a limiter alive: the dropped ones' have ended.
                    await until(lambda: len(nursery.child_tasks) == 1, 0.01)
                    # Made again, "held" still waits out the hold kept in Redis.
                    await _post(limits, "held", broker)
                    assert trio.current_time() - held_at >= 1.5 - 0.05
                    nursery.cancel_scope.cancel()
            finally:
                await broker.aclose()
