"""A job's stored record damaged behind the broker's back is read back as a
``guild.BrokerError`` naming the job and the part that could not be read, never
a bare ``ValueError``/``KeyError`` from deep inside; other jobs read as before.

The damage is done with the backend's own tools (plain ``sqlite3``, raw Redis
commands over a socket), as a hand edit or another program would.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

import guild
from guild import Job
from guild._codec import encode_result
from guild.brokers.redis import RedisBroker
from tests._redis_server import RedisServer, redis_command, running_redis_server


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with running_redis_server() as server:
        yield server


async def _finished(broker: guild.Broker) -> tuple[str, str]:
    """Two done jobs (ids): the first is damaged by the test, the second is not."""
    jobs = await broker.enqueue([Job(queue="q", payload=n) for n in range(2)])
    claimed = await broker.claim("q", consumer="c", limit=2, lease=30)
    await broker.ack([(d, encode_result(7)) for d in claimed])
    return jobs[0].id, jobs[1].id


@pytest.mark.parametrize(
    ("stored", "says"),
    [
        ("{not json", "its stored result cannot be read (JSONDecodeError"),
        ('{"job_id": "x"}', "its stored result cannot be read (KeyError: 'queue')"),
        (
            '{"job_id": "x", "queue": "q", "status": "bogus", "attempts": 1, "finished_at": 1}',
            "its stored result cannot be read (ValueError: 'bogus' is not a valid JobStatus)",
        ),
    ],
)
async def test_a_damaged_redis_result(redis_server: RedisServer, stored: str, says: str) -> None:
    with trio.fail_after(20):
        async with guild.open_broker(redis_server.url) as broker:
            assert isinstance(broker, RedisBroker)
            damaged, intact = await _finished(broker)
            assert (
                redis_command(redis_server, "SET", f"guild:result:{damaged}", stored) == b"+OK\r\n"
            )
            for read in (broker.get_result(damaged), broker.get_results([damaged])):
                with pytest.raises(guild.BrokerError) as refused:
                    await read
                assert str(refused.value).startswith(f"job {damaged}: {says}")
            result = await broker.get_result(intact)
            assert result is not None and result.value == 7


async def test_a_damaged_redis_job_hash(redis_server: RedisServer) -> None:
    with trio.fail_after(20):
        async with guild.open_broker(redis_server.url) as broker:
            (job,) = await broker.enqueue([Job(queue="q", payload=1)])
            assert redis_command(
                redis_server, "HSET", f"guild:job:{job.id}", "status", "bogus"
            ) == (b":0\r\n")
            with pytest.raises(guild.BrokerError) as refused:
                await broker.job_info(job.id)
            assert str(refused.value) == (
                f"job {job.id}: its stored hash cannot be read"
                " (ValueError: 'bogus' is not a valid JobStatus)"
            )


async def test_a_damaged_sqlite_row(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    with trio.fail_after(20):
        async with guild.open_broker(f"sqlite:///{path}") as broker:
            damaged, intact = await _finished(broker)
            with sqlite3.connect(path) as db:
                db.execute("UPDATE jobs SET result = '{oops' WHERE id = ?", (damaged,))
            db.close()
            with pytest.raises(guild.BrokerError) as refused:
                await broker.get_result(damaged)
            assert str(refused.value).startswith(
                f"job {damaged}: its stored result cannot be read (JSONDecodeError"
            )
            with pytest.raises(guild.BrokerError) as refused:
                await broker.job_info(damaged)
            assert str(refused.value).startswith(
                f"job {damaged}: its stored row cannot be read (JSONDecodeError"
            )
            result = await broker.get_result(intact)
            assert result is not None and result.value == 7


async def test_a_redis_job_whose_queue_field_is_no_queue_name(redis_server: RedisServer) -> None:
    # Claimed from its stream, it is dead-lettered with the reason; reading that
    # dead letter back built a Job on the damaged name and raised, so one such
    # job broke get_dead, list_dead and with them ``guild dlq list``.
    with trio.fail_after(20):
        broker = await RedisBroker.open(redis_server.url, prefix="damagedq")
        try:
            (good,) = await broker.enqueue([Job(queue="q", payload=1)])
            fields = {
                "id": "bad-queue",
                "queue": "other queue\n",
                "payload": "1",
                "attempt": "0",
                "max_attempts": "3",
                "enqueued_at": "1.0",
                "trace_id": "bad-queue",
            }
            assert await broker.store_raw_for_test("q", fields)
            claimed = await broker.claim("q", consumer="c", limit=5, lease=30)
            assert [d.job.id for d in claimed] == [good.id]
            letter = await broker.get_dead("bad-queue")
            assert letter is not None
            assert "field 'queue' is not a valid queue name" in letter.error
            assert letter.job.queue == "?"
            assert letter.job.enqueued_at == 1.0  # the readable fields are kept
            assert [d.job.id for d in await broker.list_dead()] == ["bad-queue"]
        finally:
            await broker.aclose()


async def test_a_dead_sqlite_row_whose_queue_is_no_queue_name(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    with trio.fail_after(20):
        async with guild.open_broker(f"sqlite:///{path}") as broker:
            jobs = await broker.enqueue([Job(queue="q", payload=n) for n in range(2)])
            (delivery,) = await broker.claim("q", consumer="c", limit=1, lease=30)
            await broker.dead(delivery, error="boom", traceback=None)
            with sqlite3.connect(path) as db:
                db.execute("UPDATE jobs SET queue = 'bad' || char(10) WHERE id = ?", (jobs[0].id,))
                db.execute("UPDATE jobs SET not_before = 'soon' WHERE id = ?", (jobs[1].id,))
            db.close()
            letter = await broker.get_dead(jobs[0].id)
            assert letter is not None and letter.error == "boom"
            assert (letter.job.queue, letter.job.attempt) == ("?", 1)
            assert [d.job.id for d in await broker.list_dead()] == [jobs[0].id]
            # A spoiled optional time reads as none (as on Redis), not as text that
            # ``guild job show`` then failed to format.
            info = await broker.job_info(jobs[1].id)
            assert info is not None and info.not_before is None


def _overwrite(server: RedisServer, key: str, kind: str) -> None:
    """Replace a job's hash key by a value of another type, as another program would."""
    assert redis_command(server, "DEL", key) == b":1\r\n"
    if kind == "set":
        assert redis_command(server, "SADD", key, "m") == b":1\r\n"
    else:
        assert redis_command(server, "SET", key, "x") == b"+OK\r\n"


