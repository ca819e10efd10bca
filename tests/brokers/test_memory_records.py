"""The memory broker's records of done jobs: what they answer, how long they
stay, and that they leave nothing behind for the garbage collector to walk."""

from __future__ import annotations

import gc

import trio
import trio.testing

from guild import Job, JobStatus, MemoryBroker, Priority, Retention
from guild._codec import encode_result
from guild._jobinfo import JobProgress


async def _run_once(broker: MemoryBroker, queue: str, value: object = None) -> None:
    (delivery,) = await broker.claim(queue, consumer="host:1:w:ab", limit=1, lease=60)
    await broker.ack([(delivery, encode_result(value))])


class TestDoneRecords:
    async def test_a_done_job_leaves_only_untracked_records(self) -> None:
        broker = MemoryBroker()
        jobs = await broker.enqueue([Job(queue="q", payload={"n": i}) for i in range(50)])
        held = await broker.claim("q", consumer="c", limit=50, lease=60)
        await broker.ack([(d, encode_result(d.job.payload)) for d in held])
        gc.collect()
        for job in jobs:
            assert job.id not in broker._entries
            assert not gc.is_tracked(broker._done[job.id])
            assert not gc.is_tracked(broker._results[job.id])
        result = await broker.get_result(jobs[3].id)
        assert result is not None and result.value == {"n": 3}

    async def test_job_info_of_a_done_job(self) -> None:
        clock = trio.testing.MockClock()
        broker = MemoryBroker(clock=clock.current_time)
        (job,) = await broker.enqueue(
            [
                Job(
                    queue="q",
                    payload=[1, 2],
                    max_attempts=4,
                    priority=Priority.HIGH,
                    key="k1",
                    trace_id="t1",
                    timeout=9.0,
                    not_before=2.0,
                )
            ]
        )
        clock.jump(3)
        (first,) = await broker.claim("q", consumer="c1", limit=1, lease=60)
        await broker.set_progress([(first, JobProgress(fraction=0.5, message="half", at=3.0))])
        await broker.retry(first, at=4.0, error="E: once", traceback="tb")
        clock.jump(2)  # 5.0
        (second,) = await broker.claim("q", consumer="c2", limit=1, lease=60)
        clock.jump(1)  # 6.0
        await broker.ack([(second, encode_result({"ok": True}))])
        info = await broker.job_info(job.id)
        assert info is not None
        assert (info.id, info.queue, info.status) == (job.id, "q", JobStatus.DONE)
        assert (info.attempts, info.max_attempts, info.priority) == (2, 4, Priority.HIGH)
        assert isinstance(info.priority, Priority)
        assert (info.enqueued_at, info.not_before) == (0.0, 2.0)
        assert (info.started_at, info.finished_at) == (5.0, 6.0)
        assert (info.consumer, info.key, info.trace_id) == ("c2", "k1", "t1")
        assert (info.error, info.traceback) == ("E: once", "tb")
        assert info.progress == JobProgress(fraction=0.5, message="half", at=3.0)
        assert info.result == {"ok": True}

    async def test_a_record_outlives_its_result_then_goes(self) -> None:
        clock = trio.testing.MockClock()
        broker = MemoryBroker(clock=clock.current_time, retention=Retention(results=10, done=20))
        (job,) = await broker.enqueue([Job(queue="q", payload=1)])
        await _run_once(broker, "q", 5)
        clock.jump(15)
        assert await broker.get_result(job.id) is None
        info = await broker.job_info(job.id)
        assert info is not None and info.status is JobStatus.DONE and info.result is None
        assert info.finished_at is None  # as before: it is the result's
        clock.jump(10)
        await broker.claim("q", consumer="c", limit=1, lease=1)  # prunes
        assert await broker.job_info(job.id) is None
        assert job.id not in broker._done and repr(broker) == "MemoryBroker(jobs=0)"

    async def test_a_key_held_by_a_done_job_answers_it_without_its_payload(self) -> None:
        for keep in (False, True):
            broker = MemoryBroker(retention=Retention(keep_payload=keep))
            (job,) = await broker.enqueue(
                [Job(queue="q", payload={"a": 1}, key="once", priority=-1, timeout=3.0)]
            )
            await _run_once(broker, "q")
            (again,) = await broker.enqueue([Job(queue="q", payload={"a": 2}, key="once")])
            assert again.id == job.id and again.key == "once" and again.attempt == 1
            assert again.payload == ({"a": 1} if keep else None)
            assert (again.priority, again.timeout, again.trace_id) == (
                Priority.LOW,
                3.0,
                job.trace_id,
            )
            assert (await broker.stats(["q"]))["q"].ready == 0

    async def test_a_kept_payload_is_the_one_enqueued_not_the_handlers_copy(self) -> None:
        broker = MemoryBroker(retention=Retention(keep_payload=True))
        (job,) = await broker.enqueue([Job(queue="q", payload={"a": [1]}, key="once")])
        (delivery,) = await broker.claim("q", consumer="c", limit=1, lease=60)
        delivery.job.payload["a"].append(2)  # a handler changing its payload in place
        await broker.ack([(delivery, encode_result(None))])
        (again,) = await broker.enqueue([Job(queue="q", payload={"b": 0}, key="once")])
        assert again.id == job.id
        assert again.payload == {"a": [1]}

    async def test_purge_takes_done_records_by_age(self) -> None:
        clock = trio.testing.MockClock()
        broker = MemoryBroker(clock=clock.current_time)
        (old,) = await broker.enqueue([Job(queue="q", payload=1)])
        await _run_once(broker, "q")
        clock.jump(100)
        (new,) = await broker.enqueue([Job(queue="q", payload=2)])
        await _run_once(broker, "q")
        (other,) = await broker.enqueue([Job(queue="other", payload=3)])
        await _run_once(broker, "other")
        assert await broker.purge("q", [JobStatus.DEAD]) == 0
        assert await broker.purge("q", [JobStatus.DONE], older_than=50) == 1
        assert await broker.job_info(old.id) is None
        assert await broker.get_result(old.id) is None
        assert await broker.job_info(new.id) is not None
        assert await broker.purge("q", [JobStatus.DONE]) == 1
        assert await broker.job_info(new.id) is None
        assert await broker.job_info(other.id) is not None

    async def test_an_id_enqueued_again_after_it_was_done(self) -> None:
        clock = trio.testing.MockClock()
        broker = MemoryBroker(clock=clock.current_time, retention=Retention(results=10, done=10))
        (job,) = await broker.enqueue([Job(queue="q", payload=1)])
        await _run_once(broker, "q")
        (again,) = await broker.enqueue([Job(queue="q", payload=2, id=job.id)])
        assert again.id == job.id and again.payload == 2
        info = await broker.job_info(job.id)
        assert info is not None and info.status is JobStatus.READY
        clock.jump(11)  # the old record's expiry: the waiting job stays
        (delivery,) = await broker.claim("q", consumer="c", limit=1, lease=60)
        assert delivery.job.payload == 2
        assert job.id not in broker._done
        await broker.ack([(delivery, encode_result(7))])
        result = await broker.get_result(job.id)
        assert result is not None and result.value == 7
        # The new record's expiry, not the old one's, frees it.
        clock.jump(9)
        await broker.claim("q", consumer="c", limit=1, lease=1)
        assert await broker.job_info(job.id) is not None
        clock.jump(2)
        await broker.claim("q", consumer="c", limit=1, lease=1)
        assert await broker.job_info(job.id) is None

    async def test_a_late_ack_of_a_done_job_changes_nothing(self) -> None:
        broker = MemoryBroker()
        (job,) = await broker.enqueue([Job(queue="q", payload=1)])
        (delivery,) = await broker.claim("q", consumer="c", limit=1, lease=60)
        await broker.ack([(delivery, encode_result(1))])
        await broker.ack([(delivery, encode_result(2))])
        assert await broker.cancel([job.id]) == []
        result = await broker.get_result(job.id)
        assert result is not None and result.value == 1
        assert (await broker.stats(["q"]))["q"].done == 1
