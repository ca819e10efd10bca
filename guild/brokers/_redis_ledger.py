"""The Ledger (``guild.brokers.Ledger``) in Redis, under the broker's key prefix.

* ``<prefix>:ledger:counts:<namespace>`` — a hash; each field is the JSON pair
  ``[key, name]``, each value a float added with ``HINCRBYFLOAT``;
* ``<prefix>:ledger:namespaces`` — the set of namespaces holding counts;
* ``<prefix>:ledger:mark:<len(namespace)>:<namespace>:<key>`` — one string per
  mark, set with ``NX`` and expiring with it (the length keeps namespace and
  key apart whatever colons they hold).

Every name starts with the prefix, which on a cluster is a hash tag, so the
scripts' keys share one slot. A call is one script, atomic in Redis.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping
from typing import Any

from ._ledger import check_ledger_args, checked_counts, checked_ttl, checked_value
from ._redis_errors import map_redis_exceptions

# KEYS: the namespace's hash, the namespaces set. ARGV: namespace, then field, amount pairs.
_ADD = """
for i = 2, #ARGV, 2 do
  redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"""

# KEYS: the mark. ARGV: milliseconds it lasts, its value. Returns 1 when this call set it.
_MARK = """
if redis.call('SET', KEYS[1], ARGV[2], 'NX', 'PX', ARGV[1]) then return 1 end
return 0
"""

# KEYS: marks. Returns (1-based position, value) pairs, flat, for those set.
_MARKED = """
local found = {}
for i = 1, #KEYS do
  local value = redis.call('GET', KEYS[i])
  if value then
    table.insert(found, i)
    table.insert(found, value)
  end
end
return found
"""

_CHUNK = 500


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def counts_key(prefix: str, namespace: str) -> str:
    return f"{prefix}:ledger:counts:{namespace}"


def namespaces_key(prefix: str) -> str:
    return f"{prefix}:ledger:namespaces"


def mark_key(prefix: str, namespace: str, key: str) -> str:
    return f"{prefix}:ledger:mark:{len(namespace)}:{namespace}:{key}"


class RedisLedger:
    """The Ledger on a coredis client (a broker's), its keys under ``prefix``."""

    def __init__(self, client: Any, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._add = client.register_script(_ADD)
        self._mark = client.register_script(_MARK)
        self._marked = client.register_script(_MARKED)

    async def add_counts(self, namespace: str, key: str, counts: Mapping[str, float]) -> None:
        check_ledger_args(namespace, key)
        checked = checked_counts(counts)
        if not checked:
            return
        args = [namespace]
        for name, value in checked.items():
            args += [json.dumps([key, name]), repr(value)]
        with map_redis_exceptions("ledger add_counts"):
            await self._add(
                keys=[counts_key(self._prefix, namespace), namespaces_key(self._prefix)],
                args=args,
            )

    async def get_counts(self, namespace: str) -> dict[str, dict[str, float]]:
        check_ledger_args(namespace)
        with map_redis_exceptions("ledger get_counts"):
            raw = await self._client.hgetall(counts_key(self._prefix, namespace))
        found: dict[str, dict[str, float]] = {}
        for field, value in raw.items():
            key, name = json.loads(_text(field))
            found.setdefault(key, {})[name] = float(_text(value))
        return found

    async def count_namespaces(self) -> list[str]:
        with map_redis_exceptions("ledger count_namespaces"):
            raw = await self._client.smembers(namespaces_key(self._prefix))
        return sorted(_text(name) for name in raw)

    async def mark(self, namespace: str, key: str, *, ttl: float, value: str = "") -> bool:
        check_ledger_args(namespace, key)
        checked_value(value)
        milliseconds = max(1, math.ceil(checked_ttl(ttl) * 1000))
        with map_redis_exceptions("ledger mark"):
            reply = await self._mark(
                keys=[mark_key(self._prefix, namespace, key)], args=[str(milliseconds), value]
            )
        return int(reply) == 1

    async def marked(self, namespace: str, keys_: Collection[str]) -> dict[str, str]:
        check_ledger_args(namespace)
        wanted = list(dict.fromkeys(keys_))
        found: dict[str, str] = {}
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            with map_redis_exceptions("ledger marked"):
                positions = await self._marked(
                    keys=[mark_key(self._prefix, namespace, key) for key in chunk], args=[]
                )
            for position, value in zip(positions[::2], positions[1::2], strict=True):
                found[chunk[int(position) - 1]] = _text(value)
        return found
