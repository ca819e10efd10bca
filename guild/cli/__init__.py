"""The ``guild`` command: one module per subcommand, each with ``register(subparsers)``."""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Sequence

import trio

from .._errors import BrokerError, ConfigError
from .._version import __version__
from . import _dlq, _enqueue, _run, _stats, _status, _top
from ._output import error

COMMANDS = (_run, _enqueue, _stats, _dlq, _status, _top)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="guild", description="guild: a Trio-native runtime for background work."
    )
    root.add_argument("--version", action="version", version=f"guild {__version__}")
    subparsers = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(subparsers)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``guild`` command; returns the exit code."""
    args = parser().parse_args(argv)
    try:
        if inspect.iscoroutinefunction(args.func):
            code: int = trio.run(args.func, args)
        else:
            code = args.func(args)
    except (ConfigError, BrokerError) as exc:
        return error(str(exc))
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
