"""The states a supervised child (a worker) goes through: one enum, defined once.

The supervisor emits them (``ChildEvent.state``, then the app's
``WorkerStateChanged``); the health policy judges by them, the Prometheus
instrument gives each its ``guild_worker_state`` series, the logs choose their
level by them, and ``/events`` and the dashboard show them. Each state knows
what it means for health, so no list of names is kept anywhere else.
"""

from __future__ import annotations

import enum


class WorkerState(enum.StrEnum):
    """A supervised child's state; its value is the name every output uses."""

    STARTING = "starting"
    """Being started; a worker claims from here on."""
    RUNNING = "running"
    """Up and claiming."""
    DRAINING = "draining"
    """Asked to stop: it claims nothing more and finishes what it holds."""
    STOPPED = "stopped"
    """Stopped on purpose (shutdown)."""
    EXITED = "exited"
    """Returned by itself; a transient child is not started again."""
    CRASHED = "crashed"
    """Raised; its supervisor decides what next."""
    FAILED_TO_START = "failed_to_start"
    """Raised before it reported started."""
    RESTARTING = "restarting"
    """Waiting out its backoff before the next start."""
    OPEN = "open"
    """Its circuit is open: too many crashes, no start until the circuit's timeout."""
    HALF_OPEN = "half_open"
    """One trial start after an open circuit."""
    CLOSED = "closed"
    """The trial stayed up: its circuit closed again."""
    GAVE_UP = "gave_up"
    """Its supervisor exceeded its restart intensity and stopped everything."""

    @property
    def health(self) -> str:
        """``healthy`` (claiming), ``degraded`` (being brought back, or finishing
        before it stops) or ``unhealthy`` (claims nothing and will not on its own)."""
        if self in _CLAIMING:
            return "healthy"
        return "degraded" if self in _DEGRADED else "unhealthy"


_CLAIMING = frozenset({WorkerState.STARTING, WorkerState.RUNNING, WorkerState.CLOSED})
_DEGRADED = frozenset(
    {
        WorkerState.CRASHED,
        WorkerState.FAILED_TO_START,
        WorkerState.RESTARTING,
        WorkerState.HALF_OPEN,
        WorkerState.DRAINING,
    }
)


def states_judged(health: str) -> frozenset[str]:
    """The values of every state whose :attr:`WorkerState.health` is ``health``."""
    return frozenset(state.value for state in WorkerState if state.health == health)
