"""The broker conformance suite: the behaviour every broker must have.

``await check_broker(make_broker)`` runs every check; ``CHECKS`` maps each
check's name to its coroutine, so a test suite can run them one by one (guild's
own parametrises them over memory, SQLite and Redis). ``make_broker`` is a
zero-argument callable returning an async context manager that yields a fresh,
empty broker. Checks use the real clock with short leases, each under an
absolute time limit, so they run against any backend.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import trio

from .._errors import BrokerClosed
from .._job import Job, JobStatus
from ..brokers._protocol import Broker

MakeBroker = Callable[[], AbstractAsyncContextManager[Broker]]
Check = Callable[[MakeBroker], Awaitable[None]]
LEASE = 0.4
LIMIT = 20.0


def _jobs(queue: str, count: int, **fields: Any) -> list[Job]:
    return [Job(queue=queue, payload=i, **fields) for i in range(count)]


async def _claim_all(broker: Broker, queue: str, *, lease: float = 30.0) -> list[Any]:
    got = await broker.claim(queue, consumer="c", limit=1000, lease=lease)
    return [d.job.payload for d in got]


async def check_fifo_order(make_broker: MakeBroker) -> None:
    """Jobs are claimed in the order they were enqueued, in batches and one by one."""
    with trio.fail_after(LIMIT):
        async with make_broker() as broker:
            await broker.enqueue(_jobs("q", 10))
            for i in range(10, 15):
                await broker.enqueue([Job(queue="q", payload=i)])
            first = await broker.claim("q", consumer="c", limit=4, lease=30)
            rest = await broker.claim("q", consumer="c", limit=100, lease=30)
            assert [d.job.payload for d in first] == [0, 1, 2, 3]
            assert [d.job.payload for d in rest] == list(range(4, 15))


async def check_queues_isolated(make_broker: MakeBroker) -> None:
    """A claim on one queue never returns another queue's jobs."""
    with trio.fail_after(LIMIT):
        async with make_broker() as broker:
            await broker.enqueue(_jobs("a", 3) + _jobs("b", 2))
            assert await _claim_all(broker, "b") == [0, 1]
            assert await _claim_all(broker, "a") == [0, 1, 2]
            assert await _claim_all(broker, "c") == []


async def check_claim_wait(make_broker: MakeBroker) -> None:
    """An empty claim waits up to its bound, and wakes early for a concurrent enqueue."""
    with trio.fail_after(LIMIT):
        async with make_broker() as broker:
            start = trio.current_time()
            assert await broker.claim("q", consumer="c", limit=1, lease=30, wait=0.3) == []
            assert trio.current_time() - start >= 0.25
            got: list[Any] = []

            async def consumer() -> None:
                got.extend(await broker.claim("q", consumer="c", limit=5, lease=30, wait=10))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(consumer)
                await trio.sleep(0.2)
                began = trio.current_time()
                await broker.enqueue([Job(queue="q", payload="hello")])
            assert [d.job.payload for d in got] == ["hello"]
            assert trio.current_time() - began < 5


async def check_lease_expiry(make_broker: MakeBroker) -> None:
    """A job whose lease expires is claimable again, its attempt counted."""
    with trio.fail_after(LIMIT):
        async with make_broker() as broker:
            await broker.enqueue([Job(queue="q", payload="x")])
            (first,) = await broker.claim("q", consumer="a", limit=1, lease=LEASE)
            assert first.job.attempt == 1
            assert await broker.claim("q", consumer="b", limit=1, lease=LEASE) == []
            await trio.sleep(LEASE + 0.2)
            (second,) = await broker.claim("q", consumer="b", limit=1, lease=30, wait=2)
            assert second.job.id == first.job.id
            assert second.job.attempt == 2
            assert second.receipt != first.receipt


async def check_extend(make_broker: MakeBroker) -> None:
    """extend keeps a lease alive past its first expiry; a stale delivery is not renewed."""
    with trio.fail_after(LIMIT):
        async with make_broker() as broker:
            await broker.enqueue(_jobs("q", 2))
            held = await broker.claim("q", consumer="a", limit=2, lease=LEASE)
            for _ in range(3):
                await trio.sleep(LEASE / 2)
                held = await broker.extend(held, lease=LEASE)
                assert len(held) == 2
            assert await broker.claim("q", consumer="b", limit=2, lease=30) == []
            await trio.sleep(LEASE + 0.2)
            stolen = await broker.claim("q", consumer="b", limit=2, lease=30, wait=2)
            assert len(stolen) == 2
            assert await broker.extend(held, lease=30) == []


