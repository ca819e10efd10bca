"""An idle worker runs a job delayed while it waits when the job falls due, not
when its claim's wait runs out.

On the memory broker this is exact under a MockClock. On Redis an idle worker
is registered (see ``dispatch`` in the Lua) until its wait ends or the next
known due time; a job delayed after that, due sooner, used to wait for the
registration to end: the claim below waits an hour, so a claim that returns the
job at all was woken (``wake_idlers``, then ``_pop_woken``). The absolute
``fail_after`` only turns a hang into a failure.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

import guild
from guild import Delivery
from guild.brokers import Broker
from guild.brokers.redis import RedisBroker
from tests._brokers import broker_of

HOUR = 3600.0


async def _waiting(broker: Broker) -> None:
    """Until the claim found nothing and waits: on Redis, registered idle (the
    broker's own record of it), elsewhere a moment (no record to read)."""
    if isinstance(broker, RedisBroker):
        while ("q", "c1") not in broker._idle:  # noqa: ASYNC110 (no event says so)
            await trio.sleep(0.005)
    await trio.sleep(0.05)


async def _claim_while_delayed(broker: Broker, *, delay_first: bool) -> tuple[Delivery, float]:
    """Claim with an hour's wait while a job is delayed 0.3 s (before the claim
    starts, or while it waits); the delivery and the broker time it came back."""
    got: list[tuple[Delivery, float]] = []

    async def claim() -> None:
        (delivery,) = await broker.claim("q", consumer="c1", limit=1, lease=60, wait=HOUR)
        got.append((delivery, broker.now()))

    async def delayed() -> guild.Job:
        (job,) = await broker.enqueue(
            [guild.Job(queue="q", payload=1, not_before=broker.now() + 0.3)]
        )
        return job

    # A first claim does a broker's one-off work (consumer group, checks).
    assert await broker.claim("q", consumer="c1", limit=1, lease=60) == []
    async with trio.open_nursery() as nursery:
        if delay_first:
            job = await delayed()
            nursery.start_soon(claim)
        else:
            nursery.start_soon(claim)
            await _waiting(broker)
            job = await delayed()
    ((delivery, at),) = got
    assert delivery.job.id == job.id
    assert job.not_before is not None and at >= job.not_before
    return delivery, at - job.not_before


@pytest.mark.parametrize("delay_first", [False, True])
async def test_memory_runs_it_when_due(
    autojump_clock: trio.testing.MockClock, delay_first: bool
) -> None:
    _, late = await _claim_while_delayed(guild.MemoryBroker(), delay_first=delay_first)
    assert late == 0.0


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
@pytest.mark.parametrize("delay_first", [False, True])
async def test_durable_brokers_run_it_before_the_wait_ends(
    kind: str, delay_first: bool, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    with trio.fail_after(60):
        async with broker_of(kind, request, tmp_path) as broker:
            await _claim_while_delayed(broker, delay_first=delay_first)
            # Whatever woke the claim left nothing behind: the next claim finds
            # nothing at once, and a job enqueued ready comes to a waiting claim.
            assert await broker.claim("q", consumer="c1", limit=1, lease=60) == []
            async with trio.open_nursery() as nursery:
                got: list[Delivery] = []

                async def claim() -> None:
                    got.extend(await broker.claim("q", consumer="c1", limit=1, lease=60, wait=HOUR))

                nursery.start_soon(claim)
                await _waiting(broker)
                (ready,) = await broker.enqueue([guild.Job(queue="q", payload=2)])
            assert [d.job.id for d in got] == [ready.id]
