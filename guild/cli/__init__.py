"""The ``guild`` command: one module per subcommand, each with ``register(subparsers)``.

The error contract lives here, in one handler around every command: exit 0 when
the command did its work, 1 when the work itself failed (a supervisor gave up, a
dead job is not there), 2 when the input was wrong or the broker cannot be
reached. Every error is one line on stderr, ``guild: error: …`` (a JSON object
with ``--json``), never a traceback; ``GUILD_DEBUG=1`` adds the traceback.
"""

from __future__ import annotations

from ._startup import collector_held

# Most of a command's start-up is this package's imports (trio, structlog).
with collector_held():
    import importlib
    import inspect
    import io
    import json
    import os
    import select
    import sys
    import traceback
    from collections.abc import Sequence

    import trio

    from .._errors import GaveUp, GuildError
    from .._groups import leaves
    from .._version import __version__
    from ..observability import configure_logging
    from ._args import CommandFailed, Parser, UsageError, wants_json
    from ._output import EXIT_FAILED, EXIT_USAGE

COMMANDS = {
    "run": "._run",
    "enqueue": "._enqueue",
    "result": "._result",
    "job": "._job",
    "stats": "._stats",
    "dlq": "._dlq",
    "purge": "._purge",
    "workflow": "._workflow",
    "status": "._status",
    "top": "._top",
    "config": "._config",
    "migrate": "._migrate",
    "canary": "._canary",
}
"""Each command's name and the module that registers it, in ``--help``'s order."""
EXIT_INTERRUPTED = 130


def parser(only: str | None = None) -> Parser:
    """The ``guild`` parser: every command, or just ``only`` (with its options).

    Each command's module loads only to register it, so ``guild run`` does not
    pay at start-up for the imports of ``guild canary`` or ``guild workflow``.
    """
    root = Parser(prog="guild", description="guild: a Trio-native runtime for background work.")
    root.add_argument("--version", action="version", version=f"guild {__version__}")
    subparsers = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    names = [only] if only in COMMANDS else list(COMMANDS)
    for name in names:
        importlib.import_module(COMMANDS[name], __name__).register(subparsers)
    return root


def _command_of(arguments: Sequence[str]) -> str | None:
    """The command named on the line, if it is the first word that is not an option.

    The root takes only ``--help`` and ``--version``, neither with a value, so
    the first other word is the command; anything else builds the whole parser,
    whose help and errors name every command.
    """
    for word in arguments:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``guild`` command; returns the exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    _steady_streams()
    try:
        _check_utf8(arguments)
        with collector_held():  # the command's module and what it imports
            args = parser(_command_of(arguments)).parse_args(arguments)
        # stdout carries a command's answer (and its --json); a broker's warnings
        # go to stderr. `guild run` sets its own level and format when it starts.
        configure_logging(level="warning")
        if inspect.iscoroutinefunction(args.func):
            code: int = trio.run(args.func, args)
        else:
            code = args.func(args)
    except SystemExit:
        raise  # --help, --version
    except BaseException as exc:  # the one place every error becomes one line
        found = leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
        # Ctrl-C, perhaps wrapped by a nursery it crossed.
        if any(isinstance(leaf, KeyboardInterrupt) for leaf in found):
            return EXIT_INTERRUPTED
        if not isinstance(exc, Exception | BaseExceptionGroup):
            raise
        if any(isinstance(leaf, BrokenPipeError) for leaf in found) and _stdout_gone():
            exc = CommandFailed("stdout was closed before all of the output was written")
        return report(exc, as_json=wants_json(arguments))
    return code


def _steady_streams() -> None:
    """Point a closed stdin, stdout or stderr (``guild run … 2>&-``) at /dev/null,
    and make stderr drop what it cannot write.

    Python leaves ``sys.stderr`` as None for a closed descriptor, and every write
    to it fails; worse, the next file opened (a SQLite database, a socket) would
    take descriptor 2 and log lines would be written into it. A stderr whose
    reader has gone (``2>&1 | head -1``, a hung-up terminal) fails each write with
    EPIPE or EIO: a log line or the banner would then end ``guild run`` (and each
    child of ``--processes N`` it restarts) while it drains. The children inherit
    the /dev/null, not the hole.
    """
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:  # taken in order, the lowest free descriptor is fd itself
                os.dup2(null, fd)
                os.close(null)
            stream = open(fd, mode, closefd=False, encoding="utf-8", errors="replace")  # noqa: SIM115
            setattr(sys, name, stream)
            setattr(sys, f"__{name}__", stream)
    # Only the process's own stderr: a test's captured one is left alone.
    own = sys.__stderr__
    if own is not None and sys.stderr is own and not isinstance(own, _ForgivingStderr):
        own.flush()
        sys.stderr = _ForgivingStderr(
            open(2, "wb", closefd=False),  # noqa: SIM115
            encoding=own.encoding,
            errors="backslashreplace",
            line_buffering=True,
        )


