"""The instruments ``guild run`` (and :func:`serve_http`) install on an app.

Kept apart from the HTTP server: every ``guild run`` observes its app (the
health monitor, the logs, the event feed, the job counts), few serve HTTP,
and the server's module loads the dashboard, the access rules and
prometheus-client, which a run without ``--http`` never uses.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

import attrs

from ._hub import EventHub
from ._logging import LoggingInstrument
from ._metrics import PrometheusInstrument
from ._monitor import Monitor
from ._thresholds import Thresholds

if TYPE_CHECKING:
    # Only for annotations: guild._app imports this package (for its events).
    from .._app import Guild


@attrs.frozen
class Observability:
    """The instruments one app is observed through.

    ``metrics`` also counts jobs (it is the :class:`JobCounts` the monitor reads);
    ``hub`` joins the app's instruments only while ``/events`` has clients.
    """

    metrics: PrometheusInstrument
    monitor: Monitor
    hub: EventHub


def observe(
    app: Guild, *, thresholds: Thresholds | None = None, logs: bool = True, buffer: int = 1024
) -> Observability:
    """Install guild's instruments on ``app``, once; later calls return the same ones.

    Call it before ``app.run`` to see the workers start; :func:`serve_http`
    calls it too. Thresholds given to a later call replace the earlier ones.

    Args:
        thresholds: health thresholds (the monitor's window comes from them).
        logs: also add a :class:`LoggingInstrument`.
        buffer: messages an ``/events`` client may lag behind before it is dropped.
    """
    found = _installed.get(app)
    if found is not None:
        if thresholds is not None:
            found.monitor.set_thresholds(thresholds)
        return found
    present = {type(i): i for i in app.instruments}
    metrics = present.get(PrometheusInstrument)
    if not isinstance(metrics, PrometheusInstrument):
        # A weak reference: the registry below must not keep the app alive.
        ref = weakref.ref(app)
        metrics = PrometheusInstrument(app.name, active=lambda: _running(ref()))
        app.instruments.add(metrics)
    monitor = Monitor(metrics, thresholds)
    app.instruments.add(monitor)
    hub = EventHub(buffer=buffer)
    hub.attach(app.instruments)
    if logs and LoggingInstrument not in present:
        app.instruments.add(LoggingInstrument())
    for name, spec in app.specs.items():
        monitor.known(name, spec.queue)
    observability = Observability(metrics=metrics, monitor=monitor, hub=hub)
    _installed[app] = observability
    return observability


# Weak, so that observing an app does not keep it alive.
_installed: weakref.WeakKeyDictionary[Guild, Observability] = weakref.WeakKeyDictionary()


def _running(app: Guild | None) -> dict[str, int]:
    if app is None:
        return {}
    return {name: stats.running for name, stats in app.workers().items()}
