"""The memory broker's attempt accounting against a model written out here, over
random sequences of claims (starting some), starts, lease expiries, releases,
retries and acks (hypothesis; virtual time)."""

from __future__ import annotations

from typing import Any

import attrs
import hypothesis.strategies as st
import trio
import trio.testing
from hypothesis import given, settings

from guild import Delivery, Job, MemoryBroker
from guild._codec import encode_result

LEASE = 10.0
WORKER_MAX = 2

operations = st.lists(
    st.one_of(
        st.tuples(st.just("claim"), st.integers(1, 4), st.integers(0, 4)),
        st.tuples(st.just("expire")),
        *(
            st.tuples(st.just(name), st.integers(0, 3))
            for name in ("start", "release", "retry", "ack")
        ),
    ),
    max_size=30,
)


@attrs.define
class _Model:
    """What should be true of one job."""

    allowed: int
    counted: int = 0  # runs started
    interrupted: bool = False
    state: str = "ready"  # ready | held | done | dead
    started: bool = False  # while held: is the holder's run counted?
    error: str | None = None


async def _play(ops: list[tuple[Any, ...]], limits: list[int | None]) -> None:
    broker = MemoryBroker()
    jobs = await broker.enqueue(
        [Job(queue="q", payload=i, max_attempts=m) for i, m in enumerate(limits)]
    )
    model = {
        job.id: _Model(allowed=m if m is not None else WORKER_MAX)
        for job, m in zip(jobs, limits, strict=True)
    }
    held: list[Delivery] = []
    expired = False
    for op in ops:
        if op[0] == "claim":
            if expired:
                # Every lease held has run out: the claim settles them first.
                for delivery in held:
                    m = model[delivery.job.id]
                    if m.started and m.counted >= m.allowed:
                        m.state = "dead"
                        m.error = f"lease expired on attempt {m.counted} of {m.allowed}"
                    else:
                        m.state, m.interrupted = "ready", m.interrupted or m.started
                held, expired = [], False
            ready = [i for i, m in model.items() if m.state == "ready"]
            got = await broker.claim(
                "q", consumer="c", limit=op[1], lease=LEASE, start=op[2], max_attempts=WORKER_MAX
            )
            assert len(got) == min(op[1], len(ready))
            for position, delivery in enumerate(got):
                m = model[delivery.job.id]
                assert m.state == "ready"
                should_start = position < op[2] and not m.interrupted
                assert (delivery.started, delivery.interrupted) == (should_start, m.interrupted)
                assert delivery.job.attempt == m.counted + 1
                m.state, m.started = "held", should_start
                m.counted += should_start
            held += got
        elif op[0] == "expire":
            await trio.sleep(LEASE + 1)
            expired = expired or bool(held)
        elif held and not expired:
            delivery = held[op[1] % len(held)]
            m = model[delivery.job.id]
            if op[0] == "start":
                (started,) = await broker.start([delivery])
                if not m.started:
                    m.started, m.counted = True, m.counted + 1
                assert (started.started, started.job.attempt) == (True, m.counted)
                held[held.index(delivery)] = started
                continue
            held.remove(delivery)
            if op[0] == "release":
                await broker.release([delivery])
                m.counted -= m.started
                m.state = "ready"
            elif op[0] == "retry" and m.started:
                await broker.retry(delivery, at=broker.now(), error="E")
                m.state, m.interrupted = "ready", False
            elif op[0] == "ack" and m.started:
                await broker.ack([(delivery, encode_result(None))])
                m.state = "done"
            else:
                held.append(delivery)
    for job in jobs:
        m = model[job.id]
        letter = await broker.get_dead(job.id)
        assert (letter.error if letter else None) == (m.error if m.state == "dead" else None)
        result = await broker.get_result(job.id)
        if m.state in ("done", "dead"):
            assert result is not None and result.attempts == m.counted


@settings(max_examples=200, deadline=None)
@given(ops=operations, limits=st.lists(st.sampled_from([None, 1, 2, 3]), min_size=1, max_size=4))
def test_memory_broker_counts_as_the_model(
    ops: list[tuple[Any, ...]], limits: list[int | None]
) -> None:
    trio.run(_play, ops, limits, clock=trio.testing.MockClock(autojump_threshold=0))
