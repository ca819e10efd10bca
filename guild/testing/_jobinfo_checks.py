"""Conformance checks of job inspection (``Broker.job_info``, ``Broker.set_progress``).

Registered in ``_conformance.CHECKS``. Every expected value is written out here:
the statuses, attempt counts, errors and progress a broker must report after
each step, never read back from the broker under test.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import trio

from .._codec import encode_result
from .._job import Job, JobStatus
from .._jobinfo import JobInfo, JobProgress
from ..brokers._protocol import Broker

MakeBroker = Callable[[], AbstractAsyncContextManager[Broker]]
LIMIT = 20.0
LEASE = 0.4


async def _info(broker: Broker, job_id: str) -> JobInfo:
    found = await broker.job_info(job_id)
    assert found is not None, f"job_info({job_id!r}) is None for a job that exists"
    assert found.id == job_id, found
    return found


async def job_info_statuses(make_broker: MakeBroker) -> None:
    """job_info follows a job through ready, delayed, in flight (prefetched and
    started), done (with its value) and cancelled; an unknown id is None."""
    with trio.fail_after(LIMIT):
        async with make_broker() as broker:
            assert await broker.job_info("no-such-job") is None
            before = broker.now()
            (ready,) = await broker.enqueue(
                [Job(queue="q", payload=1, max_attempts=3, key="k1", trace_id="t1")]
            )
            (late,) = await broker.enqueue([Job(queue="q", payload=2, not_before=before + 60)])
            (doomed,) = await broker.enqueue([Job(queue="other", payload=3)])
            after = broker.now()

            info = await _info(broker, ready.id)
            assert (info.queue, info.status, info.attempts) == ("q", JobStatus.READY, 0), info
            assert (info.max_attempts, info.key, info.trace_id) == (3, "k1", "t1"), info
            assert before <= info.enqueued_at <= after, info
            assert info.not_before is None and info.started_at is None, info
            assert info.finished_at is None and info.consumer is None, info
            assert info.error is None and info.traceback is None, info
            assert info.progress is None and info.result is None, info

            info = await _info(broker, late.id)
            assert (info.status, info.attempts, info.max_attempts) == (
                JobStatus.DELAYED,
                0,
                None,
            ), info
            assert info.not_before is not None and abs(info.not_before - (before + 60)) < 1e-3, info

            (held,) = await broker.claim("q", consumer="worker-a", limit=1, lease=30, start=0)
            info = await _info(broker, ready.id)
            # Prefetched: held, but its run is not counted and has not started.
            assert (info.status, info.attempts, info.consumer) == (
                JobStatus.IN_FLIGHT,
                0,
                "worker-a",
            ), info
            assert info.started_at is None, info
            started_from = broker.now()
            (held,) = await broker.start([held])
            info = await _info(broker, ready.id)
            assert (info.status, info.attempts) == (JobStatus.IN_FLIGHT, 1), info
            assert info.started_at is not None and info.started_at >= started_from - 1e-3, info

            await broker.ack([(held, encode_result({"answer": 42}))])
            info = await _info(broker, ready.id)
            assert (info.status, info.attempts, info.result) == (
                JobStatus.DONE,
                1,
                {"answer": 42},
            ), info
            assert info.started_at is not None and info.finished_at is not None, info
            assert info.finished_at >= info.started_at, info
            assert info.consumer == "worker-a" and info.error is None, info

            assert await broker.cancel([doomed.id]) == [doomed.id]
            info = await _info(broker, doomed.id)
            assert (info.status, info.attempts, info.error) == (
                JobStatus.CANCELLED,
                0,
                "cancelled",
            ), info
            assert info.finished_at is not None and info.result is None, info


async def job_info_errors(make_broker: MakeBroker) -> None:
    """A retried job keeps its last error and traceback (a later failure replaces
    them); a dead one shows its reason and traceback, and when it died."""
    with trio.fail_after(LIMIT):
        async with make_broker() as broker:
            (job,) = await broker.enqueue([Job(queue="q", payload="x", max_attempts=3)])
            (first,) = await broker.claim("q", consumer="a", limit=1, lease=30)
            await broker.retry(
                first, at=broker.now(), error="ValueError: one", traceback="Traceback one"
            )
            info = await _info(broker, job.id)
            assert (info.status, info.attempts) == (JobStatus.READY, 1), info
            assert (info.error, info.traceback) == ("ValueError: one", "Traceback one"), info
            assert info.finished_at is None, info

            (second,) = await broker.claim("q", consumer="b", limit=1, lease=30)
            info = await _info(broker, job.id)
            # Running again: the last failure is still what it says.
            assert (info.status, info.attempts, info.consumer) == (
                JobStatus.IN_FLIGHT,
                2,
                "b",
            ), info
            assert (info.error, info.traceback) == ("ValueError: one", "Traceback one"), info
            await broker.retry(
                second, at=broker.now() + 0.3, error="KeyError: two", traceback="Traceback two"
            )
            info = await _info(broker, job.id)
            assert (info.status, info.attempts) == (JobStatus.DELAYED, 2), info
            assert (info.error, info.traceback) == ("KeyError: two", "Traceback two"), info
            await trio.sleep(0.4)
            info = await _info(broker, job.id)
            assert info.status is JobStatus.READY, info

            (third,) = await broker.claim("q", consumer="c", limit=1, lease=30, wait=2)
            await broker.dead(third, error="OSError: three (3 attempts)", traceback="Traceback 3")
            info = await _info(broker, job.id)
            assert (info.status, info.attempts, info.consumer) == (JobStatus.DEAD, 3, "c"), info
            assert (info.error, info.traceback) == (
                "OSError: three (3 attempts)",
                "Traceback 3",
            ), info
            assert info.started_at is not None and info.finished_at is not None, info
            assert info.finished_at >= info.started_at and info.result is None, info


async def job_info_progress(make_broker: MakeBroker) -> None:
    """set_progress stores a held job's progress, the latest replacing the one
    before, and it stays after the job is done; a delivery no longer held (its
    lease lost) changes nothing."""
    with trio.fail_after(LIMIT):
        async with make_broker() as broker:
            (job,) = await broker.enqueue([Job(queue="q", payload="x")])
            (lost,) = await broker.claim("q", consumer="a", limit=1, lease=LEASE)
            half = JobProgress(fraction=0.5, message="half way", at=1000.5)
            await broker.set_progress([(lost, half)])
            assert (await _info(broker, job.id)).progress == half
            await trio.sleep(LEASE + 0.2)
            (held,) = await broker.claim("q", consumer="b", limit=1, lease=30, wait=2)
            # Its lost run was interrupted: a claim hands it out unstarted.
            (held,) = await broker.start([held])
            await broker.set_progress([(lost, JobProgress(fraction=0.9, message="stale", at=1))])
            assert (await _info(broker, job.id)).progress == half

            await broker.set_progress([])
            three_quarters = JobProgress(fraction=0.75, message=None, at=1001.25)
            await broker.set_progress([(held, three_quarters)])
            assert (await _info(broker, job.id)).progress == three_quarters
            everything = JobProgress(fraction=1.0, message="done: 10 of 10", at=1002.0)
            await broker.set_progress([(held, everything)])
            await broker.ack([(held, encode_result(None))])
            info = await _info(broker, job.id)
            assert (info.status, info.attempts, info.progress) == (
                JobStatus.DONE,
                2,
                everything,
            ), info
            # A finished job's progress is no longer written.
            await broker.set_progress([(held, half)])
            assert (await _info(broker, job.id)).progress == everything
