"""Tools for testing guild workers (and brokers): part of the product.

* :func:`check_broker` — the conformance suite every broker passes; run it on yours
  (a check needing a hook your broker lacks raises :class:`CheckSkipped`).
* :class:`FaultyBroker`, :class:`Outage`, :class:`RandomFailures` — broker faults on cue.
* :class:`Simulator`, :class:`FaultPlan` — your app under injected faults, in virtual time.
* :func:`payloads`, :func:`jobs`, :func:`fault_plans` — Hypothesis strategies.
* The pytest plugin (installed with guild): fixtures ``memory_broker`` and
  ``run_app`` (pytest-trio provides ``autojump_clock``).

The simulator and the strategies need Hypothesis and the fixtures pytest-trio:
``pip install 'guild[testing]'``. The rest needs nothing beyond guild.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._conformance import CHECKS as CHECKS
from ._conformance import CheckSkipped as CheckSkipped
from ._conformance import check_broker as check_broker
from ._faults import FaultyBroker as FaultyBroker
from ._faults import Hook as Hook
from ._faults import Outage as Outage
from ._faults import RandomFailures as RandomFailures

if TYPE_CHECKING:
    from ._simulator import InjectedCrash as InjectedCrash
    from ._simulator import InjectedDependencyFailure as InjectedDependencyFailure
    from ._simulator import SimulationReport as SimulationReport
    from ._simulator import Simulator as Simulator
    from ._strategies import FaultPlan as FaultPlan
    from ._strategies import fault_plans as fault_plans
    from ._strategies import jobs as jobs
    from ._strategies import payloads as payloads

# These need Hypothesis, an extra: importing guild.testing (which the pytest plugin
# does for everyone who installs guild) must not, so they load on first use.
_NEED_HYPOTHESIS = {
    "InjectedCrash": "._simulator",
    "InjectedDependencyFailure": "._simulator",
    "SimulationReport": "._simulator",
    "Simulator": "._simulator",
    "FaultPlan": "._strategies",
    "fault_plans": "._strategies",
    "jobs": "._strategies",
    "payloads": "._strategies",
}


def __getattr__(name: str) -> Any:
    module = _NEED_HYPOTHESIS.get(name)
    if module is None:
        raise AttributeError(f"module 'guild.testing' has no attribute {name!r}")
    try:
        loaded = importlib.import_module(module, __name__)
    except ModuleNotFoundError as error:
        if error.name != "hypothesis" and not (error.name or "").startswith("hypothesis."):
            raise
        raise ModuleNotFoundError(
            f"guild.testing.{name} needs Hypothesis: pip install 'guild[testing]'",
            name=error.name,
        ) from error
    value = getattr(loaded, name)
    globals()[name] = value
    return value


__all__ = [
    "CHECKS",
    "CheckSkipped",
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
