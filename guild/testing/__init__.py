"""Tools for testing guild workers (and brokers): part of the product.

* :func:`check_broker` — the conformance suite every broker passes; run it on yours.
* :class:`FaultyBroker`, :class:`Outage`, :class:`RandomFailures` — broker faults on cue.
* :class:`Simulator`, :class:`FaultPlan` — your app under injected faults, in virtual time.
* :func:`payloads`, :func:`jobs`, :func:`fault_plans` — Hypothesis strategies.
* The pytest plugin (installed with guild): fixtures ``memory_broker`` and
  ``run_app`` (pytest-trio provides ``autojump_clock``).
"""

from __future__ import annotations

from ._conformance import CHECKS as CHECKS
from ._conformance import check_broker as check_broker
from ._faults import FaultyBroker as FaultyBroker
from ._faults import Hook as Hook
from ._faults import Outage as Outage
from ._faults import RandomFailures as RandomFailures
from ._simulator import InjectedCrash as InjectedCrash
from ._simulator import InjectedDependencyFailure as InjectedDependencyFailure
from ._simulator import SimulationReport as SimulationReport
from ._simulator import Simulator as Simulator
from ._strategies import FaultPlan as FaultPlan
from ._strategies import fault_plans as fault_plans
from ._strategies import jobs as jobs
from ._strategies import payloads as payloads

__all__ = [
    "CHECKS",
    "FaultPlan",
    "FaultyBroker",
    "Hook",
    "InjectedCrash",
    "InjectedDependencyFailure",
    "Outage",
    "RandomFailures",
    "SimulationReport",
    "Simulator",
    "check_broker",
    "fault_plans",
    "jobs",
    "payloads",
]
