"""Conformance checks of the optional workflow store (``guild.workflows.WorkflowStore``).

A broker without it skips them. Expected values are written out here, or built
from the records the check itself wrote, never read back from the store under
test first. Durability (records outlive the broker object) and damaged stored
records are broker-specific: see ``tests/brokers/test_workflow_store.py``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Collection
from contextlib import AbstractAsyncContextManager

import attrs
import trio

from .._errors import BrokerClosed
from ..brokers._protocol import Broker
from ..brokers._workflow_store import WorkflowRecord, WorkflowStore

MakeBroker = Callable[[], AbstractAsyncContextManager[Broker]]
_LIMIT = 20.0


class WorkflowStoreMissing(Exception):
    """The broker does not implement the workflow store (the caller makes this a skip)."""


def _store(broker: Broker) -> WorkflowStore:
    if not isinstance(broker, WorkflowStore):
        raise WorkflowStoreMissing(
            f"{type(broker).__name__} does not implement guild.workflows.WorkflowStore"
        )
    return broker


def _record(
    workflow_id: str, *, status: str = "running", created_at: float = 1000.0
) -> WorkflowRecord:
    return WorkflowRecord(
        id=workflow_id,
        name="order",
        status=status,
        spec='{"steps":[]}',
        state='{"steps":{}}',
        version=0,
        created_at=created_at,
        updated_at=created_at,
    )


async def workflow_round_trip(make_broker: MakeBroker) -> None:
    """create then get gives back every field as written; an unknown id is None."""
    with trio.fail_after(_LIMIT):
        async with make_broker() as broker:
            store = _store(broker)
            spec = json.dumps(
                {"steps": [{"name": "charge", "queue": "payments", "after": []}], "n": "é✓"},
                ensure_ascii=False,
            )
            state = json.dumps({"steps": {"charge": "pending"}, "big": "x" * 100_000})
            record = WorkflowRecord(
                id="wf-ü:1",
                name="Bestellung ✓",
                status="running",
                spec=spec,
                state=state,
                version=7,
                created_at=1_700_000_000.123456,
                updated_at=1_700_000_001.654321,
            )
            assert await store.get_workflow("wf-ü:1") is None
            assert await store.create_workflow(record) is True
            got = await store.get_workflow("wf-ü:1")
            assert got == record, f"stored {record!r}, got back {got!r}"
            assert got is not None and (got.spec, got.state) == (spec, state)
            assert isinstance(got.version, int) and isinstance(got.created_at, float)
            assert await store.get_workflow("wf-ü:2") is None
            await broker.aclose()
            try:
                await store.get_workflow("wf-ü:1")
            except BrokerClosed:
                pass
            else:
                raise AssertionError("get_workflow on a closed broker did not raise BrokerClosed")


async def workflow_create_once(make_broker: MakeBroker) -> None:
    """A second create with a taken id returns False and changes nothing."""
    with trio.fail_after(_LIMIT):
        async with make_broker() as broker:
            store = _store(broker)
            first = _record("wf-1")
            assert await store.create_workflow(first) is True
            other = attrs.evolve(
                first, name="other", status="done", state='{"x":1}', version=5, created_at=1.0
            )
            assert await store.create_workflow(other) is False
            assert await store.get_workflow("wf-1") == first
            assert await store.list_workflows() == [first]
            assert await store.list_workflows(statuses=["done"]) == []


async def workflow_compare_and_set(make_broker: MakeBroker) -> None:
    """update applies only with the stored version, and then bumps it and updated_at."""
    with trio.fail_after(_LIMIT):
        async with make_broker() as broker:
            store = _store(broker)
            record = _record("wf-1")
            await store.create_workflow(record)
            before = broker.now()
            applied = await store.update_workflow(
                "wf-1", version=0, status="compensating", state='{"step":"a"}'
            )
            after = broker.now()
            assert applied is True
            got = await store.get_workflow("wf-1")
            assert got is not None
            assert (got.status, got.state, got.version) == ("compensating", '{"step":"a"}', 1)
            assert before <= got.updated_at <= after, (before, got.updated_at, after)
            assert (got.id, got.name, got.spec, got.created_at) == (
                "wf-1",
                "order",
                '{"steps":[]}',
                1000.0,
            )
            # Stale, ahead, and unknown: nothing changes.
            for version in (0, 2, 10):
                assert not await store.update_workflow(
                    "wf-1", version=version, status="done", state="{}"
                ), f"version {version} applied over stored version 1"
            assert await store.get_workflow("wf-1") == got
            assert not await store.update_workflow("nope", version=0, status="done", state="{}")
            assert await store.get_workflow("nope") is None
            assert await store.update_workflow("wf-1", version=1, status="done", state="[1]")
            final = await store.get_workflow("wf-1")
            assert final is not None and (final.status, final.state, final.version) == (
                "done",
                "[1]",
                2,
            )


async def workflow_concurrent_updates(make_broker: MakeBroker) -> None:
    """Of several updaters racing with the same version, exactly one wins, every round."""
    with trio.fail_after(_LIMIT):
        async with make_broker() as broker:
            store = _store(broker)
            await store.create_workflow(_record("wf-race"))
            for version in range(5):
                wins: list[int] = []

                async def update(i: int, version: int = version, wins: list[int] = wins) -> None:
                    state = json.dumps({"by": i})
                    if await store.update_workflow(
                        "wf-race", version=version, status="running", state=state
                    ):
                        wins.append(i)

                async with trio.open_nursery() as nursery:
                    for i in range(8):
                        nursery.start_soon(update, i)
                assert len(wins) == 1, f"round {version}: {len(wins)} updaters won ({wins})"
                got = await store.get_workflow("wf-race")
                assert got is not None
                assert (got.version, got.state) == (version + 1, json.dumps({"by": wins[0]}))


async def workflow_list(make_broker: MakeBroker) -> None:
    """list_workflows: oldest first (ties by id), filtered by status, cut at limit."""
    with trio.fail_after(_LIMIT):
        async with make_broker() as broker:
            store = _store(broker)
            assert await store.list_workflows() == []
            made = [
                _record("e", status="running", created_at=50.0),
                _record("a", status="done", created_at=30.0),
                _record("d", status="running", created_at=10.0),
                _record("c", status="failed", created_at=30.0),
                _record("b", status="running", created_at=30.0),
                _record("f", status="compensating", created_at=20.0),
            ]
            for record in made:
                assert await store.create_workflow(record)
            by_id = {r.id: r for r in made}

            async def ids(statuses: Collection[str] | None = None, limit: int = 100) -> list[str]:
                found = await store.list_workflows(statuses=statuses, limit=limit)
                for record in found:
                    assert record == by_id[record.id], f"listed {record!r}"
                return [record.id for record in found]

            assert await ids() == ["d", "f", "a", "b", "c", "e"]
            assert await ids(limit=3) == ["d", "f", "a"]
            assert await ids(limit=0) == []
            assert await ids(statuses=["running"]) == ["d", "b", "e"]
            assert await ids(statuses={"running"}, limit=2) == ["d", "b"]
            assert await ids(statuses=("done", "failed", "running")) == ["d", "a", "b", "c", "e"]
            assert await ids(statuses=["failed", "done"], limit=1) == ["a"]
            assert await ids(statuses=["running", "running"]) == ["d", "b", "e"]
            assert await ids(statuses=[]) == []
            assert await ids(statuses=["unheard-of"]) == []
            # A status change moves the record between the lists, keeping its age.
            assert await store.update_workflow("d", version=0, status="done", state="{}")
            moved = await store.get_workflow("d")
            assert moved is not None
            by_id["d"] = attrs.evolve(
                by_id["d"], status="done", state="{}", version=1, updated_at=moved.updated_at
            )
            assert await ids(statuses=["running"]) == ["b", "e"]
            assert await ids(statuses=["done"]) == ["d", "a"]
            assert await ids() == ["d", "f", "a", "b", "c", "e"]
            # Many records: pages of a list agree with one long list.
            for i in range(150):
                record = _record(f"n{i:03}", status="done", created_at=100.0 + i)
                by_id[record.id] = record
                await store.create_workflow(record)
            assert await ids(statuses=["done"], limit=1000) == ["d", "a"] + [
                f"n{i:03}" for i in range(150)
            ]
            assert len(await ids()) == 100, "the default limit is 100"


async def workflow_delete(make_broker: MakeBroker) -> None:
    """delete_workflows removes the records named, counts those that existed, and frees the id."""
    with trio.fail_after(_LIMIT):
        async with make_broker() as broker:
            store = _store(broker)
            for i, status in enumerate(["running", "done", "done", "failed"]):
                await store.create_workflow(_record(f"wf-{i}", status=status, created_at=float(i)))
            assert await store.delete_workflows([]) == 0
            assert await store.delete_workflows(["wf-1", "wf-3", "wf-1", "missing"]) == 2
            assert await store.get_workflow("wf-1") is None
            assert await store.get_workflow("wf-3") is None
            assert [r.id for r in await store.list_workflows()] == ["wf-0", "wf-2"]
            assert [r.id for r in await store.list_workflows(statuses=["done"])] == ["wf-2"]
            assert [r.id for r in await store.list_workflows(statuses=["failed"])] == []
            assert not await store.update_workflow("wf-1", version=0, status="done", state="{}")
            assert await store.delete_workflows(["wf-1"]) == 0
            again = _record("wf-1", status="cancelled", created_at=9.0)
            assert await store.create_workflow(again)
            assert await store.get_workflow("wf-1") == again
            assert [r.id for r in await store.list_workflows(statuses=["done"])] == ["wf-2"]


async def workflow_bad_arguments(make_broker: MakeBroker) -> None:
    """Bad arguments raise a typed error naming what was wrong, and store nothing."""
    with trio.fail_after(_LIMIT):
        async with make_broker() as broker:
            store = _store(broker)
            await store.create_workflow(_record("wf-1"))
            refused: list[tuple[str, type[Exception], str]] = []

            async def expect(
                what: str, error: type[Exception], says: str, call: Awaitable[object]
            ) -> None:
                try:
                    await call
                except error as raised:
                    message = str(raised)
                else:
                    raise AssertionError(f"{what}: no {error.__name__}")
                assert says in message, f"{what}: {message}"
                refused.append((what, error, says))

            await expect(
                "non-JSON state",
                ValueError,
                "state is not valid JSON",
                store.update_workflow("wf-1", version=0, status="done", state="{oops"),
            )
            await expect(
                "empty status",
                ValueError,
                "status",
                store.update_workflow("wf-1", version=0, status="", state="{}"),
            )
            await expect(
                "negative version",
                ValueError,
                "version",
                store.update_workflow("wf-1", version=-1, status="done", state="{}"),
            )
            await expect("negative limit", ValueError, "limit", store.list_workflows(limit=-1))
            await expect(
                "one string as statuses",
                TypeError,
                "'running'",
                store.list_workflows(statuses="running"),
            )
            await expect("one string as ids", TypeError, "'wf-1'", store.delete_workflows("wf-1"))
            await expect("empty id", ValueError, "workflow id", store.get_workflow(""))
            await expect(
                "not a record",
                TypeError,
                "WorkflowRecord",
                store.create_workflow({"id": "x"}),  # type: ignore[arg-type]
            )
            assert len(refused) == 8
            assert await store.get_workflow("wf-1") == _record("wf-1")
            assert [r.id for r in await store.list_workflows()] == ["wf-1"]
