"""A worker's ``broker_damaged`` says whether its ``broker_error`` is a damaged
record (``guild.BrokerDataError``) or an unreachable broker, for whichever kind
of call failed first and still fails; ``/health``'s ``worker:<name>:broker``
says ``damaged`` or ``unreachable`` from it. In virtual time, over the memory
broker behind guild.testing.FaultyBroker, whose hook makes chosen calls fail.
"""

from __future__ import annotations

import trio
import trio.testing

import guild
from guild import Job, MemoryBroker, WorkerSpec
from guild.testing import FaultyBroker

from ..observability.helpers import eventually

ACK = "BrokerDataError: ack: the key k holds a string, not a hash"
CLAIM = "BrokerUnavailable: switched off: claim"


class _Faults:
    """The calls in ``damaged`` fail as a damaged record, those in ``away`` as an
    unreachable broker."""

    def __init__(self) -> None:
        self.damaged: set[str] = set()
        self.away: set[str] = set()

    async def __call__(self, method: str) -> None:
        await trio.lowlevel.checkpoint()
        if method in self.damaged:
            raise guild.BrokerDataError(f"{method}: the key k holds a string, not a hash")
        if method in self.away:
            raise guild.BrokerUnavailable(f"switched off: {method}")


async def test_broker_damaged_is_that_of_the_first_call_still_failing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    faults = _Faults()
    inner = MemoryBroker()
    ran: list[object] = []

    async def handler(job: Job) -> object:
        ran.append(job.payload)
        return job.payload

    (job,) = await inner.enqueue([Job(queue="q", payload=1)])
    faults.damaged = {"ack"}
    spec = WorkerSpec(queue="q", handler=handler, lease=600.0, claim_wait=1.0)
    worker = guild.Worker(spec, FaultyBroker(inner, hook=faults), rand=lambda: 0.0)

    def said() -> tuple[str | None, bool]:
        stats = worker.statistics()
        return stats.broker_error, stats.broker_damaged

    assert said() == (None, False)
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.serve)
        await eventually(lambda: said() == (ACK, True))
        faults.away = {"claim"}  # the broker goes away as well: the ack failed first
        await trio.sleep(30.0)
        assert said() == (ACK, True)
        faults.damaged = set()  # repaired: the claims' outage is what is left
        await eventually(lambda: worker.statistics().held == 0)
        assert said() == (CLAIM, False)
        faults.away = set()
        await eventually(lambda: said() == (None, False))
        worker.drain()
    assert ran == [1]
    result = await inner.get_result(job.id)
    assert result is not None and result.value == 1
