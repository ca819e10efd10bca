"""Supervision: OTP restart semantics standing in for the circuit breaker.

* :class:`Supervisor` — runs :class:`ChildSpec` children as tasks in its nursery,
  restarting them by :class:`Strategy` and :class:`Restart` type, with backoff,
  OTP intensity, and an opt-in :class:`Circuit` per child.
* :class:`SupervisorPolicy` — the pure state machine behind it.
* :func:`supervise_processes` — the same policy over OS processes (``guild run --processes N``).
"""

from __future__ import annotations

import typing

from .. import _lazy

if typing.TYPE_CHECKING:
    from ._decisions import CloseCircuit as CloseCircuit
    from ._decisions import GiveUp as GiveUp
    from ._decisions import OpenCircuit as OpenCircuit
    from ._decisions import Remove as Remove
    from ._decisions import RestartChildren as RestartChildren
    from ._policy import Backoff as Backoff
    from ._policy import ChildState as ChildState
    from ._policy import Circuit as Circuit
    from ._policy import IllegalTransition as IllegalTransition
    from ._policy import Restart as Restart
    from ._policy import Strategy as Strategy
    from ._policy import SupervisorPolicy as SupervisorPolicy
    from ._processes import supervise_processes as supervise_processes
    from ._states import WorkerState as WorkerState
    from ._supervisor import ChildEvent as ChildEvent
    from ._supervisor import ChildSpec as ChildSpec
    from ._supervisor import ChildStatus as ChildStatus
    from ._supervisor import Supervisor as Supervisor

# Loaded on first use: ``guild run`` and every worker reach these modules
# through their own imports; a command that supervises nothing (``guild
# enqueue``, ``guild status``) or the logging that names a WorkerState should
# not build the supervisor for them.
# Hidden from type checkers, which would otherwise accept any name at all.
if not typing.TYPE_CHECKING:
    __getattr__, __dir__ = _lazy.lazy_exports(
        __name__,
        globals(),
        {
            "Backoff": "._policy",
            "ChildState": "._policy",
            "Circuit": "._policy",
            "CloseCircuit": "._decisions",
            "GiveUp": "._decisions",
            "IllegalTransition": "._policy",
            "OpenCircuit": "._decisions",
            "Remove": "._decisions",
            "Restart": "._policy",
            "RestartChildren": "._decisions",
            "Strategy": "._policy",
            "SupervisorPolicy": "._policy",
            "supervise_processes": "._processes",
            "WorkerState": "._states",
            "ChildEvent": "._supervisor",
            "ChildSpec": "._supervisor",
            "ChildStatus": "._supervisor",
            "Supervisor": "._supervisor",
        },
    )

__all__ = [
    "Backoff",
    "ChildEvent",
    "ChildSpec",
    "ChildState",
    "ChildStatus",
    "Circuit",
    "CloseCircuit",
    "GiveUp",
    "IllegalTransition",
    "OpenCircuit",
    "Remove",
    "Restart",
    "RestartChildren",
    "Strategy",
    "Supervisor",
    "SupervisorPolicy",
    "WorkerState",
    "supervise_processes",
]