async def check_retry_at(make_broker: MakeBroker) -> None:
    """A retried job is not claimable before its time, and is after."""
    with trio.fail_after(LIMIT):
        async with make_broker() as broker:
            await broker.enqueue([Job(queue="q", payload=1)])
            (delivery,) = await broker.claim("q", consumer="c", limit=1, lease=30)
            await broker.retry(delivery, at=broker.now() + 0.5, error="ValueError: boom")
            assert await broker.claim("q", consumer="c", limit=1, lease=30) == []
            stats = (await broker.stats(["q"]))["q"]
            assert (stats.delayed, stats.in_flight) == (1, 0)
            (again,) = await broker.claim("q", consumer="c", limit=1, lease=30, wait=3)
            assert again.job.attempt == 2


async def check_poison_dead_letter(make_broker: MakeBroker) -> None:
    """A job whose lease keeps expiring goes to the dead letters after max_attempts."""
    with trio.fail_after(LIMIT):
        async with make_broker() as broker:
            (job,) = await broker.enqueue([Job(queue="q", payload=1, max_attempts=2)])
            for _ in range(2):
                assert len(await broker.claim("q", consumer="c", limit=1, lease=0.2, wait=2)) == 1
                await trio.sleep(0.35)
            assert await broker.claim("q", consumer="c", limit=1, lease=30, wait=0.5) == []
            letter = await broker.get_dead(job.id)
            assert letter is not None
            assert letter.error == "lease expired on attempt 2 of 2"
            result = await broker.get_result(job.id)
            assert result is not None and result.status is JobStatus.DEAD


async def check_dead_letters(make_broker: MakeBroker) -> None:
    """dead() keeps the reason; dead letters are listed, fetched and requeued."""
    with trio.fail_after(LIMIT):
        async with make_broker() as broker:
            await broker.enqueue(_jobs("a", 2) + _jobs("b", 1))
            for queue in ("a", "b"):
                for d in await broker.claim(queue, consumer="c", limit=10, lease=30):
                    await broker.dead(
                        d, error=f"ValueError: {queue}{d.job.payload}", traceback="tb"
                    )
            letters = await broker.list_dead()
            assert sorted(d.error for d in letters) == [
                "ValueError: a0",
                "ValueError: a1",
                "ValueError: b0",
            ]
            assert [d.job.queue for d in await broker.list_dead("b")] == ["b"]
            one = letters[0]
            fetched = await broker.get_dead(one.job.id)
            assert fetched is not None and fetched.traceback == "tb"
            assert await broker.requeue_dead([one.job.id]) == 1
            assert await broker.get_dead(one.job.id) is None
            assert await broker.requeue_dead(queue="b") == 1
            assert await broker.requeue_dead() == 1
            assert await broker.list_dead() == []
            back = await broker.claim("a", consumer="c", limit=10, lease=30)
            assert sorted(d.job.payload for d in back) == [0, 1]
            assert all(d.job.attempt == 1 for d in back)


async def check_idempotent_enqueue(make_broker: MakeBroker) -> None:
    """A second enqueue with the same key on the same queue stores nothing."""
    with trio.fail_after(LIMIT):
        async with make_broker() as broker:
            (first,) = await broker.enqueue([Job(queue="q", payload=1, key="k")])
            (second,) = await broker.enqueue([Job(queue="q", payload=2, key="k")])
            (other,) = await broker.enqueue([Job(queue="r", payload=3, key="k")])
            assert second.id == first.id and second.payload == 1
            assert other.id != first.id
            assert await _claim_all(broker, "q") == [1]
            assert await _claim_all(broker, "r") == [3]


async def check_delayed(make_broker: MakeBroker) -> None:
    """A job is not claimed before its not_before."""
    with trio.fail_after(LIMIT):
        async with make_broker() as broker:
            now = broker.now()
            await broker.enqueue([Job(queue="q", payload="later", not_before=now + 0.6)])
            await broker.enqueue([Job(queue="q", payload="now")])
            assert await _claim_all(broker, "q") == ["now"]
            assert (await broker.stats(["q"]))["q"].delayed == 1
            (late,) = await broker.claim("q", consumer="c", limit=1, lease=30, wait=5)
            assert late.job.payload == "later"
            assert broker.now() >= now + 0.55


