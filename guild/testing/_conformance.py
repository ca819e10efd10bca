"""The broker conformance suite: the behaviour every broker must have.

``await check_broker(make_broker)`` runs every check; ``CHECKS`` maps each
check's name to its coroutine, so a test suite can run them one by one (guild's
own parametrises them over memory, SQLite and Redis). ``make_broker`` is a
zero-argument callable returning an async context manager that yields a fresh,
empty broker. Checks use the real clock with short leases, each under an
absolute time limit, so they run against any backend.
"""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import trio

from .._client import enqueue_and_wait
from .._codec import encode_result
from .._errors import BrokerClosed, PayloadEncodeError
from .._job import Job, JobStatus, UndecodablePayload
from ..brokers._protocol import Broker, RawStorable
from . import (
    _cancel_checks,
    _jobinfo_checks,
    _ledger_checks,
    _priority_checks,
    _purge_checks,
    _workflow_checks,
)

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
                got = await broker.claim("q", consumer="c", limit=1, lease=0.2, wait=2)
                assert len(got) == 1
                # The second time it is interrupted: a claim no longer starts it.
                assert len(await broker.start(got)) == 1
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
            await broker.ack([(d0, encode_result({"answer": [42, "x"]}))])
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
                await broker.ack([(d1, encode_result(None))])
            assert found[0] is not None and found[0].status is JobStatus.DONE
            await broker.ack([(d1, encode_result("again"))])  # acking a done job changes nothing
            again = await broker.get_result(jobs[1].id)
            assert again is not None and again.value is None


async def check_enqueue_and_wait(make_broker: MakeBroker) -> None:
    """An enqueue that waits for its result (the one call of ``EnqueuesAndWaits``,
    else enqueue then get_result) answers the job as stored and its result, acked
    meanwhile; for a key another job holds, that job and its result; ``None``
    once the wait is over, the job still ready; a refused job at once."""
    with trio.fail_after(LIMIT):
        async with make_broker() as broker:

            async def double() -> None:
                (delivery,) = await broker.claim("q", consumer="c", limit=1, lease=30, wait=10)
                await broker.ack([(delivery, encode_result(delivery.job.payload * 2))])

            job = Job(queue="q", payload=21, key="k")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(double)
                stored, result = await enqueue_and_wait(broker, job, 10)
            assert stored.id == job.id and stored.payload == 21, stored
            assert result is not None and result.ok, result
            assert (result.job_id, result.value) == (job.id, 42), result
            held, again = await enqueue_and_wait(broker, Job(queue="q", payload=1, key="k"), 10)
            assert held.id == job.id, held
            assert again is not None and again.value == 42, again
            started = trio.current_time()
            lone, missing = await enqueue_and_wait(broker, Job(queue="idle", payload=0), 0.3)
            assert missing is None and trio.current_time() - started >= 0.25
            assert (await broker.stats(["idle"]))["idle"].ready == 1
            assert await broker.get_result(lone.id) is None
            refused: PayloadEncodeError | None = None
            started = trio.current_time()
            try:
                await enqueue_and_wait(broker, Job(queue="q", payload={"s": {1}}), 10)
            except PayloadEncodeError as exc:
                refused = exc
            assert refused is not None and trio.current_time() - started < 5
            assert (await broker.stats(["q"]))["q"].ready == 0


async def check_stats(make_broker: MakeBroker) -> None:
    """stats counts ready, delayed, in flight, done and dead per queue."""
    with trio.fail_after(LIMIT):
        async with make_broker() as broker:
            await broker.enqueue(_jobs("q", 5))
            await broker.enqueue([Job(queue="q", payload="d", not_before=broker.now() + 60)])
            d = await broker.claim("q", consumer="c", limit=3, lease=30)
            await broker.ack([(d[0], encode_result(1))])
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


