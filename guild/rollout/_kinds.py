"""Which brokers can hold a rollout, told without loading the rollout machine.

Every ``guild run`` asks (to record outcomes for rollouts); the records and the
state machine (:mod:`guild.rollout._store`) load only once a rollout is read.
"""

from __future__ import annotations

import sys
from typing import Any

from .._errors import GuildError


class UnsupportedBroker(GuildError, TypeError):
    """A broker with no place for a rollout (guild ships memory, SQLite and Redis)."""


def supports(broker: Any) -> bool:
    """Whether ``broker`` can hold a rollout (memory, SQLite, Redis)."""
    try:
        kind_of(broker)
    except UnsupportedBroker:
        return False
    return True


def kind_of(broker: Any) -> str:
    """``"memory"``, ``"sqlite"`` or ``"redis"``.

    Raises:
        UnsupportedBroker: ``broker`` is none of those.
    """
    # The brokers are imported on first use (guild.brokers): one never imported
    # cannot be this broker's class.
    memory = sys.modules.get("guild.brokers.memory")
    if memory is not None and isinstance(broker, memory.MemoryBroker):
        return "memory"
    sqlite, redis = sys.modules.get("guild.brokers.sqlite"), sys.modules.get("guild.brokers.redis")
    if sqlite is not None and isinstance(broker, sqlite.SqliteBroker):
        return "sqlite"
    if redis is not None and isinstance(broker, redis.RedisBroker):
        return "redis"
    raise UnsupportedBroker(
        f"canary rollouts need the memory, sqlite or redis broker, not {type(broker).__name__}"
    )
