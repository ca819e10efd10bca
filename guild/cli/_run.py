"""``guild run TARGET``: run an app's workers until a signal says stop.

The first SIGINT, SIGTERM or SIGHUP (unless ignored, as under ``nohup``) drains
(stop claiming, let running jobs finish within their grace, hand the rest back);
a second one stops at once, still handing every held job back to the broker.
With ``--processes N`` this process becomes a process supervisor over N children
that each run the app: it checks the command line, spawns them at once, and
imports nothing of the app. Each child reports that it is ready (the banner's
facts) or why it cannot start (the error line it would print); the parent prints
the banner, or that one line and its exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import io
import json
import os
import shutil
import signal
import sys
import tempfile
from typing import TYPE_CHECKING, Any, TextIO

import attrs
import structlog
import trio

from .._errors import BrokerError, ConfigError, GaveUp, UnknownBrokerURL
from .._groups import unwrap
from ..brokers._url import broker_url_from_env, check_broker_url, display_url, open_broker
from ..config._layers import choose_env
from ..config._values import (
    ADDRESS,
    LOG_FORMATS,
    LOG_LEVELS,
    MAX_CONCURRENCY,
    MAX_PROCESSES,
    split_address,
)
from ..observability import Thresholds, configure_logging
from ..supervision._processes import INDEX_VARIABLE, StartFailed, StartupReport, drain_signals
from ._args import CommandFailed, UsageError, broker_url, host_port, integer, log_level, number
from ._config import add_env_flag
from ._output import EXIT_OK
from ._policy import add_policy_flags, policy_from
from ._startup import collector_held
from ._target import is_config_target

if TYPE_CHECKING:
    from .._app import Guild
    from ..config._schema import GuildConfig
    from ..rollout._machine import CanaryPolicy
    from ..supervision._supervisor import Supervisor
    from ._fleet import Ready

MAX_GRACE = 86_400.0

_HAND_BACK_TIMEOUT = 10.0

_log = structlog.get_logger("guild.cli")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run an app's workers",
        description="Run the workers of TARGET (module:attribute of a guild.Guild, or a guild.toml).",
    )
    parser.add_argument("target", help="module:attribute of a guild.Guild, or a guild.toml")
    parser.add_argument(
        "--broker",
        type=broker_url,
        help="broker URL (default: $GUILD_BROKER, else sqlite:guild.db)",
    )
    parser.add_argument(
        "--concurrency",
        type=integer(1, MAX_CONCURRENCY),
        help=f"handler tasks per worker (1 to {MAX_CONCURRENCY:,})",
    )
    parser.add_argument(
        "--processes",
        type=integer(1, MAX_PROCESSES),
        help=f"worker processes (default 1, at most {MAX_PROCESSES})",
    )
    parser.add_argument(
        "--grace",
        type=number(0, MAX_GRACE),
        default=30.0,
        help=f"seconds children get to drain (0 to {MAX_GRACE:g})",
    )
    parser.add_argument(
        "--http",
        nargs="?",
        const="127.0.0.1:8000",
        type=host_port,
        metavar="HOST:PORT",
        help="serve /health, /metrics and /events (default when given bare: 127.0.0.1:8000)",
    )
    parser.add_argument(
        "--log-level",
        type=log_level,
        metavar="LEVEL",
        help=f"lowest log level written: {', '.join(LOG_LEVELS)} (default: the file's, else info)",
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="JSON lines, console lines, or auto (console on a terminal; the default)",
    )
    add_env_flag(parser)
    parser.add_argument(
        "--json", action="store_true", help="the start-up banner and errors as JSON lines"
    )
    parser.add_argument(
        "--canary",
        action="store_true",
        help="serve as the canary of a rollout: take the share of each queue's new jobs"
        " the broker routes to its lane (see docs/rollout.md)",
    )
    add_policy_flags(parser, "canary-")
    # Set on the children of --processes N: the parent has printed the banner once.
    parser.add_argument("--no-banner", action="store_true", help=argparse.SUPPRESS)
    # Set on the children of --processes N with --http: serve on a private Unix
    # socket there (process-$GUILD_PROCESS_INDEX.sock); the parent serves --http.
    parser.add_argument("--http-socket-dir", help=argparse.SUPPRESS)
    parser.set_defaults(func=run)


def _check_token_variable() -> None:
    """Refuse a ``$GUILD_HTTP_TOKEN`` the server would refuse, before anything starts.

    Its value is never echoed: a secret does not belong in an error line.
    """
    # Here, not at the top: the access rules load only for a run that serves HTTP.
    from ..observability._access import TOKEN_VARIABLE, token_fault

    token = os.environ.get(TOKEN_VARIABLE)
    # Empty means unset, as serve_http reads it.
    fault = token_fault(token) if token else None
    if fault is not None:
        raise UsageError(f"${TOKEN_VARIABLE}: expected {fault}")


def _check_metrics_variable() -> None:
    """Refuse a ``$PROMETHEUS_MULTIPROC_DIR`` that is not a directory guild may write.

    prometheus-client writes every metric into it once the variable is set; the
    HTTP server would otherwise crash at its first metric, again at each restart.
    """
    from ..observability._multiprocess import ENV

    directory = os.environ.get(ENV)
    if not directory:  # empty or unset: prometheus-client keeps metrics in memory
        return
    if not os.path.isdir(directory):
        raise UsageError(f"${ENV}: expected an existing directory, got {directory!r}")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"${ENV}: expected a directory guild may write, got {directory!r}")


def parse_http(value: str, source: tuple[str, str] = ("--http", "http")) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) into its parts (:func:`split_address`).

    Args:
        source: where the value came from, as the error's (path, key).

    Raises:
        ConfigError: not of that form.
    """
    try:
        return split_address(value)
    except ValueError:
        raise ConfigError(*source, ADDRESS, value) from None


