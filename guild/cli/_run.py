"""``guild run TARGET``: run an app's workers until a signal says stop.

The first SIGINT or SIGTERM drains (stop claiming, let running jobs finish within
their grace, hand the rest back); a second one stops at once, still handing
every held job back to the broker. With ``--processes N`` this process becomes a
process supervisor over N children that each run the app.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import signal
import sys
import tempfile
from typing import Any

import structlog
import trio

from .._app import Guild
from .._errors import ConfigError, GaveUp
from ..brokers._url import broker_url_from_env, sqlite_path
from ..observability import configure_logging, observe, serve_http
from ..observability._multiprocess import prepare_multiprocess
from ..supervision import supervise_processes
from ._output import EXIT_FAILED, EXIT_OK, error
from ._target import load_target

_log = structlog.get_logger("guild.cli")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run an app's workers",
        description="Run the workers of TARGET (module:attribute of a guild.Guild, or a guild.toml).",
    )
    parser.add_argument("target", help="module:attribute of a guild.Guild, or a guild.toml")
    parser.add_argument(
        "--broker", help="broker URL (default: $GUILD_BROKER, else sqlite:guild.db)"
    )
    parser.add_argument("--concurrency", type=int, help="handler tasks per worker")
    parser.add_argument("--processes", type=int, help="worker processes (default 1)")
    parser.add_argument("--grace", type=float, default=30.0, help="seconds children get to drain")
    parser.add_argument(
        "--http",
        nargs="?",
        const="127.0.0.1:8000",
        metavar="HOST:PORT",
        help="serve /health, /metrics and /events (default when given bare: 127.0.0.1:8000)",
    )
    parser.add_argument("--log-level", default="info", help="lowest log level written")
    parser.add_argument(
        "--log-format",
        choices=("auto", "json", "console"),
        default="auto",
        help="JSON lines, console lines, or auto (console on a terminal)",
    )
    parser.set_defaults(func=run)


def parse_http(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) into its parts.

    Raises:
        ConfigError: not of that form.
    """
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError("--http", "http", '"HOST:PORT" with a port from 0 to 65535', value)
    return host, int(port)


def run(args: argparse.Namespace) -> int:
    try:
        configure_logging(
            json=None if args.log_format == "auto" else args.log_format == "json",
            level=args.log_level,
        )
    except ValueError as exc:
        return error(f"--log-level: {exc}")
    app, config = load_target(args.target)
    http_value = args.http or (config.http if config else None)
    http = parse_http(http_value) if http_value else None
    url = broker_url_from_env(args.broker or (config.broker if config else None))
    if url.startswith("sqlite:"):
        sqlite_path(url)  # a missing directory is a usage error now, not a crash later
    if args.concurrency is not None:
        if args.concurrency < 1:
            return error(f"--concurrency must be at least 1, got {args.concurrency}")
        for name in app.specs:
            app.configure(name, concurrency=args.concurrency)
    processes = args.processes or (config.processes if config else 1)
    if processes < 1:
        return error(f"--processes must be at least 1, got {processes}")
    if processes > 1:
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
        ]
        child += ["--log-level", args.log_level, "--log-format", args.log_format]
        if args.concurrency is not None:
            child += ["--concurrency", str(args.concurrency)]
        if http is not None:
            # Every child binds the same port (SO_REUSEPORT); the kernel spreads the
            # scrapes and each answers with every process's metrics.
            child += ["--http", f"{http[0]}:{http[1]}"]
        # Children share one metrics directory (prometheus multiprocess mode), so
        # whichever child answers a scrape reports every child's counts.
        metrics_dir = tempfile.mkdtemp(prefix="guild-metrics-")
        env = {**os.environ, **prepare_multiprocess(metrics_dir)}
        try:
            return trio.run(_supervise_children, child, processes, args.grace, env)
        finally:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return trio.run(_serve, app, url, http)


async def _supervise_children(
    child: list[str], processes: int, grace: float, env: dict[str, str]
) -> int:
    return await supervise_processes(child, processes, grace=grace, env=env)


async def _serve(app: Guild, url: str, http: tuple[str, int] | None) -> int:
    stop = trio.Event()
    observe(app)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_watch_signals, stop, nursery.cancel_scope)
        if http is not None:
            port = await nursery.start(
                functools.partial(serve_http, app, host=http[0], port=http[1])
            )
            _log.info("http_listening", host=http[0], port=port)
        try:
            await app.run(url, shutdown_trigger=stop.wait)
        except GaveUp as exc:
            _log.error("gave_up", app=app.name, error=str(exc))
            return EXIT_FAILED
        finally:
            nursery.cancel_scope.cancel(reason="app stopped")
    _log.info("stopped", app=app.name)
    return EXIT_OK


async def _watch_signals(stop: trio.Event, scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            if not stop.is_set():
                _log.info("draining", signal=signal.Signals(signum).name)
                stop.set()
            else:
                _log.warning("stopping_now", signal=signal.Signals(signum).name)
                scope.cancel(reason=f"second {signal.Signals(signum).name}")
