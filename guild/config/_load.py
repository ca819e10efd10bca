"""Read ``guild.toml`` into :class:`GuildConfig`; every error names file, key and expectation."""

from __future__ import annotations

import datetime as dt
import itertools
import math
import os
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from .._codec import is_positive_seconds
from .._cron import Cron, ScheduleError
from .._errors import ConfigError
from .._job import MAX_QUEUE_NAME, check_field, check_queue_name
from .._limits import parse_rate
from ..observability._access import token_fault
from ._layers import dotted, overlay, paths
from ._schema import (
    ADDRESS,
    CANARY_MAX_MIN_JOBS,
    CANARY_MAX_P95,
    CANARY_MAX_SOAK,
    CANARY_OPTIONS,
    HEALTH_FRACTIONS,
    HEALTH_OPTIONS,
    ISOLATE_MODES,
    LIMIT_OPTIONS,
    LOG_FORMATS,
    LOG_LEVELS,
    MAX_PROCESSES,
    PERIODIC_OPTIONS,
    RETENTION_SECONDS,
    SANDBOX_LISTS,
    SANDBOX_NUMBERS,
    STRATEGIES,
    WORKER_OPTIONS,
    GuildConfig,
    SupervisorConfig,
    split_address,
)

_TOP_LEVEL = {
    "guild",
    "supervisor",
    "workers",
    "health",
    "sandbox",
    "periodic",
    "retention",
    "canary",
    "env",
}
_GUILD_KEYS = {
    "app",
    "broker",
    "processes",
    "http",
    "http_token",
    "http_redact",
    "loop_stall",
    "log_level",
    "log_format",
}


