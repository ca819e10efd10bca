"""Conformance checks of the optional Ledger protocol (``guild.brokers.Ledger``).

A broker without it skips them. Expected values are written out here, not
computed by any Ledger.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import trio

from ..brokers._ledger import Ledger
from ..brokers._protocol import Broker

MakeBroker = Callable[[], AbstractAsyncContextManager[Broker]]


class LedgerMissing(Exception):
    """The broker does not implement the Ledger (the caller turns this into a skip)."""


def _ledger(broker: Broker) -> Ledger:
    if not isinstance(broker, Ledger):
        raise LedgerMissing(f"{type(broker).__name__} does not implement guild.brokers.Ledger")
    return broker


async def ledger_counts(make_broker: MakeBroker) -> None:
    """Counts add up per key and name, namespaces stay apart, concurrent adds all count."""
    with trio.fail_after(20.0):
        async with make_broker() as broker:
            ledger = _ledger(broker)
            assert await ledger.get_counts("deliveries") == {}
            await ledger.add_counts("deliveries", "#general", {"sent": 1, "split": 2})
            await ledger.add_counts("deliveries", "#general", {"sent": 2, "waited": 0.25})
            await ledger.add_counts("deliveries", "a:b", {"sent": 1})
            await ledger.add_counts("other:ns", "#general", {"sent": 7})
            await ledger.add_counts("deliveries", "#empty", {})

            async def add_one() -> None:
                await ledger.add_counts("race", "k", {"n": 1})

            async with trio.open_nursery() as nursery:
                for _ in range(50):
                    nursery.start_soon(add_one)
            assert await ledger.get_counts("deliveries") == {
                "#general": {"sent": 3.0, "split": 2.0, "waited": 0.25},
                "a:b": {"sent": 1.0},
            }
            assert await ledger.get_counts("other:ns") == {"#general": {"sent": 7.0}}
            assert await ledger.get_counts("race") == {"k": {"n": 50.0}}
            assert await ledger.count_namespaces() == ["deliveries", "other:ns", "race"]
            for bad in ({"": 1}, {"sent": float("nan")}, {"sent": "1"}):
                try:
                    await ledger.add_counts("deliveries", "k", bad)  # type: ignore[arg-type]
                except ValueError:
                    pass
                else:
                    raise AssertionError(f"add_counts accepted {bad!r}")


async def ledger_marks(make_broker: MakeBroker) -> None:
    """A mark is set once, by one of racing callers; it lapses after its ttl."""
    with trio.fail_after(20.0):
        async with make_broker() as broker:
            ledger = _ledger(broker)
            assert await ledger.marked("posted", ["a", "b"]) == {}
            assert await ledger.mark("posted", "a", ttl=60, value="ts-1") is True
            assert await ledger.mark("posted", "a", ttl=60, value="ts-2") is False
            # Namespace and key stay apart whatever separators they hold.
            assert await ledger.mark("posted:a", "b", ttl=60) is True
            assert await ledger.marked("posted", ["a", "b", "a:b"]) == {"a": "ts-1"}
            assert await ledger.marked("posted:a", ["b"]) == {"b": ""}
            assert await ledger.marked("posted", []) == {}
            many = [f"m{i}" for i in range(1200)]
            wins: list[bool] = []

            async def race() -> None:
                wins.append(await ledger.mark("race", "one", ttl=60))

            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    nursery.start_soon(race)
            assert wins.count(True) == 1, f"{wins.count(True)} callers set the same mark"
            for key in many[::2]:
                await ledger.mark("bulk", key, ttl=60, value=key.upper())
            assert await ledger.marked("bulk", many) == {k: k.upper() for k in many[::2]}
            assert await ledger.mark("short", "x", ttl=0.3, value="old") is True
            await trio.sleep(0.6)
            assert await ledger.marked("short", ["x"]) == {}
            assert await ledger.mark("short", "x", ttl=60, value="new") is True
            assert await ledger.marked("short", ["x"]) == {"x": "new"}
            for bad_ttl in (0, -1.0, float("inf")):
                try:
                    await ledger.mark("short", "y", ttl=bad_ttl)
                except ValueError:
                    pass
                else:
                    raise AssertionError(f"mark accepted ttl={bad_ttl!r}")
