"""The shape of ``guild.toml``, as attrs classes.

::

    [guild]
    app = "myproject.jobs:app"      # module:attribute naming a guild.Guild
    broker = "sqlite:guild.db"      # optional; else --broker, $GUILD_BROKER
    processes = 1                   # worker processes under the process supervisor
    http = "127.0.0.1:8000"         # optional: /health, /metrics, /events

    [supervisor]
    strategy = "one_for_one"        # one_for_one | one_for_all | rest_for_one
    max_restarts = 5                # each key left out keeps the app's own setting
    period = 30.0

    [workers.emails]                # per worker (by name): overrides of @app.worker options
    concurrency = 16
    timeout = 30.0
    max_attempts = 5
    lease = 10.0
    graceful_timeout = 30.0
"""

from __future__ import annotations

from typing import Any

import attrs

WORKER_OPTIONS: dict[str, tuple[type, ...]] = {
    "concurrency": (int,),
    "prefetch": (int,),
    "timeout": (int, float),
    "max_attempts": (int,),
    "lease": (int, float),
    "claim_wait": (int, float),
    "graceful_timeout": (int, float),
    "dependency_threshold": (int,),
    "stall_timeout": (int, float),
}
"""Worker options a config file may set, and the TOML types each accepts."""

STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")


@attrs.frozen(kw_only=True)
class SupervisorConfig:
    """The ``[supervisor]`` table; ``None``: the app's own setting stands."""

    strategy: str | None = None
    max_restarts: int | None = None
    period: float | None = None


@attrs.frozen(kw_only=True)
class GuildConfig:
    """A loaded ``guild.toml``.

    Attributes:
        path: the file it came from.
        app: ``module:attribute`` of the :class:`guild.Guild` to run.
        broker: broker URL, or ``None`` to use the command line / environment.
        processes: worker processes to run.
        http: ``host:port`` for the HTTP endpoints, or ``None``.
        supervisor: the app supervisor's options.
        workers: per-worker option overrides, by worker name.
    """

    path: str
    app: str
    broker: str | None = None
    processes: int = 1
    http: str | None = None
    supervisor: SupervisorConfig = attrs.Factory(SupervisorConfig)
    workers: dict[str, dict[str, Any]] = attrs.Factory(dict)
