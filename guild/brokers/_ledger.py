"""The Ledger: small durable counters and marks that workers keep in their broker.

An optional broker protocol (memory, SQLite and Redis implement it; a broker
without it still runs jobs). Two facilities:

* **counts** — ``add_counts(namespace, key, {"sent": 1, ...})`` adds to named
  numbers, atomically per call; ``get_counts(namespace)`` reads them back as
  ``{key: {name: value}}``. Statistics that must survive restarts and be shared
  by every process (``guild stats`` and ``/metrics`` show every namespace).
* **marks** — ``mark(namespace, key, ttl=..., value=...)`` sets a mark (with a
  short text value) if it is absent and says whether this call set it;
  ``marked(namespace, keys)`` gives the values of those set. A mark lapses
  ``ttl`` seconds after it was set. Use it to remember, across retries and
  processes, that a side effect was done (and what it returned: a message id).

Namespaces and keys are any non-empty text; count names too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from typing import Protocol, runtime_checkable

import trio

from .._errors import BrokerClosed, BrokerError
from .._exports import publish


@runtime_checkable
class Ledger(Protocol):
    """Durable counters and set-if-absent marks, kept in the broker (optional protocol)."""

    async def add_counts(self, namespace: str, key: str, counts: Mapping[str, float]) -> None:
        """Add each of ``counts`` to ``key``'s numbers in ``namespace``, in one atomic step."""
        ...

    async def get_counts(self, namespace: str) -> dict[str, dict[str, float]]:
        """Every key's numbers in ``namespace`` (``{}`` when none were added)."""
        ...

    async def count_namespaces(self) -> list[str]:
        """The namespaces that hold counts, sorted."""
        ...

    async def mark(self, namespace: str, key: str, *, ttl: float, value: str = "") -> bool:
        """Set the mark ``key`` to ``value`` for ``ttl`` seconds unless it is set;
        True if this call set it (a set mark keeps its value and its lapse)."""
        ...

    async def marked(self, namespace: str, keys: Collection[str]) -> dict[str, str]:
        """The value of each of ``keys`` that is marked (and not lapsed) in ``namespace``."""
        ...


def check_ledger_args(namespace: str, key: str | None = None) -> None:
    """Refuse an empty namespace or key, naming which.

    Raises:
        ValueError: ``namespace`` or ``key`` is empty or not text.
    """
    if not isinstance(namespace, str) or not namespace:
        raise ValueError(f"a ledger namespace must be non-empty text, got {namespace!r}")
    if key is not None and (not isinstance(key, str) or not key):
        raise ValueError(f"a ledger key must be non-empty text, got {key!r}")


def checked_counts(counts: Mapping[str, float]) -> dict[str, float]:
    """``counts`` as floats, refusing empty names and values that are not finite numbers.

    Raises:
        ValueError: a name is empty, or a value is not a finite number.
    """
    checked: dict[str, float] = {}
    for name, value in counts.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"a count name must be non-empty text, got {name!r}")
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ValueError(f"count {name!r} must be a finite number, got {value!r}")
        checked[name] = float(value)
    return checked


def checked_value(value: str) -> str:
    """``value`` if it is text.

    Raises:
        TypeError: it is not.
    """
    if not isinstance(value, str):
        raise TypeError(f"a mark's value must be text, got {value!r}")
    return value


def checked_ttl(ttl: float) -> float:
    """``ttl`` if it is a positive finite number of seconds.

    Raises:
        ValueError: it is not.
    """
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not (0 < ttl < math.inf):
        raise ValueError(f"a mark's ttl must be a positive finite number of seconds, got {ttl!r}")
    return float(ttl)


_NO_MARK = (-math.inf, "")


class MemoryLedger:
    """The Ledger in memory (the memory broker's; it lasts as long as the process).

    Args:
        clock: the broker's clock, for marks' lapse.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._counts: dict[str, dict[str, dict[str, float]]] = {}
        self._marks: dict[tuple[str, str], tuple[float, str]] = {}
        self._sets = 0
        self.closed = False

    def _check_open(self) -> None:
        if self.closed:
            raise BrokerClosed("the memory broker is closed")

    async def add_counts(self, namespace: str, key: str, counts: Mapping[str, float]) -> None:
        check_ledger_args(namespace, key)
        checked = checked_counts(counts)
        self._check_open()
        await trio.lowlevel.checkpoint()
        if not checked:
            return
        numbers = self._counts.setdefault(namespace, {}).setdefault(key, {})
        for name, value in checked.items():
            numbers[name] = numbers.get(name, 0.0) + value

    async def get_counts(self, namespace: str) -> dict[str, dict[str, float]]:
        check_ledger_args(namespace)
        self._check_open()
        await trio.lowlevel.checkpoint()
        return {key: dict(numbers) for key, numbers in self._counts.get(namespace, {}).items()}

    async def count_namespaces(self) -> list[str]:
        self._check_open()
        await trio.lowlevel.checkpoint()
        return sorted(self._counts)

    async def mark(self, namespace: str, key: str, *, ttl: float, value: str = "") -> bool:
        check_ledger_args(namespace, key)
        seconds = checked_ttl(ttl)
        checked_value(value)
        self._check_open()
        await trio.lowlevel.checkpoint()
        now = self._clock()
        if self._marks.get((namespace, key), _NO_MARK)[0] > now:
            return False
        self._marks[(namespace, key)] = (now + seconds, value)
        self._sets += 1
        if self._sets % 1024 == 0:
            # Lapsed marks are dropped now and then, so memory follows live marks.
            for lapsed in [k for k, (until, _) in self._marks.items() if until <= now]:
                del self._marks[lapsed]
        return True

    async def marked(self, namespace: str, keys: Collection[str]) -> dict[str, str]:
        check_ledger_args(namespace)
        self._check_open()
        await trio.lowlevel.checkpoint()
        now = self._clock()
        found = {}
        for key in keys:
            until, value = self._marks.get((namespace, key), _NO_MARK)
            if until > now:
                found[key] = value
        return found


async def read_all_counts(broker: object, timeout: float) -> dict[str, dict[str, dict[str, float]]]:
    """Every namespace's counts of ``broker`` for a status page, or ``{}``.

    ``{}`` when the broker keeps no Ledger or does not answer within ``timeout``
    seconds: the page's broker check already reports an unreachable broker.
    """
    if not isinstance(broker, Ledger):
        return {}
    counts: dict[str, dict[str, dict[str, float]]] = {}
    try:
        with trio.fail_after(timeout):
            for namespace in await broker.count_namespaces():
                counts[namespace] = await broker.get_counts(namespace)
    except (trio.TooSlowError, BrokerError):
        return {}
    return counts


# Reprs, tracebacks and pickles name guild.X (see guild._exports).
publish(globals())
