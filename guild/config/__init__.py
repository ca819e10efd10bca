"""``guild.toml``: ``load_config(path) -> GuildConfig``."""

from __future__ import annotations

from ._load import load_config as load_config
from ._schema import GuildConfig as GuildConfig
from ._schema import SupervisorConfig as SupervisorConfig

__all__ = ["GuildConfig", "SupervisorConfig", "load_config"]
