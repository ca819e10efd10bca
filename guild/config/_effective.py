"""The settings in force and where each came from: ``guild config show``, and
the one place ``guild run`` asks which broker, address, log level and format win.

Precedence, lowest first: the default; the file; its ``[env.NAME]`` section;
an environment variable; a command-line flag. One exception keeps what
``guild run`` has always done: ``$GUILD_BROKER`` fills in only when neither the
file nor its section names a broker (it is the shell's default, and a file that
names a broker names the one it means).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from ..brokers._url import DEFAULT_URL, display_url
from ._layers import Origin, choose_env, dotted, leaves
from ._load import environments, load_config, read_toml
from ._schema import GuildConfig

BROKER_VARIABLE = "GUILD_BROKER"

FLAG_KEYS = {
    "--broker": "guild.broker",
    "--processes": "guild.processes",
    "--http": "guild.http",
    "--log-level": "guild.log_level",
    "--log-format": "guild.log_format",
    "--canary-stages": "canary.stages",
    "--canary-soak": "canary.soak",
    "--canary-error-rate": "canary.error_rate",
    "--canary-p95": "canary.p95",
    "--canary-min-jobs": "canary.min_jobs",
}
"""``guild run`` flags that override one key of the file."""

CONCURRENCY_FLAG = "--concurrency"
"""Overrides every worker's ``concurrency`` (shown as ``workers.*.concurrency``)."""


def defaults() -> dict[str, Any]:
    """The value of every key that has one when the file leaves it out.

    Keys of ``[supervisor]``, ``[workers.NAME]``, ``[sandbox]``, ``[retention]``
    and ``[periodic.NAME]`` have none here: left out, the app's own code decides.
    """
    # Imported here: guild.observability imports much of guild, which imports this.
    from ..observability._health import Thresholds
    from ..rollout._machine import CanaryPolicy

    found: dict[str, Any] = {
        "guild.broker": DEFAULT_URL,
        "guild.processes": 1,
        "guild.http": None,
        "guild.log_level": "info",
        "guild.log_format": "auto",
    }
    for field in attrs.fields(Thresholds):
        found[f"health.{field.name}"] = field.default
    policy = CanaryPolicy()
    for field in attrs.fields(CanaryPolicy):
        value = getattr(policy, field.name)
        found[f"canary.{field.name}"] = list(value) if isinstance(value, tuple) else value
    return found


@attrs.frozen
class Setting:
    """One key's value in force and its origin."""

    key: str
    value: Any
    origin: Origin


@attrs.frozen
class Effective:
    """The configuration in force.

    Attributes:
        config: the validated file under the chosen environment.
        env: the environment chosen, or ``None``.
        env_origin: where that choice came from (``--env`` or ``$GUILD_ENV``).
        environments: the names the file defines.
        settings: by dotted key, grouped by table as the file is ([guild] first).
    """

    config: GuildConfig
    env: str | None
    env_origin: Origin | None
    environments: tuple[str, ...]
    settings: dict[str, Setting]

    def value(self, key: str) -> Any:
        return self.settings[key].value

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.config.path,
            "env": self.env,
            "env_from": None if self.env_origin is None else _origin_json(self.env_origin),
            "environments": list(self.environments),
            "settings": {
                key: {"value": _shown(key, s.value), **_origin_json(s.origin)}
                for key, s in self.settings.items()
            },
        }

    def render(self) -> str:
        """Human output: one line per key, ``key = value  # origin``."""
        if self.env is None:
            head = f"# {self.config.path} (no environment chosen"
            head += f"; defines: {', '.join(self.environments)})" if self.environments else ")"
        else:
            assert self.env_origin is not None
            head = f"# {self.config.path}, environment {self.env!r} (from {self.env_origin.describe()})"
        rows = [
            (key, _toml(_shown(key, s.value)), s.origin.describe())
            for key, s in self.settings.items()
        ]
        # Aligned, but a long value (a payload) does not push every comment right.
        width = min(max((len(k) + len(v) for k, v, _ in rows), default=0) + 3, 48)
        lines = [head]
        lines += [f"{f'{k} = {v}':<{width}}  # {origin}" for k, v, origin in rows]
        return "\n".join(lines)


def effective(
    path: str | Path,
    *,
    env: str | None = None,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Effective:
    """Resolve ``path`` with the environment, variables and flags given.

    Args:
        env: the ``--env`` flag (``None``: ``$GUILD_ENV``, else none).
        flags: given ``guild run`` flags by name (``"--broker"`` …, see
            :data:`FLAG_KEYS` and :data:`CONCURRENCY_FLAG`); ``None`` values are
            flags not given.
        environ: the process environment (default ``os.environ``).

    Raises:
        ConfigError: as :func:`load_config`; an unknown environment names the
            file and the environments it defines.
    """
    environ = os.environ if environ is None else environ
    chosen, env_origin = choose_env(env, environ)
    shown = str(path)
    config = load_config(path, chosen)
    data = read_toml(path)
    sections = environments(shown, data)
    found = {key: Setting(key, value, Origin("default")) for key, value in defaults().items()}
    base = {key: value for key, value in data.items() if key != "env"}
    for key_path, value in leaves(base):
        key = dotted(key_path)
        found[key] = Setting(key, value, Origin("file", shown))
    if chosen is not None:
        for key_path, value in leaves(sections[chosen]):
            key = dotted(key_path)
            found[key] = Setting(key, value, Origin("env", f"env.{chosen}"))
    if found["guild.broker"].origin.source == "default" and environ.get(BROKER_VARIABLE):
        found["guild.broker"] = Setting(
            "guild.broker", environ[BROKER_VARIABLE], Origin("environment", BROKER_VARIABLE)
        )
    for flag, value in (flags or {}).items():
        if value is None:
            continue
        if flag == CONCURRENCY_FLAG:
            for key in [
                k for k in found if k.startswith("workers.") and k.endswith(".concurrency")
            ]:
                if key.count(".") == 2:
                    found[key] = Setting(key, value, Origin("flag", flag))
            found["workers.*.concurrency"] = Setting(
                "workers.*.concurrency", value, Origin("flag", flag)
            )
        else:
            key = FLAG_KEYS[flag]
            found[key] = Setting(key, value, Origin("flag", flag))
    return Effective(
        config=config,
        env=chosen,
        env_origin=env_origin,
        environments=tuple(sections),
        settings={key: found[key] for key in sorted(found, key=_order)},
    )


_SECTIONS = (
    "guild",
    "supervisor",
    "workers",
    "health",
    "sandbox",
    "retention",
    "canary",
    "periodic",
)


def _order(key: str) -> tuple[int, str]:
    section = key.split(".", 1)[0]
    rank = _SECTIONS.index(section) if section in _SECTIONS else len(_SECTIONS)
    return rank, key


def _origin_json(origin: Origin) -> dict[str, str]:
    return {"source": origin.source, "from": origin.where}


def _shown(key: str, value: Any) -> Any:
    # A broker URL may hold a password; the output is read by more people than hold it.
    if key == "guild.broker" and isinstance(value, str) and not value.startswith("sqlite:"):
        return display_url(value)
    if key == "guild.http_token" and value is not None:
        return "(hidden)"  # the dashboard's secret
    return value


def _toml(value: Any) -> str:
    """A value as TOML would write it (``none`` for an unset one)."""
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    return str(value)