class _Reader:
    """Typed access to one table, raising ConfigError with the dotted key."""

    def __init__(
        self,
        path: str,
        prefix: str,
        table: dict[str, Any],
        where: Mapping[str, str] | None = None,
    ) -> None:
        self.path = path
        self.prefix = prefix
        self.table = table
        # Merged key -> the key as written: a value from [env.NAME] is reported
        # as env.NAME.<key>, where the operator has to fix it.
        self.where: Mapping[str, str] = where or {}

    def full(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def key(self, name: str) -> str:
        full = self.full(name)
        return self.where.get(full, full)

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
        return _Reader(self.path, self.full(name), value, self.where)

    def choice(self, name: str, choices: tuple[str, ...], default: Any) -> Any:
        expected = " | ".join(choices)
        value = self.get(name, (str,), expected, default)
        if value is not None and value not in choices:
            raise ConfigError(self.path, self.key(name), expected, value)
        return value

    def strings(self, name: str) -> tuple[str, ...]:
        value = self.table[name]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(self.path, self.key(name), "an array of strings", value)
        return tuple(value)


MAX_CONFIG_BYTES = 1024 * 1024
"""The largest ``guild.toml`` read (1 MiB): a hand-written file is a few kB; a
larger one is a wrong path (a log, a database), and parsing it would take minutes."""


def read_toml(path: str | Path) -> dict[str, Any]:
    """The file's TOML as a dict.

    Raises:
        ConfigError: missing, empty-named, not a regular file (a FIFO would block
            the read until a writer came, ``/dev/zero`` never end), over
            :data:`MAX_CONFIG_BYTES`, unreadable, or not TOML (key ``(file)`` or
            ``(syntax)``).
    """
    shown = str(path)
    if not shown.strip():
        raise ConfigError(repr(shown), "(file)", "the path of a guild.toml, not an empty one")
    try:
        text = _read_regular(shown).decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(shown, "(file)", "an existing TOML file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(shown, "(file)", f"a readable UTF-8 file ({exc})") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(shown, "(syntax)", f"valid TOML ({exc})") from exc
    except RecursionError:  # tomllib recurses once per level of [[[... or {a={...
        raise ConfigError(shown, "(syntax)", "TOML nested less deeply") from None


def _read_regular(path: str) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most :data:`MAX_CONFIG_BYTES`.

    Opened without blocking, so that a FIFO with no writer is refused rather than
    waited on; a directory, device or socket is refused by its kind.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(f"{_KINDS.get(stat.S_IFMT(mode), 'a special file')}, not a regular file")
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, MAX_CONFIG_BYTES + 1 - size):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_CONFIG_BYTES:
                raise OSError(f"larger than {MAX_CONFIG_BYTES:,} bytes: not a guild.toml")
    finally:
        os.close(fd)
    return b"".join(chunks)


_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def environments(path: str, data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The file's ``[env.NAME]`` sections, by name.

    Raises:
        ConfigError: ``env`` or a section is not a table, or a section holds an ``env``.
    """
    found = data.get("env", {})
    if not isinstance(found, dict):
        raise ConfigError(path, "env", "a table of [env.NAME] sections", found)
    for name, section in found.items():
        if not isinstance(section, dict):
            raise ConfigError(path, f"env.{name}", "a table", section)
        if "env" in section:
            raise ConfigError(path, f"env.{name}.env", "no [env] table inside an environment")
    return found


def select_env(path: str, data: Mapping[str, Any], env: str | None) -> dict[str, Any]:
    """The settings in force under ``env`` (``None``: the base file), before validation.

    Raises:
        ConfigError: ``env`` names no ``[env.NAME]`` of the file (naming those it has).
    """
    sections = environments(path, data)
    base = {key: value for key, value in data.items() if key != "env"}
    if env is None:
        return base
    if env not in sections:
        known = ", ".join(sorted(sections)) if sections else "none: the file has no [env.NAME]"
        raise ConfigError(path, "env", f"an environment the file defines ({known})", env)
    return overlay(base, sections[env])


def load_config(path: str | Path, env: str | None = None) -> GuildConfig:
    """Load and validate a ``guild.toml``, with the ``[env.NAME]`` section ``env``
    laid over it.

    Every environment the file defines is checked, not only the chosen one, so
    a mistake in ``[env.production]`` is found while staging runs.

    Raises:
        ConfigError: the file is missing, not TOML, a key is wrong, or ``env``
            is not one of the file's environments; the error names the file, the
            dotted key as written (``env.NAME.…`` inside a section) and what was
            expected.
    """
    shown = str(path)
    data = read_toml(path)
    sections = environments(shown, data)
    chosen = _parse(shown, select_env(shown, data, env), env, sections.get(env or "", {}))
    for name, section in sections.items():
        if name != env:
            _parse(shown, select_env(shown, data, name), name, section)
    return chosen


def _parse(
    shown: str, data: dict[str, Any], env: str | None, section: Mapping[str, Any]
) -> GuildConfig:
    where = {dotted(p): f"env.{env}.{dotted(p)}" for p in paths(section)} if env else {}
    root = _Reader(shown, "", data, where)
    root.reject_unknown(_TOP_LEVEL)
    top = root.table_at("guild")
    top.reject_unknown(_GUILD_KEYS)
    app = top.get("app", (str,), 'a "module:attribute" string', None)
    if app is None or ":" not in app:
        raise ConfigError(
            shown, top.key("app"), 'a "module:attribute" string naming a guild.Guild', app
        )
    return GuildConfig(
        path=shown,
        app=app,
        broker=top.get("broker", (str,), "a broker URL string", None),
        processes=top.positive("processes", (int,), 1, at_most=MAX_PROCESSES),
        http=_http(top),
        http_token=_http_token(top),
        http_redact=_flag(top, "http_redact"),
        loop_stall=_loop_stall(top),
        supervisor=_supervisor(root.table_at("supervisor")),
        workers=_workers(root.table_at("workers")),
        env=env,
        log_level=top.choice("log_level", LOG_LEVELS, "info"),
        log_format=top.choice("log_format", LOG_FORMATS, "auto"),
        health=_health(root.table_at("health")),
        sandbox=_sandbox(root.table_at("sandbox")),
        periodic=_periodic(root.table_at("periodic")),
        retention=_retention(root.table_at("retention")),
        canary=_canary(root.table_at("canary")),
    )


def _canary(table: _Reader) -> dict[str, Any]:
    """``[canary]``: changes to the default ``guild.CanaryPolicy``."""
    table.reject_unknown(set(CANARY_OPTIONS))
    changes: dict[str, Any] = {}
    if "stages" in table.table:
        changes["stages"] = _stages(table)
    for option, at_most in (("soak", CANARY_MAX_SOAK), ("p95", CANARY_MAX_P95)):
        if option in table.table:
            changes[option] = float(table.positive(option, (int, float), None, at_most))
    if "error_rate" in table.table:
        # As --canary-error-rate: a share of jobs, so at most all of them.
        expected = "a fraction from 0 to 1"
        value = table.get("error_rate", (int, float), expected, None)
        if not 0 <= value <= 1:
            raise ConfigError(table.path, table.key("error_rate"), expected, value)
        changes["error_rate"] = float(value)
    if "min_jobs" in table.table:
        changes["min_jobs"] = table.positive("min_jobs", (int,), None, CANARY_MAX_MIN_JOBS)
    return changes


def _stages(table: _Reader) -> tuple[float, ...]:
    expected = "an array of shares in (0, 1], rising, ending at 1.0, e.g. [0.1, 0.5, 1.0]"
    value = table.table["stages"]
    if (
        not isinstance(value, list)
        or not value
        or any(isinstance(s, bool) or not isinstance(s, int | float) for s in value)
    ):
        raise ConfigError(table.path, table.key("stages"), expected, value)
    shares = tuple(float(s) for s in value)
    rising = all(b > a for a, b in itertools.pairwise(shares))
    if not rising or any(not 0 < s <= 1 for s in shares) or shares[-1] != 1.0:
        raise ConfigError(table.path, table.key("stages"), expected, value)
    return shares


def _retention(table: _Reader) -> dict[str, Any]:
    """``[retention]``: changes to the app's ``guild.Retention``."""
    table.reject_unknown({*RETENTION_SECONDS, "keep_payload"})
    changes: dict[str, Any] = {}
    for option in RETENTION_SECONDS:
        if option not in table.table:
            continue
        if option == "dead" and isinstance(table.table[option], str):
            if table.table[option] != "forever":
                expected = 'a number of seconds > 0, or "forever"'
                raise ConfigError(table.path, table.key(option), expected, table.table[option])
            changes[option] = None
            continue
        value = table.positive(option, (int, float), None)
        changes[option] = float(value)
    if "keep_payload" in table.table:
        changes["keep_payload"] = _flag(table, "keep_payload")
    return changes


def _http(table: _Reader) -> str | None:
    """``guild.http`` by the rule of ``--http`` (:func:`split_address`), so that
    ``guild config show`` refuses what ``guild run`` would."""
    address: str | None = table.get("http", (str,), ADDRESS, None)
    if address is not None:
        try:
            split_address(address)
        except ValueError:
            raise ConfigError(table.path, table.key("http"), ADDRESS, address) from None
    return address


def _http_token(table: _Reader) -> str | None:
    token: str | None = table.get("http_token", (str,), "a non-empty string without spaces", None)
    if token is not None and token_fault(token) is not None:
        # Its value is not echoed: a secret does not belong in an error line.
        raise ConfigError(
            table.path,
            table.key("http_token"),
            "a non-empty string without surrounding spaces or control characters",
        )
    return token


def _loop_stall(table: _Reader) -> float | Literal[False] | None:
    """``guild.loop_stall``: ``Guild(loop_stall=...)``, by the check the app makes;
    ``false`` turns the watchdog off (``Guild(loop_stall=None)``: TOML has no null)."""
    value = table.table.get("loop_stall")
    if value is None or value is False:
        return value
    if not is_positive_seconds(value):
        raise ConfigError(
            table.path, table.key("loop_stall"), "a finite number of seconds > 0, or false", value
        )
    return float(value)


def _flag(table: _Reader, name: str) -> bool | None:
    value = table.table.get(name)
    if value is not None and not isinstance(value, bool):
        raise ConfigError(table.path, table.key(name), "true or false", value)
    return value


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
        worker.reject_unknown({*WORKER_OPTIONS, "limit"})
        workers[name] = {
            option: worker.positive(option, types, None)
            for option, types in WORKER_OPTIONS.items()
            if option in worker.table
        }
        if "limit" in worker.table:
            workers[name]["limit"] = _limit(worker.table_at("limit"))
    return workers


def _limit(table: _Reader) -> dict[str, Any]:
    """A ``[workers.NAME.limit]`` table: changes to the worker's ``guild.Limit``."""
    table.reject_unknown(set(LIMIT_OPTIONS))
    changes: dict[str, Any] = {
        option: table.positive(option, (int,), None)
        for option in LIMIT_OPTIONS
        if option != "rate" and option in table.table
    }
    if "rate" in table.table:
        expected = 'a rate string such as "10/s", "600/min" or "5/10s"'
        text = table.get("rate", (str,), expected, None)
        try:
            changes["rate"] = parse_rate(text)
        except ValueError:
            raise ConfigError(table.path, table.key("rate"), expected, text) from None
    return changes


def _health(table: _Reader) -> dict[str, Any]:
    """``[health]``: changes to the default ``Thresholds``."""
    table.reject_unknown(set(HEALTH_OPTIONS))
    changes: dict[str, Any] = {}
    for option, types in HEALTH_OPTIONS.items():
        if option not in table.table:
            continue
        if option in HEALTH_FRACTIONS:
            expected = "a fraction from 0 to 1"
            value = table.get(option, types, expected, None)
            if not 0 <= value <= 1:
                raise ConfigError(table.path, table.key(option), expected, value)
        elif option == "queue_length":
            expected = "an integer >= 0"
            value = table.get(option, types, expected, None)
            if value < 0:
                raise ConfigError(table.path, table.key(option), expected, value)
        else:
            value = table.positive(option, types, None)
        changes[option] = value
    return changes


def _sandbox(table: _Reader) -> dict[str, Any]:
    """``[sandbox]``: changes to the policy of every sandbox the app's workers hold."""
    table.reject_unknown(
        {*SANDBOX_NUMBERS, *SANDBOX_LISTS, "isolate", "user", "group", "keep_dir", "search_path"}
    )
    changes: dict[str, Any] = {}
    for option, types in SANDBOX_NUMBERS.items():
        if option not in table.table:
            continue
        if option == "kill_grace":
            expected = "a finite number >= 0"
            value = table.get(option, types, expected, None)
            if not 0 <= value < math.inf:
                raise ConfigError(table.path, table.key(option), expected, value)
            changes[option] = value
        else:
            changes[option] = table.positive(option, types, None)
    for option in (*SANDBOX_LISTS, "search_path"):
        if option in table.table:
            changes[option] = table.strings(option)
    if "isolate" in table.table:
        changes["isolate"] = table.choice("isolate", ISOLATE_MODES, None)
    for option in ("user", "group"):
        if option in table.table:
            name = table.get(option, (str,), "a non-empty name", None)
            if not name.strip():
                raise ConfigError(table.path, table.key(option), "a non-empty name", name)
            changes[option] = name
    if "keep_dir" in table.table:
        value = table.table["keep_dir"]
        if not isinstance(value, bool):
            raise ConfigError(table.path, table.key("keep_dir"), "true or false", value)
        changes["keep_dir"] = value
    return changes


def _periodic(table: _Reader) -> dict[str, dict[str, Any]]:
    """``[periodic.NAME]``: schedules to add, or to change if the app has one by that name."""
    schedules: dict[str, dict[str, Any]] = {}
    for name in table.table:
        try:
            # The name is part of every tick's idempotency key, as Guild.periodic checks.
            check_field("periodic name", name, MAX_QUEUE_NAME)
        except ValueError as exc:
            raise ConfigError(table.path, table.key(name), f"a schedule name ({exc})") from None
        entry = table.table_at(name)
        entry.reject_unknown(set(PERIODIC_OPTIONS))
        found: dict[str, Any] = {}
        if "schedule" in entry.table:
            found["schedule"] = _schedule(entry)
        if "tz" in entry.table:
            found["tz"] = _tz(entry, found.get("schedule"))
        if "queue" in entry.table:
            queue = entry.get("queue", (str,), "a queue name", None)
            try:
                found["queue"] = check_queue_name(queue)
            except ValueError as exc:
                raise ConfigError(entry.path, entry.key("queue"), f"a queue name ({exc})") from None
        if "payload" in entry.table:
            found["payload"] = _json_value(entry, entry.table["payload"])
        schedules[name] = found
    return schedules


def _schedule(entry: _Reader) -> str | float:
    expected = 'a cron expression such as "*/5 * * * *" or a number of seconds > 0'
    value = entry.table["schedule"]
    if isinstance(value, str):
        try:
            Cron(value)
        except ScheduleError as exc:
            raise ConfigError(entry.path, entry.key("schedule"), f"{expected} ({exc})") from None
        return value
    return float(entry.positive("schedule", (int, float), None))


def _tz(entry: _Reader, schedule: str | float | None) -> str:
    expected = 'an IANA time zone name such as "Europe/Paris"'
    name: str = entry.get("tz", (str,), expected, None)
    if isinstance(schedule, float):
        raise ConfigError(
            entry.path,
            entry.key("tz"),
            "no time zone beside a schedule in seconds (only a cron expression has one)",
            name,
        )
    try:
        Cron("* * * * *", tz=name)
    except ScheduleError as exc:
        raise ConfigError(entry.path, entry.key("tz"), f"{expected} ({exc})") from None
    return name


def _json_value(entry: _Reader, value: Any) -> Any:
    # TOML has dates and times; a job's payload is JSON, which has neither.
    if isinstance(value, dt.date | dt.time):
        raise ConfigError(
            entry.path, entry.key("payload"), "a JSON value (TOML dates are not JSON)", value
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(entry.path, entry.key("payload"), "a JSON value (finite numbers)", value)
    if isinstance(value, list):
        return [_json_value(entry, item) for item in value]
    if isinstance(value, dict):
        return {key: _json_value(entry, item) for key, item in value.items()}
    return value
