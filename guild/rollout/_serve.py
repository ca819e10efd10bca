"""How ``guild run`` runs an app with rollouts: every process records outcomes,
a canary process also serves its queues' lanes and drives their rollouts.

A canary app's workers claim the lanes of their queues (``emails@canary``), so
only the share the broker routes there reaches them. Once every rollout of the
canary is rolled back, its workers drain (their in-flight jobs finish; a
retry or a release lands in the lane), and the lanes are moved back to the
stable version until nothing has come in for longer than a producer's stale
view of the share; then the process ends.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import structlog
import trio

from ..brokers._canary import SHARE_CACHE_SECONDS
from ..observability._hub import EventHub
from ..supervision._supervisor import ChildSpec, Supervisor
from ._kinds import UnsupportedBroker, supports
from ._lanes import base_of, lane_of
from ._recorder import OutcomeRecorder, record_outcomes

if TYPE_CHECKING:
    # Only named in annotations: the controller and the state machine load for
    # a canary (below), not before the first job of every run.
    from ._machine import CanaryPolicy

_log = structlog.get_logger("guild.rollout")


def make_canary(app: Any) -> list[str]:
    """Point every worker of ``app`` at its queue's lane; returns the queues."""
    queues: list[str] = []
    for name, spec in list(app.specs.items()):
        if base_of(spec.queue) is not None:
            queues.append(base_of(spec.queue) or spec.queue)
            continue
        queues.append(spec.queue)
        app.configure(name, queue=lane_of(spec.queue))
    return sorted(set(queues))


async def run_app(
    app: Any,
    broker: Any,
    stop: trio.Event,
    *,
    canary: bool = False,
    policy: CanaryPolicy | None = None,
    tick: float = 0.5,
    services: Supervisor | None = None,
) -> bool:
    """Run ``app`` until ``stop`` is set (or, for a canary, it is rolled back).

    The rollout recorder and a canary's controller run as children of
    ``services`` (default: the app's own, :meth:`guild.Guild.open_services`),
    so a crash in one is restarted, not the end of the run.

    Returns True when a canary ended because it was rolled back.
    """
    if not supports(broker):
        if canary:
            raise UnsupportedBroker(
                f"--canary needs the sqlite or redis broker, not {type(broker).__name__}"
            )
        # Nowhere to keep a rollout: nothing to record for one.
        await app.run(broker, shutdown_trigger=stop.wait)
        return False
    if services is None:
        async with app.open_services() as own:
            return await _run_recorded(app, broker, stop, canary, policy, tick, own)
    return await _run_recorded(app, broker, stop, canary, policy, tick, services)


async def _run_recorded(
    app: Any,
    broker: Any,
    stop: trio.Event,
    canary: bool,
    policy: CanaryPolicy | None,
    tick: float,
    services: Supervisor,
) -> bool:
    recorder = OutcomeRecorder()
    app.instruments.add(recorder)

    def publish(message: dict[str, Any]) -> None:
        for instrument in app.instruments:
            if isinstance(instrument, EventHub):
                instrument.publish(message)

    async def record(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await record_outcomes(broker, recorder, publish=publish)

    await services.start_child(ChildSpec(name="rollout-recorder", start=record))
    if not canary:
        await app.run(broker, shutdown_trigger=stop.wait)
        return False
    # Here, not at the top: only a canary drives rollouts.
    from ._controller import ControllerStatus, drain_lanes, serve_controller

    queues = make_canary(app)
    # One status across restarts: a restarted controller reloads the rollouts
    # from the broker and sets the same event the wait below watches.
    status = ControllerStatus()
    await services.start_child(
        ChildSpec(
            name="canary-controller",
            start=functools.partial(
                serve_controller, broker, queues, policy=policy, tick=tick, status=status
            ),
        )
    )

    async def until_stopped_or_rolled_back() -> None:
        async with trio.open_nursery() as waiting:

            async def wait(event: trio.Event) -> None:
                await event.wait()
                waiting.cancel_scope.cancel()

            waiting.start_soon(wait, stop)
            waiting.start_soon(wait, status.rolled_back)

    await app.run(broker, shutdown_trigger=until_stopped_or_rolled_back)
    rolled_back = status.rolled_back.is_set()
    if rolled_back:
        moved = await drain_lanes(broker, queues, settle=2 * SHARE_CACHE_SECONDS + tick)
        _log.info("canary_rolled_back", queues=queues, jobs_moved_after_drain=moved)
    return rolled_back
