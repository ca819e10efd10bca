"""``guild.toml``: ``load_config(path, env) -> GuildConfig``, and
``effective(path, ...)``: the settings in force and where each came from."""

from __future__ import annotations

import typing

from .. import _lazy

if typing.TYPE_CHECKING:
    from ._effective import Effective as Effective
    from ._effective import Setting as Setting
    from ._effective import effective as effective
    from ._layers import Origin as Origin
    from ._load import load_config as load_config
    from ._schema import GuildConfig as GuildConfig
    from ._schema import SupervisorConfig as SupervisorConfig

# Loaded on first use: `guild run app:app` reads no file, and its options need
# only the schema's constants (guild.config._schema), not the TOML reader.
# Hidden from type checkers, which would otherwise accept any name at all.
if not typing.TYPE_CHECKING:
    __getattr__, __dir__ = _lazy.lazy_exports(
        __name__,
        globals(),
        {
            "Effective": "._effective",
            "Setting": "._effective",
            "effective": "._effective",
            "Origin": "._layers",
            "load_config": "._load",
            "GuildConfig": "._schema",
            "SupervisorConfig": "._schema",
        },
    )

__all__ = [
    "Effective",
    "GuildConfig",
    "Origin",
    "Setting",
    "SupervisorConfig",
    "effective",
    "load_config",
]
