"""How commands talk: human text by default, JSON with ``--json``.

Errors are printed in one place, ``guild.cli.report``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

import attrs

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def to_jsonable(value: Any) -> Any:
    if attrs.has(type(value)):
        return {k: to_jsonable(v) for k, v in attrs.asdict(value, recurse=False).items()}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "value") and hasattr(value, "name"):  # enums
        return value.value
    return value


def print_json(value: Any) -> None:
    print(json.dumps(to_jsonable(value), ensure_ascii=False, sort_keys=True))


def failure(exc: BaseException) -> str:
    """``Type: message`` of an error, with the message of its cause when its own is
    empty (trio-websocket's HandshakeError says nothing; its cause says why)."""
    reason = str(exc).strip()
    cause = exc.__cause__ or exc.__context__
    if not reason and cause is not None:
        reason = f"{type(cause).__name__}: {cause}"
    return f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__


MAX_CELL = 200
"""The most characters of a table cell shown (the longest new queue name): a
name stored before names had a limit would widen every row to its length.
``--json`` shows it whole."""


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain aligned text table (first column left, the rest right-aligned;
    a cell over :data:`MAX_CELL` characters cut, ending in ``...``)."""
    cells = [list(map(str, headers))] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [
            row[i].ljust(widths[i]) if i == 0 else row[i].rjust(widths[i])
            for i in range(len(headers))
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def _cell(value: object) -> str:
    text = str(value)
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 3] + "..."


class Progress:
    """A one-line progress counter on a terminal; silent when stderr is not one."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.count = 0

    def advance(self, by: int) -> None:
        self.count += by
        if self.enabled:
            self.stream.write(f"\r{self.label}: {self.count:,}")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


@contextmanager
def progress(label: str) -> Iterator[Progress]:
    bar = Progress(label)
    try:
        yield bar
    finally:
        bar.close()