def run(args: argparse.Namespace) -> int:
    # Owed by a child of --processes N: its parent prints what it says, once.
    startup = StartupReport.from_environ()
    try:
        return _run(args, startup)
    except Exception as exc:
        if startup is None or not startup.pending:
            raise
        return _cannot_start(exc, startup, as_json=args.json)


def _cannot_start(exc: Exception, startup: StartupReport, *, as_json: bool) -> int:
    """Tell the parent, not stderr, the error line this child would print; its exit code."""
    # Here, not at the top: guild.cli imports this module.
    from . import report

    text = io.StringIO()
    with contextlib.redirect_stderr(text):
        code = report(exc, as_json=as_json)
    startup.failed({"exit_code": code, "stderr": text.getvalue()})
    return code


def _run(args: argparse.Namespace, startup: StartupReport | None) -> int:
    config: GuildConfig | None = None
    env_name, _ = choose_env(args.env, os.environ)
    if is_config_target(args.target):
        # Here, not at the top: a run of module:attribute reads no file.
        from ..config._load import load_config

        config = load_config(args.target, env_name)
    elif args.env is not None:
        raise UsageError("--env: a module:attribute TARGET has no [env.NAME]; give a guild.toml")
    # Logging first (the file may set it), then the app's import, which may log.
    level = args.log_level or (config.log_level if config else "info")
    log_format = args.log_format or (config.log_format if config else "auto")
    processes = args.processes or (config.processes if config else 1)
    # The parent of --processes N holds its lines until a child is ready: a run
    # that cannot start says why in one line, not how its children began.
    held = _HeldLines(sys.stderr) if processes > 1 else None
    try:
        configure_logging(
            json=None if log_format == "auto" else log_format == "json",
            level=level,
            stream=held,
        )
    except ValueError as exc:
        raise UsageError(f"--log-level: {exc}") from None
    thresholds = _thresholds(config)
    http: tuple[str, int] | None = None
    if args.http is not None:  # given empty, it is refused, not taken as unset
        http = parse_http(args.http)
    elif config is not None and config.http:
        http = parse_http(config.http, (config.path, "guild.http"))
    if http is not None and (config is None or config.http_token is None):
        _check_token_variable()
    if http is not None:
        _check_metrics_variable()
    url = broker_url_from_env(args.broker or (config.broker if config else None))
    # Every URL fault is a usage error now, before a child starts or a file is made.
    try:
        check_broker_url(url)
    except UnknownBrokerURL as exc:
        if args.broker is None and config is not None and config.broker is not None:
            expected = f"a broker URL ({exc.reason})"
            raise ConfigError(config.path, "guild.broker", expected, config.broker) from exc
        raise
    if processes > 1 and check_broker_url(url) == "memory":
        where = (
            f"--processes {processes}"
            if args.processes or config is None
            else f"{config.path}: guild.processes = {processes}"
        )
        raise UsageError(
            f"{where}: memory:// lives inside one process, so each of the"
            f" {processes} would have a broker of its own that no enqueue reaches;"
            " use sqlite:PATH or redis://HOST"
        )
    canary_policy = policy_from(args, "canary_", config)
    if held is not None:
        child = [
            sys.executable,
            "-m",
            "guild",
            "run",
            args.target,
            "--broker",
            url,
            "--processes",
            "1",
            "--no-banner",
        ]
        child += ["--log-level", level, "--log-format", log_format]
        if args.json:
            child.append("--json")  # the error a child reports is a JSON line then
        if config is not None and config.env is not None:
            child += ["--env", config.env]
        if args.concurrency is not None:
            child += ["--concurrency", str(args.concurrency)]
        child += _canary_flags(args)
        # Here, not at the top: only --processes N needs these.
        from ..observability._multiprocess import prepare_multiprocess
        from ._fleet import FleetHTTP, socket_dir, supervise_fleet

        sockets: str | None = None
        if http is not None:
            # The parent serves --http for the whole run (guild.cli._fleet); each
            # child serves its own endpoints on a private socket the parent asks.
            sockets = socket_dir()
            host = f"[{http[0]}]" if ":" in http[0] else http[0]  # IPv6 goes in brackets
            child += ["--http", f"{host}:{http[1]}", "--http-socket-dir", sockets]
        # Children share one metrics directory (prometheus multiprocess mode), so
        # the parent's /metrics sums every child's counts, dead ones' included.
        # The app's import and the broker are the children's to reach: a fault
        # in either is one error line all the same (their start-up reports).
        metrics_dir = tempfile.mkdtemp(prefix="guild-metrics-")
        env = {**os.environ, **prepare_multiprocess(metrics_dir)}
        fleet_http = None
        if http is not None:
            fleet_http = FleetHTTP(
                host=http[0],
                port=http[1],
                token=config.http_token if config else None,
                redact=config.http_redact if config else None,
                thresholds=thresholds,
            )
        supervise = functools.partial(
            supervise_fleet,
            grace=args.grace,
            env=env,
            url=url,
            on_killed=functools.partial(_hand_back_jobs, url),
            http=fleet_http,
            sockets=sockets,
            metrics_dir=metrics_dir,
            announce=functools.partial(_announce_fleet, args, processes, held),
        )
        try:
            return trio.run(supervise, child, processes)
        except StartFailed as failed:
            held.drop()
            return _start_failed(failed)
        finally:
            held.release()
            shutil.rmtree(metrics_dir, ignore_errors=True)
    # Here, not at the top: the parent of --processes N imports none of these.
    from ..rollout._serve import make_canary
    from ._target import app_of, import_app

    with collector_held():  # the app's import builds the runtime
        app = app_of(config) if config is not None else import_app(args.target)
    if args.concurrency is not None:
        for name in app.specs:
            app.configure(name, concurrency=args.concurrency)
    if args.canary:
        make_canary(app)  # before the banner, so it names the lanes served
    say = _Announcer(args, app, url, processes, startup)
    serve = functools.partial(
        _serve,
        http_token=config.http_token if config else None,
        http_redact=config.http_redact if config else None,
        http_socket=_child_socket(args),
        canary=args.canary,
        canary_policy=canary_policy,
    )
    return trio.run(serve, app, url, http, say, thresholds)


