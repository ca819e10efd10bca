"""guild.observability: logs, metrics, health and the live event feed.

Everything here plugs into an app as an :class:`Instrument` (the runtime emits
typed events; instruments decide what to do with them):

* :func:`configure_logging` and :class:`LoggingInstrument`: structlog JSON lines
  with the seed's fields;
* :class:`PrometheusInstrument`: Prometheus metrics, one registry per app;
* :class:`Monitor` and :func:`assess`: the health policy behind ``/health``;
* :class:`EventHub`: the ``/events`` websocket feed;
* :func:`serve_http`: the dashboard at ``/``, ``/health``, ``/metrics`` and
  ``/events`` on hypercorn.
"""

from __future__ import annotations

import typing

from .. import _lazy
from ..supervision._states import WorkerState as WorkerState
from ._events import ClaimPolled as ClaimPolled
from ._events import Instrument as Instrument
from ._events import Instruments as Instruments
from ._events import JobFinished as JobFinished
from ._events import JobStarted as JobStarted
from ._events import Outcome as Outcome
from ._events import WorkerStateChanged as WorkerStateChanged

if typing.TYPE_CHECKING:
    from ._feature_events import JobLimitWaited as JobLimitWaited
    from ._feature_events import JobProgressed as JobProgressed
    from ._feature_events import RateLimited as RateLimited
    from ._feature_events import SandboxRan as SandboxRan
    from ._feature_events import WorkerBrokerChanged as WorkerBrokerChanged
    from ._feature_events import WorkflowChanged as WorkflowChanged
    from ._health import Check as Check
    from ._health import Health as Health
    from ._health import Snapshot as Snapshot
    from ._health import Status as Status
    from ._health import WorkerView as WorkerView
    from ._health import assess as assess
    from ._http import ObservabilityApp as ObservabilityApp
    from ._http import serve_http as serve_http
    from ._hub import EventHub as EventHub
    from ._logging import LoggingInstrument as LoggingInstrument
    from ._logging import SeedFields as SeedFields
    from ._logging import configure_logging as configure_logging
    from ._metrics import PrometheusInstrument as PrometheusInstrument
    from ._monitor import Monitor as Monitor
    from ._multiprocess import prepare_multiprocess as prepare_multiprocess
    from ._multiprocess import process_exited as process_exited
    from ._observe import Observability as Observability
    from ._observe import observe as observe
    from ._tally import DURATION_BUCKETS as DURATION_BUCKETS
    from ._tally import JobCounts as JobCounts
    from ._thresholds import Thresholds as Thresholds

# The HTTP server (hypercorn, the dashboard) and Prometheus are loaded on first
# use: every worker imports this package for its events, few serve HTTP. The
# health policy, the monitor, the hub and the logging instrument too: a producer
# (``import guild`` in a web app) uses none of them, and ``guild run`` loads
# them when it observes its app. The events of the parts an app may leave
# unused (limits, progress, the sandbox, workflows) load when first emitted.
# Hidden from type checkers, which would otherwise accept any name at all.
if not typing.TYPE_CHECKING:
    __getattr__, __dir__ = _lazy.lazy_exports(
        __name__,
        globals(),
        {
            "Check": "._health",
            "Health": "._health",
            "Snapshot": "._health",
            "Status": "._health",
            "Thresholds": "._thresholds",
            "WorkerView": "._health",
            "assess": "._health",
            "EventHub": "._hub",
            "JobLimitWaited": "._feature_events",
            "JobProgressed": "._feature_events",
            "RateLimited": "._feature_events",
            "SandboxRan": "._feature_events",
            "WorkerBrokerChanged": "._feature_events",
            "WorkflowChanged": "._feature_events",
            "LoggingInstrument": "._logging",
            "SeedFields": "._logging",
            "configure_logging": "._logging",
            "Monitor": "._monitor",
            "DURATION_BUCKETS": "._tally",
            "JobCounts": "._tally",
            "Observability": "._observe",
            "ObservabilityApp": "._http",
            "observe": "._observe",
            "serve_http": "._http",
            "PrometheusInstrument": "._metrics",
            "prepare_multiprocess": "._multiprocess",
            "process_exited": "._multiprocess",
        },
        public_module=__name__,
    )

__all__ = [
    "DURATION_BUCKETS",
    "Check",
    "ClaimPolled",
    "EventHub",
    "Health",
    "Instrument",
    "Instruments",
    "JobCounts",
    "JobFinished",
    "JobLimitWaited",
    "JobProgressed",
    "JobStarted",
    "LoggingInstrument",
    "Monitor",
    "Observability",
    "ObservabilityApp",
    "Outcome",
    "PrometheusInstrument",
    "RateLimited",
    "SandboxRan",
    "SeedFields",
    "Snapshot",
    "Status",
    "Thresholds",
    "WorkerBrokerChanged",
    "WorkerState",
    "WorkerStateChanged",
    "WorkerView",
    "WorkflowChanged",
    "assess",
    "configure_logging",
    "observe",
    "prepare_multiprocess",
    "process_exited",
    "serve_http",
]


def _fixup_module_metadata() -> None:
    # Tracebacks and reprs say guild.observability.X, not the private module.
    for name in __all__:
        value = globals().get(name)
        if isinstance(value, type) and value.__module__.startswith("guild.observability."):
            value.__module__ = __name__


_fixup_module_metadata()
del _fixup_module_metadata
