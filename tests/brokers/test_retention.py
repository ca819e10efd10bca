"""Retention (guild.Retention): what each broker frees, and when.

The memory broker is checked under MockClock; SQLite and Redis on the real
clock with retentions of a second or two, polled for (never a blind sleep).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

import guild
from guild import Job, JobStatus, Retention
from guild.brokers import MemoryBroker, encode_result, open_broker
from guild.brokers._memory_prune import Expiries
from guild.brokers._sqlite_purge import BATCH
from guild.brokers._url import url_retention, without_retention
from guild.brokers.redis import RedisBroker
from guild.brokers.sqlite import SqliteBroker
from tests._poll import until
from tests._redis_server import RedisServer, running_redis_server


async def _finish(broker: guild.Broker, queue: str, count: int, *, dead: int = 0) -> list[str]:
    """Enqueue ``count`` jobs, ack all but the last ``dead``, dead-letter those."""
    jobs = await broker.enqueue([Job(queue=queue, payload={"n": i}) for i in range(count)])
    held = await broker.claim(queue, consumer="c", limit=count, lease=600)
    assert len(held) == count
    await broker.ack([(d, encode_result(d.job.payload)) for d in held[: count - dead]])
    for delivery in held[count - dead :]:
        await broker.dead(delivery, error="boom")
    return [j.id for j in jobs]


class TestRetentionValues:
    def test_defaults(self) -> None:
        kept = Retention()
        assert (kept.results, kept.done, kept.dead, kept.keep_payload) == (
            86_400.0,
            86_400.0,
            None,
            False,
        )

    @pytest.mark.parametrize(
        "fields",
        [{"results": 0}, {"done": -1}, {"dead": float("inf")}, {"results": True}, {"done": "1"}],
    )
    def test_bad_durations_are_refused_by_name(self, fields: dict[str, object]) -> None:
        (name,) = fields
        with pytest.raises(ValueError, match=f"Retention.{name} must be"):
            Retention(**fields)  # type: ignore[arg-type]

    def test_a_record_outlives_its_result(self) -> None:
        assert Retention(results=100, done=10).record == 100
        assert Retention(results=10, done=100).record == 100

    def test_sweep_every(self) -> None:
        assert Retention().sweep_every == 60
        assert Retention(results=2, done=2).sweep_every == 0.5
        assert Retention(results=100, done=100, dead=8).sweep_every == 2

    def test_url_options(self) -> None:
        url = "sqlite:x.db?result_ttl=60&done_ttl=120&dead_ttl=604800&keep_payload=true"
        assert url_retention(url) == Retention(
            results=60, done=120, dead=604_800, keep_payload=True
        )
        assert url_retention("redis://h:1/0?dead_ttl=none").dead is None
        base = Retention(results=5, done=5, dead=7)
        assert url_retention("memory://?done_ttl=9", base) == Retention(results=5, done=9, dead=7)

    @pytest.mark.parametrize(
        "query", ["result_ttl=0", "done_ttl=abc", "dead_ttl=-5", "keep_payload=maybe"]
    )
    def test_bad_url_options_name_the_option(self, query: str) -> None:
        with pytest.raises(guild.UnknownBrokerURL, match=query.split("=")[0]):
            guild.brokers._url.check_broker_url(f"sqlite:x.db?{query}")

    def test_redis_client_never_sees_retention_options(self) -> None:
        url = "redis://h:1/0?result_ttl=60&protocol_version=3&keep_payload=1"
        assert without_retention(url) == "redis://h:1/0?protocol_version=3"
        assert without_retention("redis://h:1/0?dead_ttl=9") == "redis://h:1/0"


@given(
    st.lists(
        st.tuples(st.integers(0, 50), st.sampled_from("abcde"), st.integers(0, 3)), max_size=40
    ),
    st.lists(st.integers(0, 60), max_size=10),
)
def test_expiries_pop_each_due_entry_once_soonest_first(
    adds: list[tuple[int, str, int]], nows: list[int]
) -> None:
    heap = Expiries()
    # Each add gets its own id (the letter plus its index), so that the time of
    # every popped entry is known and the order can be checked.
    at_of: dict[str, int] = {}
    for index, (at, letter, version) in enumerate(adds):
        heap.add(float(at), f"{letter}{index}", version)
        at_of[f"{letter}{index}"] = at
    popped: list[tuple[str, int]] = []
    previous = -1
    for now in sorted(nows):
        batch = list(heap.due_jobs(float(now)))
        # Exactly the entries that fell due since the last look, each once.
        expected = [(f"{c}{i}", v) for i, (a, c, v) in enumerate(adds) if previous < a <= now]
        assert sorted(batch) == sorted(expected)
        times = [at_of[job_id] for job_id, _ in batch]
        assert times == sorted(times)
        popped += batch
        previous = now
    last = max(nows, default=-1)
    assert len(heap) == len(adds) - len([a for a, _, _ in adds if a <= last])


def test_expiries_in_order_and_out_of_order_merge_soonest_first() -> None:
    heap = Expiries()
    heap.add(10.0, "a", 1)
    heap.add(20.0, "b", 1)
    heap.add(15.0, "c", 1)  # earlier than the last: kept apart, merged when popped
    heap.add(20.0, "d", 2)
    heap.add(math.inf, "e", 1)  # kept until purged: never stored
    heap.add(5.0, "f", 3)
    assert len(heap) == 5
    assert list(heap.due_jobs(12.0)) == [("f", 3), ("a", 1)]
    assert list(heap.due_jobs(12.0)) == []
    assert list(heap.due_jobs(100.0)) == [("c", 1), ("b", 1), ("d", 2)]
    assert len(heap) == 0


class TestMemoryBroker:
    async def test_results_records_and_dead_letters_go_on_time(self) -> None:
        clock = trio.testing.MockClock()
        kept = Retention(results=10, done=20, dead=30)
        broker = MemoryBroker(clock=clock.current_time, retention=kept)
        ids = await _finish(broker, "q", 3, dead=1)
        done, dead = ids[:2], ids[2]
        clock.jump(9.9)
        assert await broker.get_result(done[0]) is not None
        clock.jump(0.2)  # 10.1: results gone, records kept
        assert await broker.get_result(done[0]) is None
        info = await broker.job_info(done[0])
        assert info is not None and info.status is JobStatus.DONE
        clock.jump(10)  # 20.1: done records gone
        await broker.claim("q", consumer="c", limit=1, lease=1)
        assert await broker.job_info(done[0]) is None
        assert [d.job.id for d in await broker.list_dead("q")] == [dead]
        clock.jump(10)  # 30.1: the dead letter too
        await broker.claim("q", consumer="c", limit=1, lease=1)
        assert await broker.list_dead("q") == []
        assert await broker.job_info(dead) is None
        assert len(broker._entries) == len(broker._results) == len(broker._dead) == 0
        assert len(broker._done) == 0

    async def test_dead_letters_stay_without_dead_retention(self) -> None:
        clock = trio.testing.MockClock()
        broker = MemoryBroker(clock=clock.current_time, retention=Retention(results=1, done=1))
        (dead,) = await _finish(broker, "q", 1, dead=1)
        clock.jump(10_000)
        await broker.claim("q", consumer="c", limit=1, lease=1)
        assert [d.job.id for d in await broker.list_dead("q")] == [dead]

    async def test_a_requeued_dead_job_is_not_freed_by_its_old_expiry(self) -> None:
        clock = trio.testing.MockClock()
        broker = MemoryBroker(clock=clock.current_time, retention=Retention(dead=5))
        (job_id,) = await _finish(broker, "q", 1, dead=1)
        assert await broker.requeue_dead([job_id]) == 1
        clock.jump(6)
        (again,) = await broker.claim("q", consumer="c", limit=1, lease=60)
        assert again.job.id == job_id

    async def test_memory_held_is_flat_under_a_steady_load(self) -> None:
        """50,000 jobs at 1,000 a (mock) second with 2 s retention: the broker never
        holds more than the jobs of the last few seconds."""
        clock = trio.testing.MockClock()
        broker = MemoryBroker(clock=clock.current_time, retention=Retention(results=2, done=2))
        most = 0
        for _ in range(50):
            await _finish(broker, "q", 1000)
            clock.jump(1.0)
            most = max(most, len(broker._entries), len(broker._results))
        assert most <= 3000
        assert (await broker.stats(["q"]))["q"].done == 50_000

    async def test_a_done_job_keeps_its_payload_only_when_asked(self) -> None:
        for keep, expected in ((False, None), (True, {"n": 0})):
            broker = MemoryBroker(retention=Retention(keep_payload=keep))
            jobs = await broker.enqueue([Job(queue="q", payload={"n": 0}, key="k")])
            (held,) = await broker.claim("q", consumer="c", limit=1, lease=60)
            await broker.ack([(held, encode_result(1))])
            # The holder of an idempotency key is the stored job, as it is now.
            (holder,) = await broker.enqueue([Job(queue="q", payload="other", key="k")])
            assert holder.id == jobs[0].id
            assert holder.payload == expected

    async def test_idempotency_keys_are_freed(self) -> None:
        clock = trio.testing.MockClock()
        broker = MemoryBroker(clock=clock.current_time, key_ttl=5)
        await broker.enqueue([Job(queue="q", key=f"k{i}") for i in range(100)])
        clock.jump(6)
        await broker.claim("q", consumer="c", limit=1, lease=1)
        assert broker._keys == {}


def _rows(path: Path, where: str = "1") -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute(f"SELECT COUNT(*) FROM jobs WHERE {where}").fetchone()[0])


async def _until(
    check: Callable[[], Awaitable[bool]], timeout: float = 20.0, every: float = 0.05
) -> None:
    """Poll ``check`` until it holds: expiry in another process (redis-server) or
    on the wall clock (SQLite) announces itself by no event."""
    with trio.fail_after(timeout):
        await until(check, every)


class TestSqliteBroker:
    async def test_claims_delete_expired_rows_a_batch_at_a_time(self, tmp_path: Path) -> None:
        path = tmp_path / "r.db"
        kept = Retention(results=0.5, done=0.5)
        async with open_broker(f"sqlite:{path}", retention=kept) as broker:
            count = 2 * BATCH + BATCH // 2
            ids = await _finish(broker, "q", count)
            assert _rows(path) == count

            async def expired() -> bool:
                return await broker.get_result(ids[-1]) is None

            await _until(expired)
            left = []
            for _ in range(4):
                await broker.claim("other", consumer="c", limit=1, lease=1)
                left.append(_rows(path))
            assert left == [count - BATCH, count - 2 * BATCH, 0, 0]

    async def test_done_payloads_are_dropped_unless_kept(self, tmp_path: Path) -> None:
        for keep, stored in ((False, "null"), (True, '{"n":0}')):
            path = tmp_path / f"p{keep}.db"
            async with open_broker(f"sqlite:{path}?keep_payload={keep}") as broker:
                await _finish(broker, "q", 1)
            with sqlite3.connect(path) as db:
                (payload,) = db.execute("SELECT payload FROM jobs").fetchone()
            assert payload.replace(" ", "") == stored

    async def test_dead_rows_go_after_dead_retention(self, tmp_path: Path) -> None:
        path = tmp_path / "d.db"
        async with open_broker(f"sqlite:{path}?dead_ttl=0.3") as broker:
            await _finish(broker, "q", 3, dead=3)
            assert isinstance(broker, SqliteBroker)

            async def gone() -> bool:
                await broker.purge_expired()
                return _rows(path, "status = 'dead'") == 0

            await _until(gone)
            assert await broker.list_dead("q") == []


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with running_redis_server() as server:
        yield server


async def _keys(broker: RedisBroker) -> list[str]:
    found = await (await broker.redis_client()).keys(f"{broker.prefix}:*")
    return sorted(k.decode() if isinstance(k, bytes) else k for k in found)


@pytest.fixture
async def redis_broker(redis: RedisServer) -> AsyncIterator[RedisBroker]:
    url = f"{redis.url}?result_ttl=2&done_ttl=2&dead_ttl=2"
    async with open_broker(url) as broker:
        assert isinstance(broker, RedisBroker)
        yield broker


class TestRedisBroker:
    async def test_keys_of_finished_jobs_are_gone_after_retention(
        self, redis_broker: RedisBroker
    ) -> None:
        """3,000 jobs (2,990 done, 10 dead) with 2 s retention: afterwards only the
        queue's own keys are left, none per job."""
        for _ in range(3):
            await _finish(redis_broker, "q", 1000, dead=10 if _ == 0 else 0)
        assert len([k for k in await _keys(redis_broker) if ":job:" in k]) == 3000

        async def only_queue_keys() -> bool:
            # A claim is what prunes dead letters (done jobs' keys expire alone).
            await redis_broker.claim("q", consumer="c", limit=1, lease=1)
            per_job = [k for k in await _keys(redis_broker) if ":job:" in k or ":result:" in k]
            return not per_job

        await _until(only_queue_keys, timeout=30, every=0.25)
        assert await redis_broker.list_dead("q") == []
        assert (await redis_broker.stats(["q"]))["q"].done == 2990

    async def test_a_done_payload_is_dropped_unless_kept(self, redis: RedisServer) -> None:
        for keep, stored in (("0", b"null"), ("1", b'{"n":0}')):
            async with open_broker(f"{redis.url}?keep_payload={keep}") as broker:
                assert isinstance(broker, RedisBroker)
                (job_id,) = await _finish(broker, f"p{keep}", 1)
                payload = await (await broker.redis_client()).hget(
                    f"{broker.prefix}:job:{job_id}", "payload"
                )
                assert payload.replace(b" ", b"") == stored

    async def test_a_result_is_not_answered_after_its_retention(self, redis: RedisServer) -> None:
        async with open_broker(f"{redis.url}?result_ttl=0.5&done_ttl=30") as broker:
            (job_id,) = await _finish(broker, "r", 1)
            assert await broker.get_result(job_id) is not None

            async def expired() -> bool:
                return await broker.get_result(job_id) is None

            await _until(expired)
            info = await broker.job_info(job_id)
            assert info is not None and info.status is JobStatus.DONE
