"""``view(wait=...)`` wakes for a change to its own workflow, not to every workflow.

With a waiter per running workflow (a PM project each), waking them all on
every write made each re-read its record: reads grew as the square of the
workflows in flight. The clock is a MockClock that moves only when told, so
no poll runs between the steps below; reads are counted by workflow id.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import trio
import trio.testing

from guild import Step, Workflow
from guild.brokers import MemoryBroker
from guild.workflows._coordinator import _changes, cancel, submit, view
from guild.workflows._store import WorkflowRecord


class ReadCountingBroker(MemoryBroker):
    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.reads: Counter[str] = Counter()

    async def get_workflow(self, workflow_id: str) -> WorkflowRecord | None:
        self.reads[workflow_id] += 1
        return await super().get_workflow(workflow_id)


async def test_a_waiter_wakes_for_its_own_workflow_only(
    mock_clock: trio.testing.MockClock,
) -> None:
    broker = ReadCountingBroker()
    mine = await submit(broker, Workflow([Step("a", "q"), Step("b", "q", after=["a"])]), None)
    other = await submit(broker, Workflow([Step("a", "q")]), None)
    seen: list[str] = []

    async def wait_for_mine() -> None:
        seen.append((await view(broker, mine, wait=10.0)).status)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_for_mine)
        await trio.testing.wait_all_tasks_blocked()
        assert broker.reads[mine] == 1

        assert await cancel(broker, other, "not this one")
        await trio.testing.wait_all_tasks_blocked()
        assert broker.reads[mine] == 1  # another workflow's write left it asleep

        assert await cancel(broker, mine, "this one")  # reads it too, before writing
        read_by_cancel = broker.reads[mine]
        await trio.testing.wait_all_tasks_blocked()
        assert broker.reads[mine] == read_by_cancel + 1  # its own write woke it to read once
        assert seen == []  # cancelling, still active: it goes on waiting

        mock_clock.jump(11.0)
    assert len(seen) == 1
    # The last waiter to leave drops the workflow's event: none is left behind.
    assert mine not in _changes.get(broker, {})
