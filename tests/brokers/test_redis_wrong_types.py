"""A key under guild's prefix that another program wrote with another type (a
string where a queue's stream is) stays one queue's problem: ``stats`` counts the
other queues and says which key of which queue it could not read; an enqueue, a
claim, a worker's start on that queue fail naming the key and what it holds.

The keys are overwritten with raw Redis commands over a socket, as another
program would; the expected texts and counts are written out here.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio

import guild
from guild import Job, QueueStats
from guild.brokers._redis_errors import WrongTypeError
from tests._redis_server import RedisServer, redis_command, running_redis_server
from tests.cli.conftest import run_guild

HINT = "(another program's key under guild's prefix?)"
READY_IS_A_STRING = f"the key guild:q:bad:ready holds a string, not a stream {HINT}"


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    # One server a test: each overwrites keys under the default prefix.
    with running_redis_server() as server:
        yield server


async def _two_queues(broker: guild.Broker, server: RedisServer) -> None:
    """``good``: 3 ready, 1 delayed, 1 done; ``bad``: 2 jobs, then its stream
    replaced by a string."""
    await broker.enqueue([Job(queue="good", payload=n) for n in range(4)])
    await broker.enqueue([Job(queue="good", payload=9, not_before=broker.now() + 3600)])
    (taken,) = await broker.claim("good", consumer="c", limit=1, lease=30)
    await broker.ack([(taken, b"1")])
    await broker.enqueue([Job(queue="bad", payload=n) for n in range(2)])
    assert redis_command(server, "DEL", "guild:q:bad:ready") == b":1\r\n"
    assert redis_command(server, "SET", "guild:q:bad:ready", "junk") == b"+OK\r\n"


GOOD = QueueStats(queue="good", ready=3, delayed=1, in_flight=0, done=1, dead=0, cancelled=0)
BAD = QueueStats(queue="bad", broken=READY_IS_A_STRING)


async def test_stats_counts_the_other_queues_and_names_the_broken_one(
    redis_server: RedisServer,
) -> None:
    with trio.fail_after(20):
        async with guild.open_broker(redis_server.url) as broker:
            await _two_queues(broker, redis_server)
            assert await broker.stats() == {"good": GOOD, "bad": BAD}
            assert await broker.stats(["bad", "good"]) == {"bad": BAD, "good": GOOD}
            # A zset of the queue's, made a hash: named with its own type.
            assert redis_command(redis_server, "HSET", "guild:q:good:dead", "f", "v") == b":1\r\n"
            assert await broker.stats(["good"]) == {
                "good": QueueStats(
                    queue="good",
                    broken=f"the key guild:q:good:dead holds a hash, not a zset {HINT}",
                )
            }


@pytest.mark.parametrize(
    ("key", "says"),
    [
        ("guild:queues", f"the key guild:queues holds a string, not a set {HINT}"),
        ("guild:done", f"the key guild:done holds a string, not a hash {HINT}"),
    ],
)
async def test_stats_fails_naming_a_shared_key_of_another_type(
    redis_server: RedisServer, key: str, says: str
) -> None:
    with trio.fail_after(20):
        async with guild.open_broker(redis_server.url) as broker:
            await broker.enqueue([Job(queue="good", payload=1)])
            # guild:done exists once a job is done; guild:queues is written over.
            assert redis_command(redis_server, "SET", key, "banana") == b"+OK\r\n"
            with pytest.raises(WrongTypeError) as refused:
                await broker.stats()
            assert str(refused.value) == f"redis: stats: {says}"


async def test_enqueue_and_claim_on_the_broken_queue_name_the_key(
    redis_server: RedisServer,
) -> None:
    with trio.fail_after(20):
        async with guild.open_broker(redis_server.url) as broker:
            # This broker makes the group of 'bad' before its key is written over.
            assert await broker.claim("bad", consumer="c", limit=0, lease=30) == []
            await _two_queues(broker, redis_server)
            with pytest.raises(WrongTypeError) as refused:
                await broker.enqueue([Job(queue="good", payload=5), Job(queue="bad", payload=1)])
            assert str(refused.value) == f"redis: enqueue to 'bad': {READY_IS_A_STRING}"
            # The group is made: the claim script meets the key.
            with pytest.raises(WrongTypeError) as refused:
                await broker.claim("bad", consumer="c", limit=1, lease=30)
            assert str(refused.value) == f"redis: claim from 'bad': {READY_IS_A_STRING}"
            (other,) = await broker.enqueue([Job(queue="good", payload=6)])
            assert other.queue == "good"
        # A new process's broker makes the group first.
        async with guild.open_broker(redis_server.url) as fresh:
            with pytest.raises(WrongTypeError) as refused:
                await fresh.claim("bad", consumer="c", limit=1, lease=30)
            assert str(refused.value) == f"redis: create the group of 'bad': {READY_IS_A_STRING}"


async def test_a_worker_on_the_broken_queue_crashes_naming_the_key(
    redis_server: RedisServer,
) -> None:
    async with guild.open_broker(redis_server.url) as broker:
        await _two_queues(broker, redis_server)
    app = guild.Guild(
        "wrong-type",
        supervision=guild.SupervisorOptions(
            max_restarts=1, period=60.0, backoff=guild.Backoff(initial=0.01, maximum=0.01)
        ),
    )

    @app.worker("bad")
    async def handle(job: Job) -> None:
        raise AssertionError("no job of 'bad' can be claimed")

    with trio.fail_after(30), pytest.raises(guild.GaveUp) as gave_up:
        await app.run(redis_server.url)
    assert READY_IS_A_STRING in gave_up.value.last_error
    assert "create the group of 'bad'" in gave_up.value.last_error


async def test_the_cli_prints_the_broken_queue_in_one_line_and_exits_1(
    redis_server: RedisServer,
) -> None:
    async with guild.open_broker(redis_server.url) as broker:
        await _two_queues(broker, redis_server)
    shown = await trio.to_thread.run_sync(lambda: run_guild("stats", "--broker", redis_server.url))
    assert shown.returncode == 1, shown.stderr
    assert shown.stdout.splitlines() == [
        "queue  ready  delayed  in_flight  done  dead  cancelled",
        f"bad        -        -          -     -     -          -  broken: {READY_IS_A_STRING}",
        "good       3        1          0     1     0          0",
    ]
    as_json = await trio.to_thread.run_sync(
        lambda: run_guild("stats", "--json", "--broker", redis_server.url)
    )
    assert as_json.returncode == 1, as_json.stderr
    assert as_json.stdout == (
        '{"bad": {"broken": "' + READY_IS_A_STRING + '", "cancelled": 0, "dead": 0,'
        ' "delayed": 0, "done": 0, "in_flight": 0, "queue": "bad", "ready": 0},'
        ' "good": {"broken": null, "cancelled": 0, "dead": 0, "delayed": 1, "done": 1,'
        ' "in_flight": 0, "queue": "good", "ready": 3}}\n'
    )
