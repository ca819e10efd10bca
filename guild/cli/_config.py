"""``guild config show FILE``: the settings in force and where each value came from."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from ..config._values import (
    CANARY_OPTIONS,
    LOG_FORMATS,
    MAX_CONCURRENCY,
    MAX_PROCESSES,
)
from ._args import broker_url, host_port, integer, log_level, non_empty
from ._output import EXIT_OK
from ._policy import add_policy_flags

DEFAULT_FILE = "guild.toml"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "config",
        help="inspect a guild.toml",
        description="Inspect a guild.toml.",
    )
    commands = parser.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    show = commands.add_parser(
        "show",
        help="print the configuration in force and where each value came from",
        description=(
            "Print the configuration `guild run FILE` would use, and where each value "
            "came from: default, file, env (an [env.NAME] section), environment "
            "(a GUILD_* variable) or flag."
        ),
    )
    show.add_argument(
        "file", nargs="?", default=DEFAULT_FILE, help=f"the guild.toml (default: {DEFAULT_FILE})"
    )
    add_env_flag(show)
    # The flags of `guild run` that override the file, so an operator can see
    # what a given command line would run with.
    show.add_argument("--broker", type=broker_url, help="as guild run --broker")
    show.add_argument(
        "--processes", type=integer(1, MAX_PROCESSES), help="as guild run --processes"
    )
    show.add_argument(
        "--concurrency", type=integer(1, MAX_CONCURRENCY), help="as guild run --concurrency"
    )
    show.add_argument("--http", type=host_port, metavar="HOST:PORT", help="as guild run --http")
    show.add_argument(
        "--log-level", type=log_level, metavar="LEVEL", help="as guild run --log-level"
    )
    show.add_argument("--log-format", choices=LOG_FORMATS, help="as guild run --log-format")
    add_policy_flags(show, "canary-")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=show_config)


def add_env_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--env",
        type=non_empty("an environment name"),
        metavar="NAME",
        help="lay the file's [env.NAME] section over it (default: $GUILD_ENV)",
    )


def run_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The overriding flags of ``guild run`` (or ``config show``) as given."""
    return {
        "--broker": args.broker,
        "--processes": args.processes,
        "--concurrency": args.concurrency,
        "--http": args.http,
        "--log-level": args.log_level,
        "--log-format": args.log_format,
        **{
            f"--canary-{name.replace('_', '-')}": getattr(args, f"canary_{name}")
            for name in CANARY_OPTIONS
        },
    }


def show_config(args: argparse.Namespace) -> int:
    # Here, not at the top: `guild run` takes --env from this module, and a run
    # of module:attribute reads no file.
    from ..config._effective import effective

    found = effective(args.file, env=args.env, flags=run_flags(args), environ=os.environ)
    if args.json:
        print(json.dumps(found.to_json(), indent=2))
    else:
        print(found.render())
    return EXIT_OK
