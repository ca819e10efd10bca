"""Worker states are one enum: the supervisor emits its members, and health,
metrics and logs judge by it alone."""

from __future__ import annotations

import trio

from guild.observability import PrometheusInstrument, WorkerState
from guild.observability._health import CLAIMING_STATES, DEGRADED_STATES, UNHEALTHY_STATES
from guild.observability._metrics import WORKER_STATES
from guild.supervision import ChildEvent, ChildSpec, Restart, Supervisor

from .helpers import state

# Written out: what each state means for /health.
EXPECTED = {
    "starting": "healthy",
    "running": "healthy",
    "closed": "healthy",
    "draining": "degraded",
    "crashed": "degraded",
    "failed_to_start": "degraded",
    "restarting": "degraded",
    "half_open": "degraded",
    "stopped": "unhealthy",
    "exited": "unhealthy",
    "open": "unhealthy",
    "gave_up": "unhealthy",
}


def test_each_state_knows_its_health() -> None:
    assert {s.value: s.health for s in WorkerState} == EXPECTED
    assert {s for s, h in EXPECTED.items() if h == "healthy"} == CLAIMING_STATES
    assert {s for s, h in EXPECTED.items() if h == "degraded"} == DEGRADED_STATES
    assert {s for s, h in EXPECTED.items() if h == "unhealthy"} == UNHEALTHY_STATES


def test_one_series_per_state() -> None:
    assert sorted(WORKER_STATES) == sorted(EXPECTED)
    metrics = PrometheusInstrument("a")
    metrics.worker_state_changed(state("w", WorkerState.HALF_OPEN))
    text = metrics.render().decode()
    assert text.count('guild_worker_state{app="a",state=') == len(EXPECTED)
    assert 'guild_worker_state{app="a",state="half_open",worker="w"} 1.0' in text


async def test_the_supervisor_emits_members(autojump_clock: trio.testing.MockClock) -> None:
    events: list[ChildEvent] = []
    crashes = 0

    async def flaky(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        nonlocal crashes
        task_status.started()
        if crashes < 1:
            crashes += 1
            raise RuntimeError("boom")
        await trio.sleep_forever()

    supervisor = Supervisor("s", on_event=events.append)
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await supervisor.start_child(ChildSpec(name="c", start=flaky, restart=Restart.PERMANENT))
        await trio.sleep(30)
        nursery.cancel_scope.cancel()
    assert events
    assert all(isinstance(e.state, WorkerState) for e in events)
    assert [e.state for e in events][:4] == [
        WorkerState.STARTING,
        WorkerState.RUNNING,
        WorkerState.CRASHED,
        WorkerState.RESTARTING,
    ]