async def check_prefetched_not_counted(make_broker: MakeBroker) -> None:
    """A claim starts only the first ``start`` jobs; an expired lease counts a started
    run (dead on the last attempt) and nothing for a prefetched one."""
    with trio.fail_after(LIMIT):
        async with make_broker() as broker:
            jobs = await broker.enqueue(_jobs("q", 3, max_attempts=1))
            got = await broker.claim("q", consumer="c", limit=3, lease=LEASE, start=1)
            assert [(d.job.payload, d.started, d.job.attempt) for d in got] == [
                (0, True, 1),
                (1, False, 1),
                (2, False, 1),
            ]
            await trio.sleep(LEASE + 0.2)
            again = await broker.claim("q", consumer="c", limit=3, lease=30, wait=2)
            assert [(d.job.payload, d.started, d.job.attempt) for d in again] == [
                (1, True, 1),
                (2, True, 1),
            ]
            letter = await broker.get_dead(jobs[0].id)
            assert letter is not None
            assert letter.error == "lease expired on attempt 1 of 1"


async def check_interrupted(make_broker: MakeBroker) -> None:
    """A started run whose lease expired marks its job interrupted: never started at
    claim, until a run of it finishes (a retry); an unstarted one's expiry marks nothing."""
    with trio.fail_after(LIMIT):
        async with make_broker() as broker:
            await broker.enqueue(_jobs("q", 2, max_attempts=3))
            await broker.claim("q", consumer="c", limit=2, lease=LEASE, start=1)
            await trio.sleep(LEASE + 0.2)
            got = await broker.claim("q", consumer="c", limit=2, lease=30, wait=2)
            assert [(d.job.payload, d.interrupted, d.started, d.job.attempt) for d in got] == [
                (0, True, False, 2),
                (1, False, True, 1),
            ]
            (again,) = await broker.start(got[:1])
            assert (again.interrupted, again.started, again.job.attempt) == (True, True, 2)
            await broker.retry(again, at=broker.now(), error="RuntimeError: boom")
            (last,) = await broker.claim("q", consumer="c", limit=2, lease=30, wait=2)
            assert (last.job.payload, last.interrupted, last.started, last.job.attempt) == (
                0,
                False,
                True,
                3,
            )


async def check_start(make_broker: MakeBroker) -> None:
    """start counts a prefetched run once; a started delivery's lease then counts it."""
    with trio.fail_after(LIMIT):
        async with make_broker() as broker:
            jobs = await broker.enqueue(_jobs("q", 2, max_attempts=1))
            d0, d1 = await broker.claim("q", consumer="c", limit=2, lease=LEASE, start=0)
            assert (d0.started, d1.started) == (False, False)
            (started,) = await broker.start([d0])
            assert (started.job.id, started.started, started.job.attempt) == (jobs[0].id, True, 1)
            assert started.receipt == d0.receipt
            (twice,) = await broker.start([started])
            assert twice.job.attempt == 1
            await trio.sleep(LEASE + 0.2)
            (back,) = await broker.claim("q", consumer="c", limit=2, lease=30, wait=2)
            assert (back.job.id, back.job.attempt) == (jobs[1].id, 1)
            letter = await broker.get_dead(jobs[0].id)
            assert letter is not None and letter.error == "lease expired on attempt 1 of 1"


async def check_start_lost(make_broker: MakeBroker) -> None:
    """start of a delivery whose lease was lost (expired, claimed again) starts nothing."""
    with trio.fail_after(LIMIT):
        async with make_broker() as broker:
            await broker.enqueue([Job(queue="q", payload=1)])
            (old,) = await broker.claim("q", consumer="a", limit=1, lease=LEASE, start=0)
            await trio.sleep(LEASE + 0.2)
            (new,) = await broker.claim("q", consumer="b", limit=1, lease=30, start=0, wait=2)
            assert new.job.attempt == 1
            assert await broker.start([old]) == []
            (started,) = await broker.start([new])
            assert started.job.attempt == 1


async def check_worker_max_attempts(make_broker: MakeBroker) -> None:
    """A job without max_attempts takes the claim's (its worker's) when its lease expires."""
    with trio.fail_after(LIMIT):
        async with make_broker() as broker:
            own, default = await broker.enqueue(
                [Job(queue="q", payload="own", max_attempts=2), Job(queue="q", payload="default")]
            )
            assert default.max_attempts is None
            got = await broker.claim("q", consumer="c", limit=2, lease=LEASE, max_attempts=1)
            assert [d.job.max_attempts for d in got] == [2, None]
            await trio.sleep(LEASE + 0.2)
            (back,) = await broker.claim("q", consumer="c", limit=2, lease=30, max_attempts=1)
            assert (back.job.id, back.job.attempt) == (own.id, 2)
            letter = await broker.get_dead(default.id)
            assert letter is not None and letter.error == "lease expired on attempt 1 of 1"
            assert letter.job.max_attempts is None


