"""Read ``guild.toml`` into :class:`GuildConfig`; every error names file, key and expectation."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

from .._errors import ConfigError
from ._schema import STRATEGIES, WORKER_OPTIONS, GuildConfig, SupervisorConfig

_TOP_LEVEL = {"guild", "supervisor", "workers"}
MAX_PROCESSES = 1024
"""As ``guild run --processes``: more is a typo, and would fork that many."""


class _Reader:
    """Typed access to one table, raising ConfigError with the dotted key."""

    def __init__(self, path: str, prefix: str, table: dict[str, Any]) -> None:
        self.path = path
        self.prefix = prefix
        self.table = table

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def reject_unknown(self, allowed: set[str]) -> None:
        for name in self.table:
            if name not in allowed:
                raise ConfigError(
                    self.path, self.key(name), f"one of {', '.join(sorted(allowed))}", name
                )

    def get(self, name: str, types: tuple[type, ...], expected: str, default: Any) -> Any:
        if name not in self.table:
            return default
        value = self.table[name]
        # bool is an int to Python but never what a count or a duration means.
        if isinstance(value, bool) or not isinstance(value, types):
            raise ConfigError(self.path, self.key(name), expected, value)
        return value

    def positive(
        self, name: str, types: tuple[type, ...], default: Any, at_most: float | None = None
    ) -> Any:
        kind = "an integer" if types == (int,) else "a finite number"
        expected = f"{kind} > 0" + (f" and <= {at_most:,}" if at_most is not None else "")
        value = self.get(name, types, expected, default)
        # TOML has nan and inf: neither is a count or a duration.
        if value is not None and not (0 < value < math.inf):
            raise ConfigError(self.path, self.key(name), expected, value)
        if value is not None and at_most is not None and value > at_most:
            raise ConfigError(self.path, self.key(name), expected, value)
        return value

    def table_at(self, name: str) -> _Reader:
        value = self.table.get(name, {})
        if not isinstance(value, dict):
            raise ConfigError(self.path, self.key(name), "a table", value)
        return _Reader(self.path, self.key(name), value)


def load_config(path: str | Path) -> GuildConfig:
    """Load and validate a ``guild.toml``.

    Raises:
        ConfigError: the file is missing, not TOML, or a key is wrong; the error
            names the file, the dotted key and what was expected.
    """
    shown = str(path)
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(shown, "(file)", "an existing TOML file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(shown, "(file)", f"a readable UTF-8 file ({exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(shown, "(syntax)", f"valid TOML ({exc})") from exc
    root = _Reader(shown, "", data)
    root.reject_unknown(_TOP_LEVEL)
    top = root.table_at("guild")
    top.reject_unknown({"app", "broker", "processes", "http"})
    app = top.get("app", (str,), 'a "module:attribute" string', None)
    if app is None or ":" not in app:
        raise ConfigError(
            shown, "guild.app", 'a "module:attribute" string naming a guild.Guild', app
        )
    return GuildConfig(
        path=shown,
        app=app,
        broker=top.get("broker", (str,), "a broker URL string", None),
        processes=top.positive("processes", (int,), 1, at_most=MAX_PROCESSES),
        http=top.get("http", (str,), 'a "host:port" string', None),
        supervisor=_supervisor(root.table_at("supervisor")),
        workers=_workers(root.table_at("workers")),
    )


def _supervisor(table: _Reader) -> SupervisorConfig:
    table.reject_unknown({"strategy", "max_restarts", "period"})
    strategy = table.get("strategy", (str,), " | ".join(STRATEGIES), None)
    if strategy is not None and strategy not in STRATEGIES:
        raise ConfigError(table.path, table.key("strategy"), " | ".join(STRATEGIES), strategy)
    period = table.positive("period", (int, float), None)
    return SupervisorConfig(
        strategy=strategy,
        max_restarts=table.positive("max_restarts", (int,), None),
        period=None if period is None else float(period),
    )


def _workers(table: _Reader) -> dict[str, dict[str, Any]]:
    workers: dict[str, dict[str, Any]] = {}
    for name in table.table:
        worker = table.table_at(name)
        worker.reject_unknown(set(WORKER_OPTIONS))
        workers[name] = {
            option: worker.positive(option, types, None)
            for option, types in WORKER_OPTIONS.items()
            if option in worker.table
        }
    return workers
