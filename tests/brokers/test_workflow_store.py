"""The workflow store beyond the conformance suite: what only a durable broker has.

Records outlive the broker object (a new one on the same file or prefix reads
them), two broker objects racing on one store still let exactly one
compare-and-set win, damaged stored records never break a list, and on a Redis
Cluster every workflow key lands in the queue keys' slot.
"""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import structlog
import trio

from guild import BrokerError
from guild.brokers.redis import RedisBroker
from guild.brokers.sqlite import SqliteBroker
from guild.workflows import WorkflowRecord, WorkflowStore
from tests._redis_server import RedisCluster, redis_cli_binary

OpenStore = Callable[[], AbstractAsyncContextManager[Any]]


def _record(workflow_id: str, created_at: float, status: str = "running") -> WorkflowRecord:
    return WorkflowRecord(
        id=workflow_id,
        name="order",
        status=status,
        spec='{"steps":["a","b"]}',
        state='{"a":"done"}',
        version=0,
        created_at=created_at,
        updated_at=created_at,
    )


@pytest.fixture(params=["sqlite", "redis", "redis-cluster"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> OpenStore:
    """Opens a broker on the same store each time (one file, or one key prefix)."""
    kind = request.param
    url = None
    if kind != "sqlite":
        server = request.getfixturevalue("redis_server" if kind == "redis" else "redis_cluster")
        url = server.url
    prefix = f"wf-{request.node.name}"

    @asynccontextmanager
    async def open_one() -> AsyncIterator[Any]:
        if url is None:
            broker: Any = await SqliteBroker.open(tmp_path / "workflows.db")
        else:
            broker = await RedisBroker.open(url, prefix=prefix)
        try:
            yield broker
        finally:
            await broker.aclose()

    return open_one


async def test_records_survive_closing_and_reopening(open_store: OpenStore) -> None:
    first, second = _record("wf-1", 10.0), _record("wf-2", 20.0, status="done")
    async with open_store() as broker:
        assert isinstance(broker, WorkflowStore)
        assert await broker.create_workflow(first)
        assert await broker.create_workflow(second)
        assert await broker.update_workflow("wf-1", version=0, status="failed", state="[]")
        updated = await broker.get_workflow("wf-1")
    async with open_store() as broker:
        assert await broker.get_workflow("wf-1") == updated
        assert updated is not None and (updated.status, updated.version) == ("failed", 1)
        assert await broker.get_workflow("wf-2") == second
        assert await broker.list_workflows() == [updated, second]
        assert await broker.list_workflows(statuses=["failed"]) == [updated]
        assert not await broker.create_workflow(_record("wf-1", 5.0))
        assert await broker.delete_workflows(["wf-2"]) == 1
    async with open_store() as broker:
        assert await broker.list_workflows() == [updated]


async def test_two_brokers_on_one_store_race_and_one_wins(open_store: OpenStore) -> None:
    async with open_store() as one, open_store() as other:
        assert await one.create_workflow(_record("wf-race", 1.0))
        assert not await other.create_workflow(_record("wf-race", 2.0))
        for version in range(4):
            wins: list[str] = []

            async def update(
                broker: Any, who: str, version: int = version, wins: list[str] = wins
            ) -> None:
                state = f'{{"by":"{who}"}}'
                if await broker.update_workflow(
                    "wf-race", version=version, status="running", state=state
                ):
                    wins.append(who)

            async with trio.open_nursery() as nursery:
                for i in range(4):
                    nursery.start_soon(update, one, f"one-{i}")
                    nursery.start_soon(update, other, f"other-{i}")
            assert len(wins) == 1, wins
            got = await other.get_workflow("wf-race")
            assert got is not None
            assert (got.version, got.state) == (version + 1, f'{{"by":"{wins[0]}"}}')


# --- damaged records --------------------------------------------------------------

# (id, the field the reason names) for each damaged record stored below.
_DAMAGED = {
    "bad-version": "version",
    "bad-json-state": "state",
    "bad-utf8-state": "state",
    "bad-created-at": "created_at",
    "deep-spec": "spec",
}


def _damage_sqlite(path: Path) -> None:
    db = sqlite3.connect(path)
    try:
        good = ("n", "running", '{"s":1}', "{}", 0, 15.0, 15.0)
        rows: list[tuple[str, tuple[Any, ...]]] = [
            ("bad-version", ("n", "running", "{}", "{}", "abc", 11.0, 11.0)),
            ("bad-json-state", ("n", "running", "{}", "{oops", 0, 12.0, 12.0)),
            ("bad-utf8-state", ("n", "running", "{}", b"\xff\xfe{}", 0, 13.0, 13.0)),
            ("bad-created-at", ("n", "running", "{}", "{}", 0, "yesterday", 14.0)),
            ("deep-spec", ("n", "running", "[" * 100_000 + "]" * 100_000, "{}", 0, 16.0, 16.0)),
        ]
        for workflow_id, values in rows:
            marks = ", ".join("CAST(? AS TEXT)" if isinstance(v, bytes) else "?" for v in values)
            db.execute(
                "INSERT INTO workflows (id, name, status, spec, state, version, created_at,"
                f" updated_at) VALUES (?, {marks})",
                (workflow_id, *values),
            )
        db.execute("INSERT INTO workflows VALUES (?, ?, ?, ?, ?, ?, ?, ?)", ("good-late", *good))
        db.commit()
    finally:
        db.close()


async def _damage_redis(broker: RedisBroker) -> None:
    client, prefix = await broker.redis_client(), broker._prefix

    async def store(workflow_id: str, score: float, **fields: str | bytes) -> None:
        values: dict[str, str | bytes] = {
            "id": workflow_id,
            "name": "n",
            "status": "running",
            "spec": "{}",
            "state": "{}",
            "version": "0",
            "created_at": repr(score),
            "updated_at": repr(score),
        }
        values.update(fields)
        await client.hset(f"{prefix}:wf:{workflow_id}", values)
        for index in (f"{prefix}:wf-index", f"{prefix}:wf-status:running"):
            await client.zadd(index, {workflow_id: score})

    await store("bad-version", 11.0, version="abc")
    await store("bad-json-state", 12.0, state="{oops")
    await store("bad-utf8-state", 13.0, state=b"\xff\xfe{}")
    await store("bad-created-at", 14.0, created_at="yesterday")
    await store("deep-spec", 16.0, spec="[" * 100_000 + "]" * 100_000)
    await store("good-late", 15.0, spec='{"s":1}')
    # An index entry whose hash is gone: passed over.
    await client.zadd(f"{prefix}:wf-index", {"no-hash": 1.0})
    await client.zadd(f"{prefix}:wf-status:running", {"no-hash": 1.0})


async def test_damaged_records_are_skipped_by_lists_and_refused_by_get(
    open_store: OpenStore, tmp_path: Path
) -> None:
    async with open_store() as broker:
        await broker.create_workflow(_record("good-early", 1.0))
        if isinstance(broker, SqliteBroker):
            _damage_sqlite(tmp_path / "workflows.db")
        else:
            await _damage_redis(broker)
        late = WorkflowRecord(
            id="good-late",
            name="n",
            status="running",
            spec='{"s":1}',
            state="{}",
            version=0,
            created_at=15.0,
            updated_at=15.0,
        )
        with structlog.testing.capture_logs() as logs:
            listed = await broker.list_workflows()
            running = await broker.list_workflows(statuses=["running"], limit=2)
        assert listed == [_record("good-early", 1.0), late]
        assert running == [_record("good-early", 1.0), late]
        reported = {
            entry["workflow_id"]: entry["reason"]
            for entry in logs
            if entry["event"] == "workflow_record_unreadable"
        }
        assert set(reported) == set(_DAMAGED)
        for workflow_id, field in _DAMAGED.items():
            assert field in reported[workflow_id], (workflow_id, reported[workflow_id])
            with pytest.raises(BrokerError, match=f"workflow '{workflow_id}'.*unreadable.*{field}"):
                await broker.get_workflow(workflow_id)
        # A damaged version matches no compare-and-set; delete clears them all.
        assert not await broker.update_workflow("bad-version", version=0, status="x", state="{}")
        assert await broker.update_workflow("bad-json-state", version=0, status="done", state="{}")
        assert await broker.delete_workflows(list(_DAMAGED)) == len(_DAMAGED)
        with structlog.testing.capture_logs() as logs:
            assert await broker.list_workflows() == [_record("good-early", 1.0), late]
        assert logs == []


# --- Redis Cluster -----------------------------------------------------------------


def _keys_on(port: int, pattern: str) -> list[str]:
    done = subprocess.run(
        [redis_cli_binary(), "-p", str(port), "--scan", "--pattern", pattern],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return done.stdout.split()


async def test_cluster_workflow_keys_share_the_queue_keys_node(
    redis_cluster: RedisCluster,
) -> None:
    broker = await RedisBroker.open(redis_cluster.url, prefix="wfslot")
    try:
        for i, status in enumerate(["running", "done", "failed", "cancelled"]):
            assert await broker.create_workflow(_record(f"w{i}", float(i), status=status))
        assert await broker.update_workflow("w0", version=0, status="compensating", state="{}")
        assert [r.id for r in await broker.list_workflows(statuses=["compensating", "done"])] == [
            "w0",
            "w1",
        ]
    finally:
        await broker.aclose()
    found = {port: _keys_on(port, "{wfslot}*") for port in redis_cluster.ports}
    holding = {port: names for port, names in found.items() if names}
    assert len(holding) == 1, holding
    (names,) = holding.values()
    assert {"{wfslot}:wf:w0", "{wfslot}:wf-index", "{wfslot}:wf-status:compensating"} <= set(names)