async def check_release_counts_nothing(make_broker: MakeBroker) -> None:
    """release gives back started and prefetched deliveries with their attempts as before."""
    with trio.fail_after(LIMIT):
        async with make_broker() as broker:
            await broker.enqueue(_jobs("q", 2))
            held = await broker.claim("q", consumer="c", limit=2, lease=30, start=1)
            await broker.release(held)
            again = await broker.claim("q", consumer="c", limit=2, lease=30, start=0)
            assert [(d.job.payload, d.job.attempt) for d in again] == [(0, 1), (1, 1)]
            started = await broker.start(again)
            await broker.release(started)
            last = await broker.claim("q", consumer="c", limit=2, lease=30)
            assert [(d.job.payload, d.job.attempt) for d in last] == [(0, 1), (1, 1)]


async def check_release_consumers(make_broker: MakeBroker) -> None:
    """release_consumers hands back every job held under a name prefix, and only those."""
    with trio.fail_after(LIMIT):
        async with make_broker() as broker:
            await broker.enqueue(_jobs("q", 3) + _jobs("r", 1))
            await broker.claim("q", consumer="h:1:w:a", limit=1, lease=30)
            await broker.claim("q", consumer="h:12:w:b", limit=1, lease=30)
            await broker.claim("q", consumer="h:1:w:c", limit=1, lease=30, start=0)
            await broker.claim("r", consumer="h:1:v:d", limit=1, lease=30)
            assert await broker.release_consumers("h:1:") == 3
            back = await broker.claim("q", consumer="e", limit=5, lease=30)
            assert [(d.job.payload, d.job.attempt) for d in back] == [(0, 1), (2, 1)]
            (other,) = await broker.claim("r", consumer="e", limit=5, lease=30)
            assert other.job.attempt == 1
            assert (await broker.stats(["q"]))["q"].in_flight == 3
            assert await broker.release_consumers("h:1:") == 0


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
                    await broker.ack([(d, encode_result(None)) for d in got])

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


async def check_unencodable_payload(make_broker: MakeBroker) -> None:
    """A payload JSON cannot encode is refused with PayloadEncodeError naming its place
    (in a call of several, its index too: ``payloads[1]['at']``); nothing of that
    enqueue call is stored."""
    bad: list[tuple[Any, str]] = [
        ({"at": datetime.datetime(2026, 1, 1)}, "payload['at'] is a datetime"),
        ([1.0, float("nan")], "payload[1] is float('nan')"),
        ({"x": [float("inf")]}, "payload['x'][0] is float('inf')"),
        ({"s": {1}}, "payload['s'] is a set"),
        (b"raw", "payload is bytes"),
        ("lone \udcff", "payload holds the lone surrogate"),
    ]
    with trio.fail_after(LIMIT):
        async with make_broker() as broker:
            for payload, message in bad:
                refused: PayloadEncodeError | None = None
                try:
                    await broker.enqueue(
                        [Job(queue="q", payload="fine"), Job(queue="q", payload=payload)]
                    )
                except PayloadEncodeError as exc:
                    refused = exc
                assert refused is not None, f"enqueue of {payload!r} was not refused"
                # The second of the call's two payloads: named by its index.
                indexed = message.replace("payload", "payloads[1]", 1)
                assert str(refused).startswith(indexed), f"{indexed!r}: got {refused}"
                assert refused.index == 1, f"{indexed!r}: index {refused.index!r}"
            assert await _claim_all(broker, "q") == []
            assert (await broker.stats(["q"]))["q"].ready == 0


class CheckSkipped(Exception):
    """A check that does not apply to this broker (it lacks an optional hook); says why."""


def _valid_fields(job_id: str, now: float) -> dict[str, str | bytes]:
    # A well-formed stored job, as text: each bad entry spoils one field of it.
    return {
        "id": job_id,
        "queue": "q",
        "payload": '"bad"',
        "attempt": "0",
        "max_attempts": "3",
        "enqueued_at": repr(now),
        "trace_id": job_id,
    }