@pytest.mark.parametrize("kind", ["set", "string"])
async def test_a_redis_job_key_of_another_type_is_dead_lettered(
    redis_server: RedisServer, kind: str
) -> None:
    # Every claim script failed with WRONGTYPE on it: the worker crashed, and
    # again on each restart, so the whole queue stalled on one job.
    prefix = f"wrongtype-{kind}"
    with trio.fail_after(20):
        broker = await RedisBroker.open(redis_server.url, prefix=prefix)
        try:
            jobs = await broker.enqueue([Job(queue="q", payload=n) for n in range(3)])
            bad = jobs[1].id
            _overwrite(redis_server, f"{prefix}:job:{bad}", kind)
            claimed = await broker.claim("q", consumer="c", limit=5, lease=30)
            assert [d.job.id for d in claimed] == [jobs[0].id, jobs[2].id]
            await broker.ack([(d, encode_result(d.job.payload)) for d in claimed])
            assert await broker.claim("q", consumer="c", limit=5, lease=30) == []
            letter = await broker.get_dead(bad)
            assert letter is not None and letter.job.queue == "q"
            assert letter.error == (
                f"job {bad}: its key {prefix}:job:{bad} holds a {kind}, not the job's hash:"
                " the job cannot be read"
            )
            assert [d.job.id for d in await broker.list_dead()] == [bad]
            stats = (await broker.stats(["q"]))["q"]
            assert (stats.ready, stats.in_flight, stats.done, stats.dead) == (0, 0, 2, 1)
            info = await broker.job_info(bad)
            assert info is not None and info.status is guild.JobStatus.DEAD
            result = await broker.get_result(bad)
            assert result is not None and result.status is guild.JobStatus.DEAD
        finally:
            await broker.aclose()


