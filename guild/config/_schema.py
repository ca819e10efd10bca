"""The shape of ``guild.toml``, as attrs classes.

::

    [guild]
    app = "myproject.jobs:app"      # module:attribute naming a guild.Guild
    broker = "sqlite:guild.db"      # optional; else --broker, $GUILD_BROKER
    processes = 1                   # worker processes under the process supervisor
    http = "127.0.0.1:8000"         # optional: the dashboard, /health, /metrics, /events
    http_token = "…"                # needed off loopback (better: $GUILD_HTTP_TOKEN)
    http_redact = false             # /health hides exception messages
    loop_stall = 5.0                # seconds the event loop may block before a loop_stalled warning (false: off)

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

    [workers.emails.limit]          # the worker's guild.Limit (its key function stays in code)
    rate = "10/s"                   # per key: "<count>/<period>", e.g. "600/min", "5/10s"
    concurrency = 2                 # per key: jobs running at once, in every process
    burst = 5                       # admissions at once after an idle spell
    max_idle_keys = 10000           # idle keys' limiters kept per process

    [health]                        # guild.observability.Thresholds of /health
    error_rate = 0.01
    p95_latency = 5.0

    [sandbox]                       # the SandboxPolicy of every sandbox the workers hold
    isolate = "kernel"              # auto | bwrap | kernel | never
    allow = ["python3"]
    memory = 536870912

    [retention]                     # guild.Retention: how long finished jobs are kept
    results = 3600                  # seconds a result can be read
    done = 86400                    # seconds a done or cancelled job's record is kept
    dead = 604800                   # seconds a dead letter is kept ("forever" keeps it)
    keep_payload = false            # keep a done job's payload

    [canary]                        # guild.CanaryPolicy of guild run --canary, guild canary start
    stages = [0.05, 0.25, 1.0]      # the canary's share at each stage: rising, ending at 1
    soak = 300                      # seconds a stage holds, within bounds, before the next
    error_rate = 0.02               # how far the canary's error rate may exceed the stable's
    p95 = 2.5                       # seconds the canary's p95 may reach when slower than stable
    min_jobs = 50                   # canary outcomes a stage needs before it is judged

    [periodic.cleanup]              # Guild.periodic(schedule, queue, payload, name=...)
    schedule = "0 3 * * *"          # cron or seconds
    tz = "Europe/Paris"             # the cron's time zone (default UTC)
    queue = "cleanup"

    [env.production]                # laid over the rest by --env / $GUILD_ENV
    guild.processes = 8
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from .._exports import publish
from ._values import ADDRESS as ADDRESS
from ._values import CANARY_MAX_MIN_JOBS as CANARY_MAX_MIN_JOBS
from ._values import CANARY_MAX_P95 as CANARY_MAX_P95
from ._values import CANARY_MAX_SOAK as CANARY_MAX_SOAK
from ._values import CANARY_OPTIONS as CANARY_OPTIONS
from ._values import LOG_FORMATS as LOG_FORMATS
from ._values import LOG_LEVELS as LOG_LEVELS
from ._values import MAX_CONCURRENCY as MAX_CONCURRENCY
from ._values import MAX_PROCESSES as MAX_PROCESSES
from ._values import split_address as split_address

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

LIMIT_OPTIONS = ("rate", "concurrency", "burst", "max_idle_keys")
"""Keys of a ``[workers.NAME.limit]`` table (``rate`` a string, the rest integers > 0)."""

STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")

HEALTH_OPTIONS: dict[str, tuple[type, ...]] = {
    "error_rate": (int, float),
    "p95_latency": (int, float),
    "memory": (int, float),
    "queue_length": (int,),
    "stall": (int, float),
    "window": (int, float),
    "min_jobs": (int,),
}
"""Keys of ``[health]``: the fields of ``guild.observability.Thresholds``."""

HEALTH_FRACTIONS = ("error_rate", "memory")
"""Health keys that are fractions from 0 to 1, not counts or seconds."""

SANDBOX_NUMBERS: dict[str, tuple[type, ...]] = {
    "cpu_seconds": (int,),
    "address_space": (int,),
    "file_size": (int,),
    "open_files": (int,),
    "processes": (int,),
    "output_cap": (int,),
    "memory": (int,),
    "run_cpu_seconds": (int,),
    "tmpfs_size": (int,),
    "tmpfs_inodes": (int,),
    "disk_bytes": (int,),
    "disk_inodes": (int,),
    "max_timeout": (int, float),
    "kill_grace": (int, float),
}
"""Budgets of ``[sandbox]``: fields of ``guild.SandboxPolicy``, each > 0."""

SANDBOX_LISTS = ("allow", "inline_code", "pass_env")
"""``[sandbox]`` keys that are arrays of strings."""

ISOLATE_MODES = ("auto", "bwrap", "kernel", "never")

RETENTION_SECONDS = ("results", "done", "dead")
"""``[retention]`` keys in seconds (``dead`` also takes ``"forever"``); ``keep_payload``
is a boolean."""

PERIODIC_OPTIONS = ("schedule", "tz", "queue", "payload")
"""Keys of a ``[periodic.NAME]`` table (``Guild.periodic``'s arguments)."""


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
        http_token: the token the dashboard, ``/events`` and the HTTP actions
            need when ``http`` is not a loopback address (``None``: ``$GUILD_HTTP_TOKEN``).
        http_redact: ``/health`` hides exception messages (``None``:
            ``$GUILD_HTTP_REDACT``).
        loop_stall: ``Guild(loop_stall=...)``, seconds the Trio loop may go
            without running before a ``loop_stalled`` warning (``False``: no
            watchdog; ``None``: the app's own setting).
        supervisor: the app supervisor's options.
        workers: per-worker option overrides, by worker name; ``limit`` (if
            given) maps to changes of the worker's :class:`guild.Limit`.
        env: the ``[env.NAME]`` section laid over the file, or ``None``.
        log_level, log_format: as ``guild run --log-level`` / ``--log-format``.
        health: changes to the default ``Thresholds`` of ``/health``.
        sandbox: changes to the ``SandboxPolicy`` of every sandbox the app's
            workers hold.
        periodic: periodic jobs by name: ``schedule`` (a cron string or
            seconds), ``tz`` (the cron's IANA time zone), ``queue`` and
            ``payload``; a name the app schedules in code has the keys given
            replaced.
        retention: changes to the app's :class:`guild.Retention` (``dead`` ``None``
            for ``"forever"``).
        canary: changes to the default :class:`guild.CanaryPolicy` of
            ``guild run --canary`` and ``guild canary start`` (their flags win).
    """

    path: str
    app: str
    broker: str | None = None
    processes: int = 1
    http: str | None = None
    http_token: str | None = None
    http_redact: bool | None = None
    loop_stall: float | Literal[False] | None = None
    supervisor: SupervisorConfig = attrs.Factory(SupervisorConfig)
    workers: dict[str, dict[str, Any]] = attrs.Factory(dict)
    env: str | None = None
    log_level: str = "info"
    log_format: str = "auto"
    health: dict[str, Any] = attrs.Factory(dict)
    sandbox: dict[str, Any] = attrs.Factory(dict)
    periodic: dict[str, dict[str, Any]] = attrs.Factory(dict)
    retention: dict[str, Any] = attrs.Factory(dict)
    canary: dict[str, Any] = attrs.Factory(dict)


# Reprs, tracebacks and pickles name guild.X (see guild._exports).
publish(globals())