def _child_socket(args: argparse.Namespace) -> str | None:
    """Where a child of ``--processes N`` serves HTTP (None: not such a child)."""
    if args.http_socket_dir is None:
        return None
    index = os.environ.get(INDEX_VARIABLE, "0")
    return os.path.join(args.http_socket_dir, f"process-{index}.sock")


def _canary_flags(args: argparse.Namespace) -> list[str]:
    """The canary flags again, for the children of ``--processes N``."""
    flags = ["--canary"] if args.canary else []
    for name in ("stages", "soak", "error_rate", "p95", "min_jobs"):
        value = getattr(args, "canary_" + name)
        if value is not None:
            text = ",".join(map(repr, value)) if name == "stages" else str(value)
            flags += [f"--canary-{name.replace('_', '-')}", text]
    return flags


def _thresholds(config: GuildConfig | None) -> Thresholds | None:
    """The file's ``[health]`` over the default thresholds (``None``: no file, or no table)."""
    if config is None or not config.health:
        return None
    try:
        return Thresholds(**config.health)
    except ValueError as exc:  # a rule across keys, none of them wrong alone
        raise ConfigError(config.path, "health", f"valid thresholds ({exc})") from exc


def _start_failed(failed: StartFailed) -> int:
    """The error a child could not start with, as it would have printed it."""
    report = failed.report
    if (
        isinstance(report, dict)
        and isinstance(report.get("exit_code"), int)
        and isinstance(report.get("stderr"), str)
    ):
        sys.stderr.write(report["stderr"])
        sys.stderr.flush()
        code: int = report["exit_code"]
        return code
    raise CommandFailed(str(failed)) from None


