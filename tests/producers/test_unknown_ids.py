"""``result(job_id, wait=S)`` of an id the broker does not know (what ``guild
result --wait``, ``guild.Client`` and ``guild.AsyncClient`` share): answered at
once unless the job may still appear, by the broker's clock under trio's
MockClock (the waits are virtual; the expected times are written out).

Waited for: an id guild made in the last minute (its enqueue may still be on
its way) until that minute is over, and a running workflow's step job for as
long as asked. Not waited for: any other id, an old or far-future id of guild's
shape, a step of a workflow that finished or does not exist.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

import guild
from guild import Job
from guild._client import job_result
from guild._codec import encode_result
from guild._ids import new_id
from guild.brokers._workflow_store import WorkflowRecord
from guild.brokers.memory import MemoryBroker


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def _workflow(workflow_id: str, status: str) -> WorkflowRecord:
    return WorkflowRecord(
        id=workflow_id,
        name="order",
        status=status,
        spec='{"steps":["a","b"]}',
        state="{}",
        version=0,
        created_at=1.0,
        updated_at=1.0,
    )


async def _finish_later(broker: MemoryBroker, job_id: str, after: float, value: int) -> None:
    """Enqueue the job ``after`` seconds from now and finish it with ``value``."""
    await trio.sleep(after)
    await broker.enqueue([Job(queue="q", id=job_id, payload=value)])
    (delivery,) = await broker.claim("q", consumer="c", limit=1, lease=30)
    await broker.ack([(delivery, encode_result(value))])


@pytest.mark.parametrize(
    "job_id",
    [
        "NOPE",
        "01EJ3PX03VD2DW017341T7HN0H",  # guild's shape, made on 2020-09-13
        "03MD998G0045G9C5FQSHBVEPVZ",  # guild's shape, stamped in 2096
        "wf-none.0",  # a step of no workflow
        "wf-none.0.undo",
    ],
)
async def test_an_id_that_cannot_appear_is_unknown_at_once(
    autojump_clock: trio.testing.MockClock, job_id: str
) -> None:
    broker = MemoryBroker()
    await broker.enqueue([Job(queue="q", payload=0)])
    with pytest.raises(guild.UnknownJob, match=f"no job with id '{job_id}'"):
        await job_result(broker, job_id, wait=600)
    assert trio.current_time() == 0.0


@pytest.mark.parametrize("status", ["done", "failed", "cancelled"])
async def test_a_step_of_a_finished_workflow_is_unknown_at_once(
    autojump_clock: trio.testing.MockClock, status: str
) -> None:
    broker = MemoryBroker()
    assert await broker.create_workflow(_workflow("wf-over", status))
    with pytest.raises(guild.UnknownJob):
        await job_result(broker, "wf-over.1", wait=600)
    assert trio.current_time() == 0.0


@pytest.mark.parametrize("status", ["running", "compensating"])
async def test_a_step_of_a_running_workflow_is_waited_for(
    autojump_clock: trio.testing.MockClock, status: str
) -> None:
    """``guild workflow show`` lists the ids of steps not enqueued yet."""
    broker = MemoryBroker()
    assert await broker.create_workflow(_workflow("wf-live", status))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_finish_later, broker, "wf-live.1", 500.0, 7)
        found = await job_result(broker, "wf-live.1", wait=600)
    assert found is not None and found.value == 7
    assert trio.current_time() == 500.0
    # Never enqueued: the whole wait, then unknown.
    with pytest.raises(guild.UnknownJob):
        await job_result(broker, "wf-live.0.undo", wait=100)
    assert trio.current_time() == 600.0


async def test_an_id_guild_made_just_now_is_waited_for_while_it_may_arrive(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = MemoryBroker()
    # Arrives after 20 s and takes 100 s to finish: within the minute it may
    # arrive in, so the rest of the wait is kept for it.
    arriving = new_id()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_enqueue_then_finish, broker, arriving, 20.0, 100.0)
        found = await job_result(broker, arriving, wait=600)
    assert found is not None and found.value == 3
    assert trio.current_time() == 120.0
    # Never arrives: waited for until a minute after it was made (by the wall
    # clock: a few real milliseconds have passed since), not 600 s.
    never = new_id()
    with pytest.raises(guild.UnknownJob):
        await job_result(broker, never, wait=600)
    assert 120.0 + 59.0 <= trio.current_time() <= 120.0 + 60.0


async def _enqueue_then_finish(
    broker: MemoryBroker, job_id: str, arrive: float, work: float
) -> None:
    await trio.sleep(arrive)
    await broker.enqueue([Job(queue="q", id=job_id, payload=3)])
    (delivery,) = await broker.claim("q", consumer="c", limit=1, lease=300)
    await trio.sleep(work)
    await broker.ack([(delivery, encode_result(3))])


async def test_a_known_job_keeps_the_whole_wait(autojump_clock: trio.testing.MockClock) -> None:
    broker = MemoryBroker()
    (job,) = await broker.enqueue([Job(queue="q", id="custom-id", payload=0)])
    assert await job_result(broker, job.id, wait=600) is None
    assert trio.current_time() == 600.0
