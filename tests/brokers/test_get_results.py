"""``get_results``: many jobs' results in one call, what a workflow coordinator's pass reads.

Every broker here has it; each answer is checked against values written out
(what was acked, what was dead-lettered, what has no result yet).
"""

from __future__ import annotations

import trio

from guild import Job, JobStatus
from guild._codec import encode_result
from guild.workflows._transition import ManyResults

from .conftest import MakeBroker


async def test_get_results_answers_the_finished_jobs_only(make_broker: MakeBroker) -> None:
    with trio.fail_after(20):
        async with make_broker() as broker:
            assert isinstance(broker, ManyResults)
            done, failed, waiting, untouched = await broker.enqueue(
                [Job(queue="q", payload=i, max_attempts=1) for i in range(4)]
            )
            first, second, _third = await broker.claim(
                "q", consumer="c", limit=3, lease=30, start=3
            )
            await broker.ack([(first, encode_result({"n": [1, "x"]}))])
            await broker.dead(second, error="boom")

            asked = [untouched.id, done.id, "no-such-job", failed.id, waiting.id, done.id]
            found = await broker.get_results(asked)

            assert sorted(found) == sorted([done.id, failed.id])
            assert found[done.id].status is JobStatus.DONE
            assert found[done.id].value == {"n": [1, "x"]}
            assert found[failed.id].status is JobStatus.DEAD
            error = found[failed.id].error
            assert error is not None and "boom" in error
            assert await broker.get_results([]) == {}
            for job_id in set(asked) - set(found):
                assert await broker.get_result(job_id) is None
