"""Turn ``guild run TARGET`` into an app: ``module:attribute`` or a ``guild.toml``."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import attrs

from .._app import Guild
from .._errors import ConfigError
from ..config import GuildConfig, load_config
from ..supervision import Strategy


def import_app(target: str, *, source: str = "TARGET") -> Guild:
    """Import ``module:attribute`` and check it is a :class:`guild.Guild`.

    Raises:
        ConfigError: malformed target, module not found or raising on import, or
            not a Guild.
    """
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(source, "app", 'a "module:attribute" naming a guild.Guild', target)
    # Like `python -m`, let the current directory's modules be found.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(source, "app", f"an importable module ({exc})", target) from exc
    except Exception as exc:  # the app's own code: anything can go wrong
        what = f"{type(exc).__name__}: {exc}"
        raise ConfigError(
            source, "app", f"module {module_name!r} to import, but it raised {what}", target
        ) from exc
    app = module
    for part in attribute.split("."):
        app = getattr(app, part, None)  # type: ignore[assignment]
        if app is None:
            raise ConfigError(source, "app", f"{module_name} to have {attribute!r}", target)
    if not isinstance(app, Guild):
        raise ConfigError(source, "app", "a guild.Guild instance", type(app).__name__)
    return app


def load_target(target: str) -> tuple[Guild, GuildConfig | None]:
    """The app a target names, with the config file's overrides applied."""
    if target.endswith(".toml") or Path(target).is_file():
        config = load_config(target)
        app = import_app(config.app, source=config.path)
        apply_config(app, config)
        return app, config
    return import_app(target), None


def apply_config(app: Guild, config: GuildConfig) -> None:
    chosen, current = config.supervisor, app.supervision
    app.supervision = attrs.evolve(
        current,
        strategy=Strategy(chosen.strategy) if chosen.strategy is not None else current.strategy,
        max_restarts=chosen.max_restarts or current.max_restarts,
        period=chosen.period or current.period,
    )
    for name, options in config.workers.items():
        if name not in app.specs:
            raise ConfigError(
                config.path, f"workers.{name}", f"one of the app's workers {sorted(app.specs)}"
            )
        try:
            app.configure(name, **options)
        except (TypeError, ValueError) as exc:
            # The worker's own validation (prefetch against concurrency, say).
            raise ConfigError(config.path, f"workers.{name}", f"valid options ({exc})") from exc
