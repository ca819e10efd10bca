"""The memory broker's in-line start of a prefetched job (``StartsInline``):
it counts the run at once, makes no new delivery, and refuses a delivery whose
claim is over."""

from __future__ import annotations

import trio
import trio.testing

from guild import Job, MemoryBroker
from guild.brokers._protocol import StartsInline


async def test_an_inline_start_counts_the_run_of_the_delivery_held() -> None:
    clock = trio.testing.MockClock()
    broker = MemoryBroker(clock=clock.current_time)
    assert isinstance(broker, StartsInline)
    (job,) = await broker.enqueue([Job(queue="q", payload=1)])
    (held,) = await broker.claim("q", consumer="c", limit=1, lease=10, start=0)
    info = await broker.job_info(job.id)
    assert info is not None and info.attempts == 0 and info.started_at is None
    clock.jump(2)
    assert broker.start_nowait(held) is True
    info = await broker.job_info(job.id)
    assert info is not None and info.attempts == 1 and info.started_at == 2.0
    # The worker runs the delivery it holds: nothing about it was remade.
    assert held.started is False and held.job.attempt == 1
    # An ack with it still counts (by job id and receipt).
    await broker.ack([(held, "7")])
    result = await broker.get_result(job.id)
    assert result is not None and result.value == 7 and result.attempts == 1


async def test_an_inline_start_refuses_a_lapsed_lease() -> None:
    clock = trio.testing.MockClock()
    broker = MemoryBroker(clock=clock.current_time)
    (job,) = await broker.enqueue([Job(queue="q", payload=1)])
    (held,) = await broker.claim("q", consumer="c", limit=1, lease=10, start=0)
    clock.jump(10)
    assert broker.start_nowait(held) is False
    info = await broker.job_info(job.id)
    assert info is not None and info.attempts == 0


async def test_an_inline_start_refuses_a_claim_that_was_handed_back() -> None:
    broker = MemoryBroker()
    (job,) = await broker.enqueue([Job(queue="q", payload=1)])
    (first,) = await broker.claim("q", consumer="c1", limit=1, lease=10, start=0)
    await broker.release([first])
    (second,) = await broker.claim("q", consumer="c2", limit=1, lease=10, start=0)
    assert broker.start_nowait(first) is False
    info = await broker.job_info(job.id)
    assert info is not None and info.attempts == 0
    assert broker.start_nowait(second) is True
    info = await broker.job_info(job.id)
    assert info is not None and info.attempts == 1