# (what is wrong, the field the dead letter's reason must name, the change)
_GARBAGE: list[tuple[str, str, dict[str, str | bytes | None]]] = [
    ("non-UTF-8 text", "key", {"key": b"\xff\xfe-key"}),
    ("a text timeout", "timeout", {"timeout": "soon"}),
    ("a negative timeout", "timeout", {"timeout": "-1"}),
    ("a non-numeric enqueued_at", "enqueued_at", {"enqueued_at": "yesterday"}),
    ("a missing enqueued_at", "enqueued_at", {"enqueued_at": None}),
    ("a fractional attempt", "attempt", {"attempt": "2.5"}),
    ("a text max_attempts", "max_attempts", {"max_attempts": "many"}),
    ("a NaN not_before", "not_before", {"not_before": "nan"}),
]
# Payloads that are not JSON: claimed as UndecodablePayload, for the worker to dead-letter.
_BAD_PAYLOADS: list[tuple[str, str | bytes]] = [
    ("non-UTF-8 payload", b"\xff\xfe{}"),
    ("JSON nested 100,000 deep", "[" * 100_000 + "]" * 100_000),
]


async def check_bad_stored_entries(make_broker: MakeBroker) -> None:
    """A stored entry that is no valid job never stops a queue: claim dead-letters it
    with a reason naming the field, hands out every good job, and never raises.

    Needs the broker's ``store_raw_for_test`` hook (``guild.brokers.RawStorable``);
    skipped without it.
    """
    with trio.fail_after(LIMIT * 2):
        async with make_broker() as broker:
            if not isinstance(broker, RawStorable):
                raise CheckSkipped(
                    f"{type(broker).__name__} has no store_raw_for_test(queue, fields) hook"
                    " (guild.brokers.RawStorable), so garbage cannot be stored to test claim with"
                )
            good: list[str] = []
            bad: dict[str, tuple[str, str]] = {}
            undecodable: dict[str, str] = {}
            now = broker.now()
            for index, (what, field, change) in enumerate(_GARBAGE):
                (job,) = await broker.enqueue([Job(queue="q", payload=index)])
                good.append(job.id)
                job_id = f"bad-{index}"
                fields = {**_valid_fields(job_id, now), **change}
                stored = {k: v for k, v in fields.items() if v is not None}
                if await broker.store_raw_for_test("q", stored):
                    bad[job_id] = (what, field)
            for index, (what, payload) in enumerate(_BAD_PAYLOADS):
                job_id = f"undecodable-{index}"
                raw = {**_valid_fields(job_id, now), "payload": payload}
                assert await broker.store_raw_for_test("q", raw), what
                undecodable[job_id] = what
            (last,) = await broker.enqueue([Job(queue="q", payload="last")])
            good.append(last.id)

            claimed: dict[str, Any] = {}
            empty = 0
            while empty < 3:
                # A batch of only bad entries comes back empty: claim until the
                # queue stays empty, not until the first empty answer.
                got = await broker.claim("q", consumer="c", limit=3, lease=30, wait=0.05)
                empty = 0 if got else empty + 1
                for delivery in got:
                    assert delivery.job.id not in claimed, f"{delivery.job.id} claimed twice"
                    claimed[delivery.job.id] = delivery.job.payload
            assert sorted(claimed) == sorted([*good, *undecodable]), (
                f"claimed {sorted(claimed)}; expected the good jobs {good}"
                f" and the undecodable payloads {sorted(undecodable)}"
            )
            for job_id, what in undecodable.items():
                payload = claimed[job_id]
                assert isinstance(payload, UndecodablePayload), f"{what}: claimed as {payload!r}"
                assert "not valid JSON" in payload.reason, f"{what}: {payload.reason}"
            for job_id, (what, field) in bad.items():
                letter = await broker.get_dead(job_id)
                assert letter is not None, f"{what}: not in the dead letters"
                assert f"field {field!r}" in letter.error, f"{what}: reason {letter.error!r}"
                result = await broker.get_result(job_id)
                assert result is not None and result.status is JobStatus.DEAD, what
            listed = {letter.job.id for letter in await broker.list_dead("q")}
            assert listed == set(bad), f"dead letters {sorted(listed)}; expected {sorted(bad)}"


async def check_ledger_counts(make_broker: MakeBroker) -> None:
    """The Ledger's counts (optional protocol: skipped without it)."""
    try:
        await _ledger_checks.ledger_counts(make_broker)
    except _ledger_checks.LedgerMissing as missing:
        raise CheckSkipped(str(missing)) from None


