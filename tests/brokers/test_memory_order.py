"""The memory broker's claim order: by the time a job became ready, then its id,
within a priority level, whichever way the job came to wait (an enqueue in
order or not, a delay, a hand-back)."""

from __future__ import annotations

import trio
import trio.testing

from guild import Job, MemoryBroker

CONSUMER = "host:1:w:ab"


async def _claim_ids(broker: MemoryBroker, limit: int, wait: float = 0.0) -> list[str]:
    claimed = await broker.claim("q", consumer=CONSUMER, limit=limit, lease=60, wait=wait)
    return [delivery.job.id for delivery in claimed]


async def test_ids_enqueued_out_of_order_are_claimed_in_id_order() -> None:
    broker = MemoryBroker(clock=trio.testing.MockClock().current_time)
    await broker.enqueue([Job(queue="q", id=name) for name in ["job-b", "job-a", "job-d"]])
    await broker.enqueue([Job(queue="q", id="job-c")])
    # One clock reading for all four: the ids alone order them.
    assert await _claim_ids(broker, 10) == ["job-a", "job-b", "job-c", "job-d"]


async def test_a_job_handed_back_later_goes_behind_those_ready_before_it() -> None:
    clock = trio.testing.MockClock()
    broker = MemoryBroker(clock=clock.current_time)
    await broker.enqueue([Job(queue="q", id=f"job-{i}") for i in range(4)])
    first = await broker.claim("q", consumer=CONSUMER, limit=1, lease=60)
    assert [d.job.id for d in first] == ["job-0"]
    clock.jump(1.0)
    await broker.release(first)
    # Ready again at t=1, after job-1..3 (ready at t=0), though its id is older.
    assert await _claim_ids(broker, 10) == ["job-1", "job-2", "job-3", "job-0"]


async def test_a_handed_back_job_at_the_same_time_keeps_its_id_order() -> None:
    broker = MemoryBroker(clock=trio.testing.MockClock().current_time)
    await broker.enqueue([Job(queue="q", id=f"job-{i}") for i in range(4)])
    first = await broker.claim("q", consumer=CONSUMER, limit=2, lease=60)
    await broker.release(first[:1])
    # Back at the same time as the others were ready: job-0 sorts first again.
    assert await _claim_ids(broker, 10) == ["job-0", "job-2", "job-3"]


async def test_delayed_jobs_merge_with_ready_ones_by_ready_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = MemoryBroker()
    start = trio.current_time()
    await broker.enqueue(
        [
            Job(queue="q", id="job-late", not_before=start + 5.0),
            Job(queue="q", id="job-now"),
            Job(queue="q", id="job-later", not_before=start + 8.0),
        ]
    )
    assert await _claim_ids(broker, 10) == ["job-now"]
    # A claim that waits wakes when the first delay runs out, not before.
    assert await _claim_ids(broker, 10, wait=60.0) == ["job-late"]
    assert trio.current_time() == start + 5.0
    await trio.sleep(1.0)
    await broker.enqueue([Job(queue="q", id="job-z-6s")])
    await trio.sleep(3.0)
    # job-z-6s (ready at t=6) before job-later (t=8): by ready time, though not by id.
    assert await _claim_ids(broker, 10) == ["job-z-6s", "job-later"]
