"""Run an app's workers under injected faults, in virtual time, and check what matters.

The simulator takes *your* :class:`guild.Guild`, wraps each worker's handler so
that it crashes, raises dependency failures, runs slow or hangs as a
:class:`FaultPlan` says, puts a :class:`FaultyBroker` with outage windows in
front of a memory broker, and "kills" the app at chosen moments: the app is torn
down while its broker connection is already dead, so it cannot hand anything
back, exactly like ``kill -9``. It then runs until every job has finished.

Invariants checked by :meth:`SimulationReport.check`:

* **no job lost**: every enqueued job ends ``DONE`` or ``DEAD``;
* **bounded retries**: no job was attempted more than its ``max_attempts``
  (counting attempts cut short by kills, which the broker counts too);
* **reasons kept**: every dead letter carries its error;
* **termination**: everything finished before the horizon.

Everything random comes from one ``random.Random(seed)`` and the clock is a
``MockClock``, so a failing run replays exactly from its seed.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import trio
import trio.testing

from .._app import Guild
from .._errors import BrokerUnavailable, DependencyFailure, GaveUp
from .._job import Job, JobStatus, JSONValue, attempts_allowed
from .._spec import Handler, WorkerSpec
from ..brokers.memory import MemoryBroker
from ._faults import FaultyBroker
from ._strategies import FaultPlan


class InjectedCrash(Exception):
    """A handler failure the simulator injected."""


class InjectedDependencyFailure(DependencyFailure):
    """A dependency failure the simulator injected."""


@attrs.frozen(kw_only=True)
class SimulationReport:
    """What happened in one simulated run."""

    seed: int
    plan: FaultPlan
    jobs: int
    done: int
    dead: int
    lost: tuple[str, ...]
    over_attempted: tuple[str, ...]
    dead_without_reason: tuple[str, ...]
    handler_calls: int
    kills: int
    app_restarts: int
    finished: bool
    elapsed: float

    @property
    def ok(self) -> bool:
        return self.finished and not (self.lost or self.over_attempted or self.dead_without_reason)

    def check(self) -> None:
        """Raise ``AssertionError`` naming every broken invariant and the seed to replay it."""
        problems = []
        if not self.finished:
            problems.append(f"did not finish within the horizon ({self.elapsed:.0f}s simulated)")
        if self.lost:
            problems.append(f"{len(self.lost)} jobs lost: {list(self.lost[:5])}")
        if self.over_attempted:
            problems.append(f"jobs over max_attempts: {list(self.over_attempted[:5])}")
        if self.dead_without_reason:
            problems.append(f"dead letters without a reason: {list(self.dead_without_reason[:5])}")
        if problems:
            raise AssertionError(f"simulation seed={self.seed}: " + "; ".join(problems))


class _Chaos:
    """The handler side of a plan: decides, per call, from the seeded Random."""

    def __init__(self, plan: FaultPlan, rng: random.Random) -> None:
        self.plan = plan
        self.rng = rng
        self.calls = 0

    def wrap(self, handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def chaotic(job: Job) -> Any:
            self.calls += 1
            roll = self.rng.random()
            plan = self.plan
            if roll < plan.hang_rate:
                await trio.sleep_forever()
            roll -= plan.hang_rate
            if roll < plan.crash_rate:
                raise InjectedCrash(f"injected crash of job {job.id}")
            roll -= plan.crash_rate
            if roll < plan.dependency_rate:
                raise InjectedDependencyFailure("injected dependency failure")
            roll -= plan.dependency_rate
            if roll < plan.slow_rate:
                await trio.sleep(plan.slow_seconds)
            return await handler(job)

        return chaotic


@attrs.define
class _Outages:
    windows: tuple[tuple[float, float], ...]
    origin: float
    dead: bool = False  # the current incarnation was "killed": nothing gets through

    async def __call__(self, method: str) -> None:
        if self.dead:
            raise BrokerUnavailable(f"{method}: this process is dead")
        now = trio.current_time() - self.origin
        for start, length in self.windows:
            if start <= now < start + length:
                raise BrokerUnavailable(f"{method}: injected outage")


class Simulator:
    """Runs an app under a fault plan.

    Args:
        app: your app; it is not modified (the simulator builds a copy with
            wrapped handlers).
        plan: what goes wrong.
        seed: the seed of every random choice.
        horizon: simulated seconds after which an unfinished run is a failure.
    """

    def __init__(self, app: Guild, plan: FaultPlan, *, seed: int, horizon: float = 3600.0) -> None:
        self.app = app
        self.plan = plan
        self.seed = seed
        self.horizon = horizon
        self._restarts = 0

    def run_sync(self, payloads: Mapping[str, Sequence[JSONValue]]) -> SimulationReport:
        """Run in a fresh Trio loop with an autojumping MockClock; returns the report."""
        clock = trio.testing.MockClock(autojump_threshold=0)
        return trio.run(self.run, payloads, clock=clock)

    async def run(self, payloads: Mapping[str, Sequence[JSONValue]]) -> SimulationReport:
        """Run inside the current Trio loop (which should use a MockClock)."""
        rng = random.Random(self.seed)
        chaos = _Chaos(self.plan, rng)
        broker = MemoryBroker()
        origin = trio.current_time()
        jobs: list[Job] = []
        for queue, items in payloads.items():
            max_attempts = self._spec_for(queue).max_attempts
            jobs += await broker.enqueue(
                [Job(queue=queue, payload=p, max_attempts=max_attempts) for p in items]
            )
        self._restarts = 0
        finished = False
        kills = [k for k in self.plan.kills if k < self.horizon]
        for index in range(len(kills) + 1):
            until = kills[index] if index < len(kills) else self.horizon
            outages = _Outages(self.plan.outages, origin)
            faulty = FaultyBroker(broker, hook=outages)
            finished = await self._incarnation(
                self._copy(chaos), faulty, outages, origin + until, broker
            )
            if finished:
                break
        return await self._report(broker, jobs, chaos, finished, origin, len(kills))

    def _spec_for(self, queue: str) -> WorkerSpec:
        for spec in self.app.specs.values():
            if spec.queue == queue:
                return spec
        raise ValueError(f"the app has no worker for queue {queue!r}")

    def _copy(self, chaos: _Chaos) -> Guild:
        copy = Guild(self.app.name, supervision=self.app.supervision)
        for spec in self.app.specs.values():
            copy.add_worker(
                attrs.evolve(spec, handler=chaos.wrap(spec.handler)),
                circuit=self.app._circuits.get(spec.name),
            )
        return copy

    async def _incarnation(
        self,
        app: Guild,
        faulty: FaultyBroker,
        outages: _Outages,
        until: float,
        broker: MemoryBroker,
    ) -> bool:
        """One life of the app: until it is killed, everything is done, or the horizon."""
        done = False
        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(self._keep_running, app, faulty))
            while trio.current_time() < until:
                if await _all_finished(broker):
                    done = True
                    break
                await trio.sleep(min(1.0, max(0.0, until - trio.current_time())))
            # A kill: the process's connection dies first, so nothing is handed back.
            outages.dead = True
            nursery.cancel_scope.cancel(reason="simulated kill")
        return done or await _all_finished(broker)

    async def _keep_running(self, app: Guild, faulty: FaultyBroker) -> None:
        # Like a process supervisor: an app that gave up is started again after a pause.
        while True:
            try:
                await app.run(faulty)
            except* (GaveUp, BrokerUnavailable):
                self._restarts += 1
                await trio.sleep(5.0)

    async def _report(
        self,
        broker: MemoryBroker,
        jobs: list[Job],
        chaos: _Chaos,
        finished: bool,
        origin: float,
        kills: int,
    ) -> SimulationReport:
        lost: list[str] = []
        over: list[str] = []
        no_reason: list[str] = []
        counts = {JobStatus.DONE: 0, JobStatus.DEAD: 0}
        for job in jobs:
            result = await broker.get_result(job.id)
            if result is None:
                lost.append(job.id)
                continue
            counts[result.status] += 1
            if result.attempts > attempts_allowed(job, self._spec_for(job.queue).max_attempts):
                over.append(job.id)
            if result.status is JobStatus.DEAD and not result.error:
                no_reason.append(job.id)
        return SimulationReport(
            seed=self.seed,
            plan=self.plan,
            jobs=len(jobs),
            done=counts[JobStatus.DONE],
            dead=counts[JobStatus.DEAD],
            lost=tuple(lost),
            over_attempted=tuple(over),
            dead_without_reason=tuple(no_reason),
            handler_calls=chaos.calls,
            kills=kills,
            app_restarts=self._restarts,
            finished=finished,
            elapsed=trio.current_time() - origin,
        )


async def _all_finished(broker: MemoryBroker) -> bool:
    stats = await broker.stats()
    return all(s.ready + s.delayed + s.in_flight == 0 for s in stats.values())