async def check_ledger_marks(make_broker: MakeBroker) -> None:
    """The Ledger's marks (optional protocol: skipped without it)."""
    try:
        await _ledger_checks.ledger_marks(make_broker)
    except _ledger_checks.LedgerMissing as missing:
        raise CheckSkipped(str(missing)) from None


check_cancel_waiting = _cancel_checks.cancel_waiting
check_cancel_wakes_waiter = _cancel_checks.cancel_wakes_waiter
check_cancel_running = _cancel_checks.cancel_running
check_cancel_not_run_again = _cancel_checks.cancel_not_run_again
check_cancel_unstarted = _cancel_checks.cancel_unstarted
check_cancel_dead_wins = _cancel_checks.cancel_dead_wins
check_job_info_statuses = _jobinfo_checks.job_info_statuses
check_job_info_errors = _jobinfo_checks.job_info_errors
check_job_info_progress = _jobinfo_checks.job_info_progress


def _skipped_on(missing_type: type[Exception]) -> Callable[[Check], Check]:
    """A check that reports ``missing_type`` (an optional protocol or library
    the broker or this install lacks) as :class:`CheckSkipped`, not a failure."""

    def wrap(check: Check) -> Check:
        async def run(make_broker: MakeBroker) -> None:
            try:
                await check(make_broker)
            except missing_type as missing:
                raise CheckSkipped(str(missing)) from None

        run.__doc__ = check.__doc__
        return run

    return wrap


_skipped_without_store = _skipped_on(_workflow_checks.WorkflowStoreMissing)


# The workflow store's checks (an optional protocol: each skips without it).
check_workflow_round_trip = _skipped_without_store(_workflow_checks.workflow_round_trip)
check_workflow_create_once = _skipped_without_store(_workflow_checks.workflow_create_once)
check_workflow_compare_and_set = _skipped_without_store(_workflow_checks.workflow_compare_and_set)
check_workflow_concurrent_updates = _skipped_without_store(
    _workflow_checks.workflow_concurrent_updates
)
check_workflow_list = _skipped_without_store(_workflow_checks.workflow_list)
check_workflow_delete = _skipped_without_store(_workflow_checks.workflow_delete)
check_workflow_bad_arguments = _skipped_without_store(_workflow_checks.workflow_bad_arguments)


_skipped_without_purge = _skipped_on(_purge_checks.PurgeMissing)


# purge (guild.brokers.Purgeable, an optional protocol: each skips without it).
check_purge_by_status = _skipped_without_purge(_purge_checks.purge_by_status)
check_purge_all_at_once = _skipped_without_purge(_purge_checks.purge_all_at_once)
check_purge_older_than = _skipped_without_purge(_purge_checks.purge_older_than)
check_purge_bad_arguments = _skipped_without_purge(_purge_checks.purge_bad_arguments)


_skipped_without_hypothesis = _skipped_on(_priority_checks.HypothesisMissing)


# Job priorities (the Order rule).
check_priority_order = _priority_checks.priority_order
check_priority_kept = _priority_checks.priority_kept
check_priority_reported = _priority_checks.priority_reported
check_priority_cancel_and_purge = _priority_checks.priority_cancel_and_purge
check_priority_wakes_claimers = _priority_checks.priority_wakes_claimers
check_priority_model = _skipped_without_hypothesis(_priority_checks.priority_model)


CHECKS: dict[str, Check] = {
    name[len("check_") :]: fn
    for name, fn in sorted(globals().items())
    if name.startswith("check_") and name != "check_broker" and callable(fn)
}


async def check_broker(make_broker: MakeBroker) -> list[str]:
    """Run every conformance check against the broker ``make_broker`` builds.

    Returns:
        The checks that did not apply (the broker lacks an optional hook), each
        as ``"name: why"``.

    Raises:
        AssertionError: the first check that failed, named in the message.
    """
    skipped = []
    for name, check in CHECKS.items():
        try:
            await check(make_broker)
        except CheckSkipped as exc:
            skipped.append(f"{name}: {exc}")
        except AssertionError as exc:
            raise AssertionError(f"broker check {name!r} failed: {exc}") from exc
    return skipped
