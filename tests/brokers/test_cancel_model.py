"""Cancellation against a reference model: any sequence of claims, starts, cancels,
settles and lease expiries leaves one job where the model (written out below,
from the protocol's words) says, with the status, attempts and answers it says.

The memory broker runs under a hand-driven clock, so a lease can run out between
any two steps; SQLite and Redis (real ones, on the wall clock) run the sequences
without expiries.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import attrs
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from guild import Job, JobStatus, MemoryBroker
from guild.brokers import Broker, encode_result
from guild.brokers.redis import RedisBroker
from guild.brokers.sqlite import SqliteBroker
from tests._redis_server import RedisServer

LEASE = 10.0
MAX_ATTEMPTS = 3
STEPS = [
    "claim_started",
    "claim_prefetched",
    "start",
    "cancel",
    "ack",
    "retry",
    "release",
    "dead",
    "finish_cancelled",
]
OPS = st.lists(st.sampled_from([*STEPS, "expire"]), max_size=14)
_names = itertools.count()


@attrs.define
class Model:
    """One job, as the protocol describes it."""

    state: str = "waiting"  # waiting | held | done | dead | cancelled
    started: bool = False  # the holder's run is counted
    requested: bool = False
    expired: bool = False  # the holder's lease has run out
    attempts: int = 0  # counted runs
    interrupted: bool = False  # a started run's lease ran out: never started at claim

    def claim(self, start: bool) -> bool:
        self._settle_expiry()
        if self.state != "waiting":
            return False
        start = start and not self.interrupted
        self.state, self.started, self.expired = "held", start, False
        self.attempts += start
        return True

    def _settle_expiry(self) -> None:
        # What the next claim does with a held job whose lease ran out.
        if self.state == "held" and self.expired:
            if self.requested:
                self.state = "cancelled"
            elif self.started and self.attempts >= MAX_ATTEMPTS:
                self.state = "dead"
            else:
                self.interrupted = self.interrupted or self.started
                self.state = "waiting"

    def live(self) -> bool:
        return self.state == "held" and not self.expired

    def cancel(self) -> bool:
        if self.state in ("done", "dead", "cancelled"):
            return False
        if self.live() and self.started:
            self.requested = True
        else:
            self.state = "cancelled"
        return True

    def start(self) -> bool:
        if not self.live():
            return False
        if not self.started:
            self.started = True
            self.attempts += 1
        return True

    def settle(self, how: str) -> None:
        if how == "ack":
            # By job id: whoever finishes it, unless it had already ended.
            if self.state in ("waiting", "held"):
                self.state = "done"
            return
        # By receipt: only while the holder still holds it (an expired lease not
        # yet taken by a claim is still held, as in every broker).
        if self.state != "held":
            return
        if how == "dead":
            self.state = "dead"
        elif how == "finish_cancelled" or self.requested:
            self.state = "cancelled"
        else:  # retry or release: back to waiting
            if how == "release" and self.started:
                self.attempts -= 1
            if how == "retry":
                self.interrupted = False  # that run finished: it failed, and said so
            self.state = "waiting"


async def _run(ops: list[str], open_broker: Callable[[], Any] | None = None) -> None:
    now = [0.0]
    if open_broker is None:
        broker: Broker = MemoryBroker(clock=lambda: now[0])
    else:
        broker = await open_broker()
        now[0] = broker.now()
    try:
        await _steps(broker, ops, now)
    finally:
        await broker.aclose()


async def _steps(broker: Broker, ops: list[str], now: list[float]) -> None:
    model = Model()
    (job,) = await broker.enqueue([Job(queue="q", payload=1)])
    delivery: Any = None
    for op in ops:
        now[0] += 0.001
        if op in ("claim_started", "claim_prefetched"):
            got = await broker.claim(
                "q",
                consumer="c",
                limit=1,
                lease=LEASE,
                start=1 if op == "claim_started" else 0,
                max_attempts=MAX_ATTEMPTS,
            )
            expected = model.claim(op == "claim_started")
            assert bool(got) == expected, (op, model)
            if got:
                delivery = got[0]
        elif op == "start":
            if delivery is None:
                continue
            started = await broker.start([delivery])
            assert bool(started) == model.start(), (op, model)
            if started:
                delivery = started[0]
        elif op == "cancel":
            answer = await broker.cancel([job.id])
            assert answer == ([job.id] if model.cancel() else []), (op, model)
        elif op == "expire":
            now[0] += LEASE + 1
            if model.state == "held":
                model.expired = True
        elif delivery is not None:
            if op in ("retry", "dead") and not delivery.started:
                continue  # both settle a run: the worker never sends them for an unstarted one
            if op == "ack":
                await broker.ack([(delivery, encode_result(None))])
            elif op == "retry":
                await broker.retry(delivery, at=broker.now(), error="E")
            elif op == "release":
                await broker.release([delivery])
            elif op == "dead":
                await broker.dead(delivery, error="E")
            else:
                await broker.finish_cancelled([delivery])
            model.settle(op)
        asked = await broker.cancel_requested([job.id])
        assert asked == ({job.id} if model.requested and model.state == "held" else set()), (
            op,
            model,
        )
    # One last claim settles an expired lease, as the model does.
    now[0] += 0.001
    await broker.claim("q", consumer="end", limit=1, lease=LEASE, max_attempts=MAX_ATTEMPTS)
    model.claim(True)
    result = await broker.get_result(job.id)
    finished = {"done": JobStatus.DONE, "dead": JobStatus.DEAD, "cancelled": JobStatus.CANCELLED}
    if model.state in finished:
        assert result is not None and result.status is finished[model.state], (result, model)
        if model.state == "cancelled":
            assert (result.error, result.attempts) == ("cancelled", model.attempts), model
    else:
        assert result is None, (result, model)
    stats = (await broker.stats(["q"]))["q"]
    assert stats.cancelled == (model.state == "cancelled")


@settings(max_examples=400, deadline=None)
@given(OPS)
def test_memory_broker_follows_the_model(ops: list[str]) -> None:
    trio.run(_run, ops)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(STEPS), max_size=10))
def test_sqlite_follows_the_model(tmp_path_factory: pytest.TempPathFactory, ops: list[str]) -> None:
    path = tmp_path_factory.mktemp("model") / f"model-{next(_names)}.db"
    trio.run(_run, ops, lambda: SqliteBroker.open(path))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(STEPS), max_size=10))
def test_redis_follows_the_model(redis_server: RedisServer, ops: list[str]) -> None:
    prefix = f"model{next(_names)}"
    trio.run(_run, ops, lambda: RedisBroker.open(redis_server.url, prefix=prefix))