class _ForgivingStderr(io.TextIOWrapper):
    """stderr that, once a write fails (its reader gone), sends the rest to /dev/null:
    there is nobody left to read an error about it."""

    def write(self, text: str) -> int:
        try:
            return super().write(text)
        except OSError:
            self._drop()
            return len(text)

    def flush(self) -> None:
        try:
            super().flush()
        except OSError:
            self._drop()

    def _drop(self) -> None:
        # The buffered bytes still owed go to /dev/null at the next flush.
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, self.fileno())
        finally:
            os.close(null)
        super().flush()


def _check_utf8(arguments: Sequence[str]) -> None:
    """Refuse an argument that is not UTF-8 text, naming it.

    Python hands undecodable bytes over as lone surrogates, which no broker can
    store and no output can print: refused here, each command never sees one.
    """
    for place, word in enumerate(arguments, 1):
        try:
            word.encode("utf-8")
        except UnicodeEncodeError:
            raw = word.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            raise UsageError(f"argument {place}, '{raw}': expected UTF-8 text") from None


def _stdout_gone() -> bool:
    """Whether stdout is a pipe whose reader has left (``guild dlq list | head -1``).

    If so, stdout is pointed at /dev/null, so that the flush at exit does not fail
    a second time. A broken pipe elsewhere (a socket) leaves stdout as it is.
    """
    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, 0)  # POLLERR is reported whatever the mask
        gone = any(events & select.POLLERR for _, events in poller.poll(0))
        if gone:
            os.dup2(os.open(os.devnull, os.O_WRONLY), fd)
    except (AttributeError, OSError, ValueError):  # no stdout, or not a file
        return False
    return gone


def classify(exc: BaseException) -> tuple[int, str, str]:
    """The exit code, one-line message and type name of an error that ended a command.

    Guild's own errors are the user's to fix (exit 2), except a supervisor that gave
    up (exit 1). An exception group (trio's nurseries wrap what leaves them) is
    judged by its leaves. Anything else is a fault in guild or the app: exit 1.
    """
    found = leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    unique = list(dict.fromkeys(_one_line(leaf) for leaf in found))
    message = "; ".join(unique)
    failed = [leaf for leaf in found if isinstance(leaf, GaveUp | CommandFailed)]
    if failed:
        return EXIT_FAILED, message, type(failed[0]).__name__
    unexpected = [leaf for leaf in found if not isinstance(leaf, GuildError)]
    if not unexpected:
        return EXIT_USAGE, message, type(found[0]).__name__
    name = type(unexpected[0]).__name__
    detail = f"unexpected {name}: {_one_line(unexpected[0])}"
    return EXIT_FAILED, detail + " (GUILD_DEBUG=1 shows the traceback)", name


LONG_WORD = 200
"""A word of an error line longer than this (an argument pasted by mistake, a
100,000-digit number) is shown by its ends, so the line stays readable."""


LONG_LINE = 2_000
"""An error line longer than this (a list of 30,000 stages echoed back, a long
array of a guild.toml) keeps its start and end: the words that name what was
wrong come first, and the end says where to look."""


def _one_line(exc: BaseException) -> str:
    # A message may hold newlines (a SyntaxError's, a nested error's): the contract
    # is one line, so whitespace runs collapse to one space.
    line = " ".join(_cut(word) for word in str(exc).split()) or type(exc).__name__
    if len(line) <= LONG_LINE:
        return line
    return f"{line[:1_500]}...[{len(line) - 1_800:,} more characters]...{line[-300:]}"


def _cut(word: str) -> str:
    if len(word) <= LONG_WORD:
        return word
    return f"{word[:80]}...[{len(word) - 100:,} more characters]...{word[-20:]}"


def report(exc: BaseException, *, as_json: bool = False) -> int:
    """Print ``exc`` as the one error line on stderr; return its exit code."""
    code, message, name = classify(exc)
    if os.environ.get("GUILD_DEBUG"):
        traceback.print_exception(exc, file=sys.stderr)
    if as_json:
        line = json.dumps({"error": message, "type": name, "exit_code": code})
        print(line, file=sys.stderr)
    else:
        print(f"guild: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
