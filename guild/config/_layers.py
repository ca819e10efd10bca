"""Layers of settings, pure: base file, ``[env.NAME]`` overlay, environment, flags.

Each layer is a nested dict as TOML gives it. An environment section overlays the
base table by table: a table it names is merged key by key (a key it leaves out
keeps the base value), anything else (a number, a string, an array, an opaque
value such as a periodic job's payload) replaces the base value whole. Every leaf
of the result remembers which layer gave it, so ``guild config show`` can say
where each value came from and an error can name the key as written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs

SOURCES = ("default", "file", "env", "environment", "flag")
"""Where a value can come from, lowest precedence first (see docs/configuration.md:
the broker is the exception, ``$GUILD_BROKER`` filling in only below the file)."""


@attrs.frozen
class Origin:
    """Where one setting's value came from.

    Attributes:
        source: one of :data:`SOURCES`.
        where: the file path, ``env.NAME`` (the section), the variable's name
            (``GUILD_BROKER``) or the flag (``--broker``); empty for a default.
    """

    source: str = attrs.field(validator=attrs.validators.in_(SOURCES))
    where: str = ""

    def describe(self) -> str:
        """Short, for ``guild config show``: ``default``, ``file``, ``[env.NAME]``,
        ``$GUILD_BROKER`` or ``--broker``."""
        if self.source == "env":
            return f"[{self.where}]"
        if self.source == "environment":
            return f"${self.where}"
        if self.source == "flag":
            return self.where
        return self.source


ENV_VARIABLE = "GUILD_ENV"


def choose_env(flag: str | None, environ: Mapping[str, str]) -> tuple[str | None, Origin | None]:
    """The environment asked for: ``--env`` wins over ``$GUILD_ENV`` (an empty one is unset)."""
    if flag is not None:
        return flag, Origin("flag", "--env")
    named = environ.get(ENV_VARIABLE, "")
    if named:
        return named, Origin("environment", ENV_VARIABLE)
    return None, None


def is_opaque(path: tuple[str, ...]) -> bool:
    """Whether the value at ``path`` is one value even when it is a table: a
    periodic job's payload is JSON handed to the job, never merged key by key."""
    return len(path) == 3 and path[0] == "periodic" and path[2] == "payload"


def overlay(
    base: Mapping[str, Any],
    top: Mapping[str, Any],
    opaque: Callable[[tuple[str, ...]], bool] = is_opaque,
    _path: tuple[str, ...] = (),
) -> dict[str, Any]:
    """``base`` with ``top`` laid over it (neither is changed)."""
    merged = dict(base)
    for key, value in top.items():
        path = (*_path, key)
        below = merged.get(key)
        if isinstance(value, dict) and isinstance(below, dict) and not opaque(path):
            merged[key] = overlay(below, value, opaque, path)
        else:
            merged[key] = value
    return merged


def leaves(
    table: Mapping[str, Any],
    opaque: Callable[[tuple[str, ...]], bool] = is_opaque,
    _path: tuple[str, ...] = (),
) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every non-table value with its key path (tables are walked, opaque ones not)."""
    for key, value in table.items():
        path = (*_path, key)
        if isinstance(value, dict) and not opaque(path):
            yield from leaves(value, opaque, path)
        else:
            yield path, value


def paths(
    table: Mapping[str, Any],
    opaque: Callable[[tuple[str, ...]], bool] = is_opaque,
    _path: tuple[str, ...] = (),
) -> Iterator[tuple[str, ...]]:
    """Every key path in ``table``, tables included (for naming errors)."""
    for key, value in table.items():
        path = (*_path, key)
        yield path
        if isinstance(value, dict) and not opaque(path):
            yield from paths(value, opaque, path)


def dotted(path: tuple[str, ...]) -> str:
    return ".".join(path)