async def test_a_redis_job_key_replaced_while_in_flight(redis_server: RedisServer) -> None:
    # The worker's own calls on it (extend, ack) pass it by; the lease sweep of
    # the next claim dead-letters it, and the queue goes on.
    prefix = "wrongtype-held"
    with trio.fail_after(20):
        broker = await RedisBroker.open(redis_server.url, prefix=prefix)
        try:
            jobs = await broker.enqueue([Job(queue="q", payload=n) for n in range(2)])
            (held,) = await broker.claim("q", consumer="c", limit=1, lease=0)
            _overwrite(redis_server, f"{prefix}:job:{held.job.id}", "set")
            assert await broker.extend([held], lease=30) == []
            await broker.ack([(held, encode_result(1))])
            claimed = await broker.claim("q", consumer="c", limit=5, lease=30)
            assert [d.job.id for d in claimed] == [jobs[1].id]
            letter = await broker.get_dead(held.job.id)
            assert letter is not None and "holds a set, not the job's hash" in letter.error
            stats = (await broker.stats(["q"]))["q"]
            assert (stats.ready, stats.in_flight, stats.dead) == (0, 1, 1)
        finally:
            await broker.aclose()


async def test_a_redis_job_key_of_another_type_handed_to_an_idle_worker(
    redis_server: RedisServer,
) -> None:
    # A job made ready while a worker waits is claimed for it by the script that
    # made it ready (dispatch): a damaged key there failed the enqueue itself.
    prefix = "wrongtype-idle"
    with trio.fail_after(20):
        broker = await RedisBroker.open(redis_server.url, prefix=prefix)
        try:
            await broker.enqueue([Job(queue="q", payload=0)])
            (first,) = await broker.claim("q", consumer="c", limit=1, lease=30)
            await broker.ack([(first, encode_result(0))])
            taken: list[list[guild.Delivery]] = []
            async with trio.open_nursery() as nursery:

                async def claim() -> None:
                    taken.append(await broker.claim("q", consumer="c", limit=2, lease=30, wait=10))

                nursery.start_soon(claim)
                # Until the claim has registered the worker as idle.
                while redis_command(redis_server, "ZCARD", f"{prefix}:q:q:idlers") != b":1\r\n":  # noqa: ASYNC110
                    await trio.sleep(0.01)
                # A ready entry of a job whose key holds a set, ahead of a good job.
                redis_command(redis_server, "SADD", f"{prefix}:job:bad", "m")
                redis_command(redis_server, "XADD", f"{prefix}:q:q:ready", "*", "j", "bad")
                (good,) = await broker.enqueue([Job(queue="q", payload=1)])
            assert [d.job.id for d in taken[0]] == [good.id]
            letter = await broker.get_dead("bad")
            assert letter is not None and "holds a set, not the job's hash" in letter.error
        finally:
            await broker.aclose()


async def test_a_dead_letter_overwritten_later_does_not_hide_the_others(
    redis_server: RedisServer,
) -> None:
    # A record that was already dead when its key was overwritten: `guild dlq
    # list` read every letter with HGETALL, and the one WRONGTYPE ended it.
    prefix = "wrongtype-dead"
    with trio.fail_after(20):
        broker = await RedisBroker.open(redis_server.url, prefix=prefix)
        try:
            jobs = await broker.enqueue([Job(queue="q", payload=n) for n in range(3)])
            claimed = await broker.claim("q", consumer="c", limit=3, lease=30)
            for delivery in claimed:
                await broker.dead(delivery, error="no good")
            _overwrite(redis_server, f"{prefix}:job:{jobs[1].id}", "set")
            letters = {letter.job.id: letter for letter in await broker.list_dead()}
            assert sorted(letters) == sorted(job.id for job in jobs)
            assert letters[jobs[0].id].error == letters[jobs[2].id].error == "no good"
            assert letters[jobs[1].id].error == (
                f"its record {prefix}:job:{jobs[1].id} is not the job's hash"
            )
            assert letters[jobs[1].id].died_at > 0
        finally:
            await broker.aclose()
