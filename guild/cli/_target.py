"""Turn ``guild run TARGET`` into an app: ``module:attribute`` or a ``guild.toml``."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from .._errors import ConfigError
from .._groups import describe
from .._limits import merge_limit
from ..sandbox._held import replace_held_policies
from ..supervision import Strategy

if TYPE_CHECKING:
    # Imported where used: the parent of ``guild run --processes N`` reads the
    # target without building the app (only its children import it).
    from .._app import Guild
    from ..config._schema import GuildConfig


def import_app(target: str, *, source: str = "TARGET") -> Guild:
    """Import ``module:attribute`` and check it is a :class:`guild.Guild`.

    Raises:
        ConfigError: malformed target, module not found or raising on import, or
            not a Guild.
    """
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(source, "app", 'a "module:attribute" naming a guild.Guild', target)
    if module_name.startswith("."):
        # import_module would fail with a TypeError about its "package" argument.
        raise ConfigError(
            source, "app", "an absolute module name (a relative one has no package)", target
        )
    # Like `python -m`, let the current directory's modules be found.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(source, "app", f"an importable module ({exc})", target) from exc
    except KeyboardInterrupt:
        raise  # Ctrl-C while the app imports: guild ends as interrupted
    # The app's own code: anything can go wrong, a sys.exit() at import included
    # (a script made an app), which would otherwise end guild with no word said,
    # or a BaseException of its own, which would end it with a traceback.
    except BaseException as exc:
        what = describe(exc)
        raise ConfigError(
            source, "app", f"module {module_name!r} to import, but it raised {what}", target
        ) from exc
    app = module
    for part in attribute.split("."):
        app = getattr(app, part, None)  # type: ignore[assignment]
        if app is None:
            raise ConfigError(source, "app", f"{module_name} to have {attribute!r}", target)
    from .._app import Guild

    if not isinstance(app, Guild):
        raise ConfigError(source, "app", "a guild.Guild instance", type(app).__name__)
    return app


def is_config_target(target: str) -> bool:
    """Whether ``guild run TARGET`` names a ``guild.toml`` rather than ``module:attribute``."""
    return target.endswith(".toml") or Path(target).is_file()


def load_target(target: str, env: str | None = None) -> tuple[Guild, GuildConfig | None]:
    """The app a target names, with the config file's overrides (under the
    ``[env.NAME]`` section ``env``) applied."""
    if is_config_target(target):
        from ..config._load import load_config  # here: `guild run app:app` reads no file

        config = load_config(target, env)
        return app_of(config), config
    return import_app(target), None


def app_of(config: GuildConfig) -> Guild:
    """Import the config's app and apply the config to it."""
    app = import_app(config.app, source=config.path)
    apply_config(app, config)
    return app


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
        if "limit" in options:
            try:
                limit = merge_limit(app.specs[name].limit, options["limit"])
            except (TypeError, ValueError) as exc:
                raise ConfigError(
                    config.path, f"workers.{name}.limit", f"a valid limit ({exc})"
                ) from exc
            options = {**options, "limit": limit}
        try:
            app.configure(name, **options)
        except (TypeError, ValueError) as exc:
            # The worker's own validation (prefetch against concurrency, say).
            raise ConfigError(config.path, f"workers.{name}", f"valid options ({exc})") from exc
    if config.loop_stall is False:
        app.loop_stall = None
    elif config.loop_stall is not None:
        app.loop_stall = config.loop_stall  # checked by the loader, as Guild() checks it
    if config.sandbox:
        _apply_sandbox(app, config)
    if config.retention:
        # Each key was checked alone by the loader; Retention checks them together.
        app.retention = attrs.evolve(app.retention, **config.retention)
    for name, entry in config.periodic.items():
        _apply_periodic(app, config.path, name, entry)


def _apply_sandbox(app: Guild, config: GuildConfig) -> None:
    from ..sandbox import SandboxPolicy

    def change(policy: SandboxPolicy) -> SandboxPolicy:
        try:
            return attrs.evolve(policy, **config.sandbox)
        except (TypeError, ValueError) as exc:
            raise ConfigError(config.path, "sandbox", f"a valid sandbox policy ({exc})") from exc

    if not replace_held_policies(app, change):
        raise ConfigError(
            config.path,
            "sandbox",
            "an app whose workers hold a guild.Sandbox (none does: nothing to apply it to)",
        )


def _apply_periodic(app: Guild, path: str, name: str, entry: dict[str, Any]) -> None:
    """Add ``[periodic.NAME]``, or change the keys it names of the app's own schedule."""
    # Here, not at the top: a run of module:attribute applies no file.
    from .._cron import Cron, Every

    key = f"periodic.{name}"
    schedule = entry.get("schedule")
    existing = app.schedules.get(name)
    # A zone the file leaves out stays the one the app's own cron has.
    kept_tz = (
        existing.schedule.tz
        if existing is not None and isinstance(existing.schedule, Cron)
        else None
    )
    tz = entry.get("tz", kept_tz)
    made: Cron | Every | None
    if isinstance(schedule, str):
        made = Cron(schedule, tz=tz)
    elif schedule is not None:
        made = Every(schedule)  # the loader refuses a tz beside seconds
    elif "tz" in entry and existing is not None:
        if not isinstance(existing.schedule, Cron):
            raise ConfigError(
                path,
                f"{key}.tz",
                "a cron schedule to set the time zone of (the app's"
                f" {name!r} is every {existing.schedule.seconds:g} seconds)",
            )
        made = Cron(existing.schedule.expression, tz=tz)
    else:
        made = None
    if existing is None:
        missing = [option for option in ("schedule", "queue") if option not in entry]
        if missing:
            raise ConfigError(
                path,
                key,
                f"{' and '.join(missing)} (a schedule the app does not define in code;"
                f" it defines {sorted(app.schedules) or 'none'})",
            )
        assert made is not None  # "schedule" is in the entry
        app.periodic(made, entry["queue"], entry.get("payload"), name=name)
        return
    # The app's schedules are kept by name; one from code is replaced whole by its
    # changed copy (Guild.periodic refuses a second schedule of one name).
    from .._app import Periodic

    app._periodic[name] = Periodic(
        name=name,
        schedule=made or existing.schedule,
        queue=entry.get("queue", existing.queue),
        payload=entry.get("payload", existing.payload),
    )
