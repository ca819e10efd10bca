"""One payload no broker can store, in a batch of a thousand: the whole call is
refused (nothing stored) with a ``PayloadEncodeError`` naming that payload's index,
through every producer (``Guild.enqueue_many``, ``Client``, ``AsyncClient``) and
on every broker. Before, the error said only ``payload is float('nan')``: which of
the thousand was left to the caller to find.
"""

from __future__ import annotations

import pytest
import trio

import guild
from guild import PayloadEncodeError
from guild._job import JSONValue

BAD: list[tuple[JSONValue, str]] = [
    (float("nan"), "payloads[437] is float('nan'); JSON has no NaN or Infinity"),
    ({"when": {1, 2}}, "payloads[437]['when'] is a set, which JSON cannot encode"),
    ("a\udcffb", "payloads[437] holds the lone surrogate '\\udcff' at index 1"),
]


def _batch(bad: JSONValue) -> list[JSONValue]:
    payloads: list[JSONValue] = list(range(1000))
    payloads[437] = bad
    return payloads


def _check(refused: PayloadEncodeError, says: str) -> None:
    assert str(refused).startswith(says), str(refused)
    assert refused.index == 437
    assert refused.path.startswith("payloads[437]")


@pytest.mark.parametrize(("bad", "says"), BAD)
async def test_guild_enqueue_many(url: str, bad: JSONValue, says: str) -> None:
    app = guild.Guild("t")
    with trio.fail_after(20):
        async with guild.open_broker(url) as broker:
            with pytest.raises(PayloadEncodeError) as refused:
                await app.enqueue_many("q", _batch(bad), broker=broker)
            _check(refused.value, says)
            assert (await broker.stats(["q"]))["q"].ready == 0
            # One payload alone keeps the plain path.
            with pytest.raises(PayloadEncodeError) as alone:
                await app.enqueue("q", bad, broker=broker)
            assert alone.value.index is None and alone.value.path.startswith("payload")
            assert str(alone.value).startswith(says.replace("payloads[437]", "payload"))


@pytest.mark.parametrize(("bad", "says"), BAD)
def test_client_enqueue_many(url: str, bad: JSONValue, says: str) -> None:
    with guild.Client(url) as client:
        with pytest.raises(PayloadEncodeError) as refused:
            client.enqueue_many("q", _batch(bad))
        _check(refused.value, says)

    async def stored() -> int:
        async with guild.open_broker(url) as broker:
            return (await broker.stats(["q"]))["q"].ready

    assert trio.run(stored) == 0


async def test_memory_broker_names_the_index_too() -> None:
    broker = guild.MemoryBroker()
    jobs = [guild.Job(queue="q", payload=p) for p in _batch(b"bytes")]
    with pytest.raises(PayloadEncodeError) as refused:
        await broker.enqueue(jobs)
    _check(refused.value, "payloads[437] is bytes, which JSON cannot encode")
    assert await broker.stats(["q"]) == {"q": guild.QueueStats(queue="q")}
