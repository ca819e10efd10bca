"""The worker's hand-off box (guild._box): a memory channel's behaviour, for less."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from guild._box import Box


async def test_a_put_goes_to_the_taker_that_waited_longest() -> None:
    box: Box[int] = Box()
    got: list[tuple[str, int]] = []

    async def take(name: str) -> None:
        got.append((name, await box.get()))

    async with trio.open_nursery() as nursery:
        for name in ["first", "second", "third"]:
            nursery.start_soon(take, name)
            await trio.testing.wait_all_tasks_blocked()
        assert box.idle_takers() == 3
        box.put(10)
        box.put(20)
        # Both went straight to waiting takers: nothing is buffered.
        assert box.poll() is None
        assert box.idle_takers() == 1
        box.put(30)
    # Each taker got the item put first after it began to wait (they run in any order).
    assert dict(got) == {"first": 10, "second": 20, "third": 30}


async def test_items_buffer_in_order_while_no_one_waits() -> None:
    box: Box[str] = Box()
    for item in ["a", "b", "c"]:
        box.put(item)
    assert box.idle_takers() == 0
    assert box.buffered() == 3
    assert box.poll() == "a"
    assert await box.get() == "b"
    assert box.poll() == "c"
    assert box.poll() is None
    assert box.buffered() == 0


async def test_close_ends_waiting_takers_and_later_ones_once_empty() -> None:
    box: Box[int] = Box()
    ended: list[str] = []

    async def take(name: str) -> None:
        with pytest.raises(trio.EndOfChannel):
            await box.get()
        ended.append(name)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(take, "waiting")
        await trio.testing.wait_all_tasks_blocked()
        box.close()
    assert ended == ["waiting"]
    with pytest.raises(trio.ClosedResourceError):
        box.put(1)
    with pytest.raises(trio.EndOfChannel):
        box.poll()


async def test_what_was_buffered_before_close_is_still_taken() -> None:
    box: Box[int] = Box()
    box.put(1)
    box.close()
    assert await box.get() == 1
    with pytest.raises(trio.EndOfChannel):
        await box.get()


async def test_a_cancelled_taker_gives_up_its_place() -> None:
    box: Box[int] = Box()
    got: list[int] = []

    async def take() -> None:
        got.append(await box.get())

    cancelled = trio.CancelScope()

    async def take_cancelled() -> None:
        with cancelled:
            await box.get()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(take)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(take_cancelled)
        await trio.testing.wait_all_tasks_blocked()
        assert box.idle_takers() == 2
        cancelled.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert box.idle_takers() == 1
        box.put(7)
        # The cancelled taker is gone: a second item is buffered, not lost.
        box.put(8)
    assert got == [7]
    assert box.poll() == 8


async def test_get_is_a_checkpoint_even_with_an_item_ready() -> None:
    box: Box[int] = Box()
    box.put(1)
    with trio.CancelScope() as scope:
        scope.cancel()
        await box.get()
    assert scope.cancelled_caught
    assert box.poll() == 1  # the cancelled get took nothing
