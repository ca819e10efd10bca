"""Redis Cluster specifics: one prefix, one slot; URLs; unreachable clusters.

The conformance suite runs on a cluster too (``make_broker``'s ``redis-cluster``);
these tests check what it cannot see: where the keys land.
"""

from __future__ import annotations

import subprocess

import pytest
import trio

from guild import BrokerUnavailable, Job, JobStatus, UnknownBrokerURL, open_broker
from guild.brokers import _redis_keys as keys
from guild.brokers import encode_result
from guild.brokers.redis import RedisBroker, cluster_client_url
from tests._redis_server import RedisCluster, free_cluster_port, redis_cli_binary


def _cli(port: int, *args: str) -> str:
    done = subprocess.run(
        [redis_cli_binary(), "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return done.stdout


def _keys_by_node(cluster: RedisCluster, prefix: str) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for port in cluster.ports:
        names = _cli(port, "--scan", "--pattern", f"{prefix}*").split()
        if names:
            found[port] = names
    return found


def _slot(cluster: RedisCluster, key: str) -> int:
    return int(_cli(cluster.ports[0], "CLUSTER", "KEYSLOT", key))


async def _round_trip(broker: RedisBroker, queue: str = "q") -> None:
    [job] = await broker.enqueue([Job(queue=queue, payload={"n": 1})])
    [delivery] = await broker.claim(queue, consumer="c", limit=1, lease=30, wait=1)
    await broker.ack([(delivery, encode_result(42))])
    result = await broker.get_result(job.id, wait=1)
    assert result is not None
    assert (result.status, result.value) == (JobStatus.DONE, 42)


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("guild", "{guild}"),
        ("app:jobs", "{app:jobs}"),
        ("app:{jobs}", "app:{jobs}"),
        ("{x}", "{x}"),
        ("a{}b", "{a{}b}"),
        ("a{b", "{a{b}"),
    ],
)
def test_cluster_prefix(prefix: str, expected: str) -> None:
    tagged = keys.cluster_prefix(prefix)
    assert tagged == expected
    assert keys.hash_tag(tagged) is not None
    # Whatever follows the prefix, the tag stays the prefix's.
    assert keys.hash_tag(keys.job(tagged, "{other}")) == keys.hash_tag(tagged)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis+cluster://127.0.0.1:7000", "redis://127.0.0.1:7000"),
        ("redis+cluster://127.0.0.1:7000/0", "redis://127.0.0.1:7000/0"),
        ("REDIS+CLUSTER://h:1", "redis://h:1"),
        ("rediss+cluster://:pw@h:1?ssl_cert_reqs=none", "rediss://:pw@h:1?ssl_cert_reqs=none"),
        ("redis://127.0.0.1:6379/0", None),
        ("rediss://h:1", None),
    ],
)
def test_cluster_client_url(url: str, expected: str | None) -> None:
    assert cluster_client_url(url) == expected


def test_cluster_url_with_a_database_is_refused() -> None:
    with pytest.raises(UnknownBrokerURL, match="only database 0"):
        cluster_client_url("redis+cluster://127.0.0.1:7000/2")


async def test_open_broker_on_a_cluster(redis_cluster: RedisCluster) -> None:
    with trio.fail_after(20):
        async with open_broker(redis_cluster.url) as broker:
            assert isinstance(broker, RedisBroker)
            assert repr(broker) == "RedisBroker(prefix='{guild}')"
            await _round_trip(broker)


async def test_every_key_of_a_prefix_is_in_one_slot(redis_cluster: RedisCluster) -> None:
    prefix = "slotcheck"
    with trio.fail_after(20):
        broker = await RedisBroker.open(redis_cluster.url, prefix=prefix)
        try:
            await _round_trip(broker, "a")
            await _round_trip(broker, "b")
            [job] = await broker.enqueue([Job(queue="a", payload=1, key="idem")])
            [delivery] = await broker.claim("a", consumer="c", limit=1, lease=30)
            await broker.dead(delivery, error="boom")
            assert [d.job.id for d in await broker.list_dead()] == [job.id]
            assert (await broker.stats())["a"].dead == 1
        finally:
            await broker.aclose()
    found = _keys_by_node(redis_cluster, "{slotcheck}")
    assert len(found) == 1, found
    [names] = found.values()
    assert {_slot(redis_cluster, name) for name in names} == {_slot(redis_cluster, "{slotcheck}")}
    assert keys.ready("{slotcheck}", "a") in names
    assert keys.job("{slotcheck}", job.id) in names


async def test_prefixes_spread_over_the_nodes(redis_cluster: RedisCluster) -> None:
    """Scripts and blocking reads reach the node owning the prefix, not just the
    node the URL names."""
    prefixes = [f"spread{i}" for i in range(12)]
    with trio.fail_after(30):
        for prefix in prefixes:
            broker = await RedisBroker.open(redis_cluster.url, prefix=prefix)
            try:
                await _round_trip(broker)
            finally:
                await broker.aclose()
    owners: set[int] = set()
    for prefix in prefixes:
        found = _keys_by_node(redis_cluster, "{" + prefix + "}")
        assert len(found) == 1, (prefix, found)
        owners |= found.keys()
    assert owners == set(redis_cluster.ports)


async def test_blocked_claim_wakes_on_another_node(redis_cluster: RedisCluster) -> None:
    # Find a prefix whose slot the URL's node does not own.
    first = redis_cluster.ports[0]
    prefix = next(
        p for p in (f"far{i}" for i in range(100)) if _owner(redis_cluster, "{" + p + "}") != first
    )
    with trio.fail_after(20):
        broker = await RedisBroker.open(redis_cluster.url, prefix=prefix)
        try:
            got: list[str] = []

            async def consumer() -> None:
                deliveries = await broker.claim("q", consumer="c", limit=1, lease=30, wait=10)
                got.extend(d.job.id for d in deliveries)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(consumer)
                await trio.sleep(0.2)
                [job] = await broker.enqueue([Job(queue="q", payload="x")])
            assert got == [job.id]
        finally:
            await broker.aclose()


def _owner(cluster: RedisCluster, key: str) -> int:
    slot = _slot(cluster, key)
    for line in _cli(cluster.ports[0], "CLUSTER", "NODES").splitlines():
        fields = line.split()
        port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
        for span in fields[8:]:
            low, _, high = span.partition("-")
            if low.isdigit() and int(low) <= slot <= int(high or low):
                return port
    raise AssertionError(f"no node owns slot {slot}")


async def test_unreachable_cluster() -> None:
    with trio.fail_after(20), pytest.raises(BrokerUnavailable):
        async with open_broker(f"redis+cluster://127.0.0.1:{free_cluster_port()}"):
            pass