async def check_results(make_broker: MakeBroker) -> None:
    """ack stores the value; get_result waits for an ack made meanwhile."""
    with trio.fail_after(LIMIT):
        async with make_broker() as broker:
            jobs = await broker.enqueue(_jobs("q", 2))
            d0, d1 = await broker.claim("q", consumer="c", limit=2, lease=30)
            await broker.ack([(d0, {"answer": [42, "x"]})])
            result = await broker.get_result(jobs[0].id)
            assert result is not None and result.ok and result.value == {"answer": [42, "x"]}
            assert result.attempts == 1
            assert await broker.get_result(jobs[1].id) is None
            found: list[Any] = []

            async def waiter() -> None:
                found.append(await broker.get_result(jobs[1].id, wait=10))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiter)
                await trio.sleep(0.2)
                await broker.ack([(d1, None)])
            assert found[0] is not None and found[0].status is JobStatus.DONE
            await broker.ack([(d1, "again")])  # acking a done job changes nothing
            again = await broker.get_result(jobs[1].id)
            assert again is not None and again.value is None


async def check_stats(make_broker: MakeBroker) -> None:
    """stats counts ready, delayed, in flight, done and dead per queue."""
    with trio.fail_after(LIMIT):
        async with make_broker() as broker:
            await broker.enqueue(_jobs("q", 5))
            await broker.enqueue([Job(queue="q", payload="d", not_before=broker.now() + 60)])
            d = await broker.claim("q", consumer="c", limit=3, lease=30)
            await broker.ack([(d[0], 1)])
            await broker.dead(d[1], error="E")
            stats = (await broker.stats())["q"]
            assert (stats.ready, stats.delayed, stats.in_flight, stats.done, stats.dead) == (
                2,
                1,
                1,
                1,
                1,
            )
            assert (await broker.stats(["nothing"]))["nothing"].ready == 0


async def check_release(make_broker: MakeBroker) -> None:
    """release hands a job back at once without counting the attempt."""
    with trio.fail_after(LIMIT):
        async with make_broker() as broker:
            await broker.enqueue([Job(queue="q", payload=1)])
            held = await broker.claim("q", consumer="c", limit=1, lease=30)
            await broker.release(held)
            (again,) = await broker.claim("q", consumer="c", limit=1, lease=30)
            assert again.job.attempt == 1


async def check_concurrent_consumers(make_broker: MakeBroker) -> None:
    """Consumers claiming at once never hold the same job; every job is delivered once."""
    with trio.fail_after(LIMIT * 2):
        async with make_broker() as broker:
            await broker.enqueue(_jobs("q", 200))
            seen: list[Any] = []

            async def consume(name: str) -> None:
                while True:
                    got = await broker.claim("q", consumer=name, limit=7, lease=30, wait=0.3)
                    if not got:
                        return
                    seen.extend(d.job.payload for d in got)
                    await broker.ack([(d, None) for d in got])

            async with trio.open_nursery() as nursery:
                for i in range(4):
                    nursery.start_soon(consume, f"c{i}")
            assert sorted(seen) == list(range(200))
            assert (await broker.stats(["q"]))["q"].done == 200


async def check_closed(make_broker: MakeBroker) -> None:
    """Using a closed broker raises BrokerClosed; closing twice is fine."""
    with trio.fail_after(LIMIT):
        async with make_broker() as broker:
            await broker.aclose()
            await broker.aclose()
            try:
                await broker.enqueue([Job(queue="q")])
            except BrokerClosed:
                return
            raise AssertionError("enqueue on a closed broker did not raise BrokerClosed")


async def check_payload_round_trip(make_broker: MakeBroker) -> None:
    """JSON payloads come back equal: nesting, unicode, numbers, null."""
    payloads = [None, True, 0, -1.5, "ünïcødé ✓", [1, [2, {"x": None}]], {"k": {"é": [1.25, "a"]}}]
    with trio.fail_after(LIMIT):
        async with make_broker() as broker:
            await broker.enqueue([Job(queue="q", payload=p) for p in payloads])
            assert await _claim_all(broker, "q") == payloads


async def check_large_batch(make_broker: MakeBroker) -> None:
    """A thousand jobs go in in one call and come out in order."""
    with trio.fail_after(LIMIT):
        async with make_broker() as broker:
            stored = await broker.enqueue(_jobs("q", 1000))
            assert len({j.id for j in stored}) == 1000
            assert await _claim_all(broker, "q") == list(range(1000))


CHECKS: dict[str, Check] = {
    name[len("check_") :]: fn
    for name, fn in sorted(globals().items())
    if name.startswith("check_") and name != "check_broker" and callable(fn)
}


async def check_broker(make_broker: MakeBroker) -> None:
    """Run every conformance check against the broker ``make_broker`` builds.

    Raises:
        AssertionError: the first check that failed, named in the message.
    """
    for name, check in CHECKS.items():
        try:
            await check(make_broker)
        except AssertionError as exc:
            raise AssertionError(f"broker check {name!r} failed: {exc}") from exc
