"""The Redis key layout version: written as 1 when absent, any other refused."""

from __future__ import annotations

import coredis
import pytest
from hypothesis import given
from hypothesis import strategies as st

import guild
from guild.brokers._redis_layout import LAYOUT_VERSION, layout_version
from guild.brokers.redis import RedisBroker
from tests._redis_server import RedisServer

URL = "redis://example:6379/0"


def test_absent_is_version_1() -> None:
    assert layout_version(None, "guild", URL) == 1 == LAYOUT_VERSION


@given(st.integers(min_value=2, max_value=10**6))
def test_every_other_version_is_refused_with_both_numbers(found: int) -> None:
    with pytest.raises(guild.SchemaMismatch) as caught:
        layout_version(str(found), "guild", URL)
    assert (caught.value.found, caught.value.supported) == (found, LAYOUT_VERSION)
    assert str(caught.value).startswith(
        f"Redis {URL} (prefix 'guild') has schema version {found}, newer than version 1"
    )


@pytest.mark.parametrize("stored", ["0", "-3", "two", ""])
def test_a_value_that_is_no_version_is_an_error(stored: str) -> None:
    with pytest.raises(guild.BrokerError, match="not a layout version") as caught:
        layout_version(stored, "guild", URL)
    assert not isinstance(caught.value, guild.SchemaMismatch)


async def test_open_writes_version_1_and_refuses_a_newer_one(redis_server: RedisServer) -> None:
    broker = await RedisBroker.open(redis_server.url, prefix="layout-t")
    try:
        assert await broker.layout_version(redis_server.url) == 1
    finally:
        await broker.aclose()
    async with coredis.Redis.from_url(redis_server.url) as client:
        assert await client.get("layout-t:layout") == b"1"
        await client.set("layout-t:layout", "3")
    with pytest.raises(guild.SchemaMismatch, match="has schema version 3, newer than version 1"):
        await RedisBroker.open(redis_server.url, prefix="layout-t")