@attrs.frozen
class _Announcer:
    """Prints the start-up banner and warnings once, human or JSON, on stderr; or, in
    a child of ``--processes N``, reports them to the parent, which prints them."""

    args: argparse.Namespace
    app: Guild
    url: str
    processes: int
    startup: StartupReport | None = None

    def started(self, http: tuple[str, int] | None) -> None:
        if self.args.no_banner and self.startup is None:
            return
        from ._banner import banner, unserved_schedules, unserved_warning

        facts = banner(
            self.app,
            broker=display_url(self.url),
            http=http,
            processes=self.processes,
            now=dt.datetime.now(dt.UTC),
        )
        warnings = [unserved_warning(entry) for entry in unserved_schedules(self.app)]
        if self.startup is not None:
            # Here, not at the top: the child's side of what _fleet reads.
            from ._fleet import Ready

            self.startup.ready(Ready(facts, tuple(warnings)).to_json())
        if not self.args.no_banner:
            _print_banner(facts, warnings, as_json=self.args.json)


def _announce_fleet(
    args: argparse.Namespace,
    processes: int,
    held: _HeldLines,
    ready: Ready,
    http: tuple[str, int] | None,
) -> None:
    """The parent's banner: the first ready child's, for the whole run; then its log lines."""
    # Here, not at the top: the banner's module loads the app's types, and the
    # parent of --processes N loads nothing of the kind before its children start.
    from ._banner import in_fleet

    if not args.no_banner:
        facts = in_fleet(ready.banner, processes=processes, http=http)
        _print_banner(facts, list(ready.warnings), as_json=args.json)
    held.release()


class _HeldLines(io.StringIO):
    """A log stream that keeps its lines until :meth:`release` (then writes them,
    and all that follow, to ``target``) or :meth:`drop` (then none are written)."""

    def __init__(self, target: TextIO) -> None:
        super().__init__()
        self._target = target
        self._released = False

    def isatty(self) -> bool:  # what the log format follows by default
        return self._target.isatty()

    def write(self, text: str) -> int:
        if self._released:
            return self._target.write(text)
        return super().write(text)

    def flush(self) -> None:
        if self._released:
            self._target.flush()

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._target.write(self.getvalue())
            self._target.flush()
            self.drop()

    def drop(self) -> None:
        self.seek(0)
        self.truncate()


def _print_banner(facts: dict[str, Any], warnings: list[str], *, as_json: bool) -> None:
    from ._banner import render

    if as_json:
        print(json.dumps(facts, sort_keys=True), file=sys.stderr)
        for warning in warnings:
            print(json.dumps({"warning": warning}), file=sys.stderr)
    else:
        print(render(facts), file=sys.stderr)
        for warning in warnings:
            print(f"guild: warning: {warning}", file=sys.stderr)
    sys.stderr.flush()


