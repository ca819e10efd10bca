"""``guild.toml``: ``load_config(path, env) -> GuildConfig``, and
``effective(path, ...)``: the settings in force and where each came from."""

from __future__ import annotations

from ._effective import Effective as Effective
from ._effective import Setting as Setting
from ._effective import effective as effective
from ._layers import Origin as Origin
from ._load import load_config as load_config
from ._schema import GuildConfig as GuildConfig
from ._schema import SupervisorConfig as SupervisorConfig

__all__ = [
    "Effective",
    "GuildConfig",
    "Origin",
    "Setting",
    "SupervisorConfig",
    "effective",
    "load_config",
]
