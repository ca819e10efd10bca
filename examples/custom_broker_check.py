"""Run guild's broker conformance suite, as a third-party broker author would.

Here it runs against guild's own MemoryBroker; point ``fresh`` at yours.

    python examples/custom_broker_check.py
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

import guild
from guild.testing import CHECKS, check_broker


@asynccontextmanager
async def fresh() -> AsyncIterator[guild.Broker]:
    broker = guild.MemoryBroker()
    try:
        yield broker
    finally:
        await broker.aclose()


async def main() -> None:
    # A check needing an optional hook your broker lacks (store_raw_for_test, to
    # store garbage and see claim survive it) is skipped, and named here.
    skipped = await check_broker(fresh)
    print(f"{len(CHECKS) - len(skipped)} of {len(CHECKS)} conformance checks passed")
    for reason in skipped:
        print(f"skipped {reason}")


if __name__ == "__main__":
    trio.run(main)