async def _hand_back_jobs(url: str, pid: int) -> None:
    """Give back at once, uncounted, every job child ``pid`` held when it was killed
    after its grace: the kill was ours, not the jobs' fault, and their leases would
    keep them waiting (and count their runs)."""
    from .._worker import consumer_prefix

    prefix = consumer_prefix(pid)
    count: int | None = None
    with trio.move_on_after(_HAND_BACK_TIMEOUT):
        try:
            async with open_broker(url) as broker:
                count = await broker.release_consumers(prefix)
        except BrokerError as exc:
            # Their leases still bring the jobs back.
            _log.warning("hand_back_failed", pid=pid, error=str(exc))
            return
    if count is None:
        _log.warning("hand_back_failed", pid=pid, error="the broker did not answer in time")
    else:
        _log.info("jobs_handed_back", pid=pid, consumers=prefix, count=count)


async def _serve(
    app: Guild,
    url: str,
    http: tuple[str, int] | None,
    say: _Announcer,
    thresholds: Thresholds | None = None,
    *,
    http_token: str | None = None,
    http_redact: bool | None = None,
    http_socket: str | None = None,
    canary: bool = False,
    canary_policy: CanaryPolicy | None = None,
) -> int:
    from ..observability._observe import observe
    from ..rollout._serve import run_app

    stop = trio.Event()
    observe(app, thresholds=thresholds)
    # Connected before the banner: an unreachable broker is the one error line,
    # not a banner that claims a broker and then a crash.
    # The run's system tasks (HTTP server, rollout recorder, canary controller)
    # are children of the services supervisor, left last: a crash in one is
    # restarted there, not the end of every worker, and /health answers until
    # the workers have drained.
    async with (
        open_broker(url, retention=app.retention) as broker,
        app.open_services() as services,
        trio.open_nursery() as nursery,
    ):
        # Started (not start_soon): a signal from here on drains, none is missed.
        await nursery.start(_watch_signals, stop, nursery.cancel_scope)
        if http is not None:
            bound = await _listen(services, app, *http, http_token, http_redact, http_socket)
            http = (http[0], bound)
        say.started(http)
        try:
            # A supervisor that gives up raises GaveUp, perhaps in a group: unwrapped
            # here, it ends the command as one line and exit code 1 (guild.cli.main).
            with unwrap(GaveUp):
                # Outcomes are recorded for rollouts; a canary also drives them.
                await run_app(
                    app, broker, stop, canary=canary, policy=canary_policy, services=services
                )
        finally:
            nursery.cancel_scope.cancel(reason="app stopped")
    _log.info("stopped", app=app.name)
    return EXIT_OK


async def _listen(
    services: Supervisor,
    app: Guild,
    host: str,
    port: int,
    token: str | None = None,
    redact: bool | None = None,
    path: str | None = None,
) -> int:
    """Start the HTTP endpoints; a host or port that cannot be bound is a usage error.

    With ``path`` (a child of ``--processes N``) they listen on that Unix socket,
    judging access as ``host`` would be judged; the parent serves ``host:port``.
    """
    # Here, not at the top: the server's module (the dashboard, prometheus-client)
    # is loaded only by a run that serves HTTP.
    from ..observability._http import serve_http
    from ..supervision._supervisor import ChildSpec

    async def serve(*, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        # Reads `port` when it starts: a restart binds the port the banner named.
        await serve_http(
            app,
            host=host,
            port=port,
            token=token,
            redact_errors=redact,
            path=path,
            task_status=task_status,
        )

    try:
        with unwrap(OSError):
            bound: int = await services.start_child(ChildSpec(name="http", start=serve))
    except OSError as exc:
        raise UsageError(f"--http {host}:{port}: cannot listen ({exc})") from None
    port = bound
    _log.info("http_listening", host=host, port=bound)
    return bound


async def _watch_signals(
    stop: trio.Event,
    scope: trio.CancelScope,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    with trio.open_signal_receiver(*drain_signals()) as signals:
        task_status.started()
        async for signum in signals:
            if not stop.is_set():
                _log.info("draining", signal=signal.Signals(signum).name)
                stop.set()
            else:
                _log.warning("stopping_now", signal=signal.Signals(signum).name)
                scope.cancel(reason=f"second {signal.Signals(signum).name}")
