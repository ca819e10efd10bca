"""Finished workflows expire with the broker's retention; active ones never do.

The rule is checked against written-out cases and against a reference written
here (a finished record goes once ``updated_at + max(done, results)`` has
passed); the walk over a real store and the coordinator's sweep run on real
brokers, the sweep under a MockClock.
"""

from __future__ import annotations

import json
from pathlib import Path

import hypothesis.strategies as st
import pytest
import trio
import trio.testing
from hypothesis import given

import guild
from guild import Job, Step, Workflow
from guild.workflows._expiry import expire, expired, retention_of
from guild.workflows._store import WorkflowRecord, WorkflowStore
from tests._brokers import broker_of

STATUSES = ("running", "compensating", "done", "failed", "cancelled")


def record(workflow_id: str, status: str, updated_at: float) -> WorkflowRecord:
    return WorkflowRecord(
        id=workflow_id,
        name="w",
        status=status,
        spec=json.dumps({}),
        state=json.dumps({}),
        version=1,
        created_at=min(updated_at, 1.0),
        updated_at=updated_at,
    )


class TestRule:
    def test_written_out(self) -> None:
        keep = guild.Retention(results=100.0, done=300.0)  # records kept 300 s
        records = [
            record("done-old", "done", 1000.0),
            record("failed-old", "failed", 1000.0),
            record("cancelled-edge", "cancelled", 1200.0),
            record("done-young", "done", 1200.5),
            record("running-old", "running", 0.0),
            record("compensating-old", "compensating", 0.0),
        ]
        assert expired(records, keep, 1500.0) == ["done-old", "failed-old", "cancelled-edge"]
        assert expired(records, keep, 1500.0, older_than=400.0) == ["done-old", "failed-old"]

    def test_results_longer_than_done_keep_the_record(self) -> None:
        keep = guild.Retention(results=500.0, done=10.0)
        assert expired([record("a", "done", 0.0)], keep, 499.0) == []
        assert expired([record("a", "done", 0.0)], keep, 500.0) == ["a"]

    @given(
        st.lists(
            st.tuples(st.sampled_from(STATUSES), st.floats(0, 10_000)), max_size=20, unique=True
        ),
        st.floats(1, 5000),
        st.floats(1, 5000),
        st.floats(0, 20_000),
    )
    def test_matches_the_reference(
        self, rows: list[tuple[str, float]], results: float, done: float, now: float
    ) -> None:
        records = [record(f"w{i}", status, at) for i, (status, at) in enumerate(rows)]
        kept_for = done if done > results else results
        want = [
            f"w{i}"
            for i, (status, at) in enumerate(rows)
            if status in ("done", "failed", "cancelled") and at + kept_for <= now
        ]
        assert expired(records, guild.Retention(results=results, done=done), now) == want


async def test_retention_of_reads_the_brokers_own(tmp_path: Path) -> None:
    # The coordinator's sweep and ``guild workflow purge`` both keep records this long.
    keep = guild.Retention(results=7.0, done=11.0, dead=13.0)
    assert retention_of(guild.MemoryBroker(retention=keep)) == keep
    async with guild.open_broker(f"sqlite:///{tmp_path / 'kept.db'}", retention=keep) as broker:
        assert retention_of(broker) == keep
    assert retention_of(guild.MemoryBroker()) == guild.Retention()
    # A broker with no ``retention`` (or something else by that name) gets the default.
    assert retention_of(object()) == guild.Retention()
    assert retention_of(type("Odd", (), {"retention": 5})()) == guild.Retention()


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
async def test_walk_deletes_every_expired_page_by_page(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    async with broker_of(kind, request, tmp_path) as broker:
        assert isinstance(broker, WorkflowStore)
        now = broker.now()
        for i in range(23):
            await broker.create_workflow(record(f"old-{i:02}", "done", now - 10 * 86_400))
        for i in range(4):
            await broker.create_workflow(record(f"run-{i}", "running", now - 10 * 86_400))
            await broker.create_workflow(record(f"new-{i}", "failed", now))
        deleted = await expire(broker, guild.Retention(), now, page=5)
        assert deleted == 23
        left = sorted(one.id for one in await broker.list_workflows(limit=100))
        assert left == [f"new-{i}" for i in range(4)] + [f"run-{i}" for i in range(4)]


async def test_the_coordinator_expires_finished_workflows(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Records are kept 120 s; the coordinator looks every 30 s (a quarter of it).
    broker = guild.MemoryBroker(retention=guild.Retention(results=60.0, done=120.0))
    app = guild.Guild("wf-expiry", workflow_poll=1.0)
    never = trio.Event()

    @app.worker("quick")
    async def quick(job: Job) -> str:
        return "ok"

    @app.worker("slow", timeout=10_000)
    async def slow(job: Job) -> str:
        await never.wait()
        return "late"

    async with app.open(broker):
        finished = await app.submit(Workflow([Step("a", "quick")], id="finished"))
        assert (await app.workflow(finished, wait=60)).status == "done"
        ended_at = trio.current_time()
        await app.submit(Workflow([Step("b", "slow")], id="active"))
        await trio.sleep_until(ended_at + 119)
        assert sorted(one.id for one in await broker.list_workflows()) == ["active", "finished"]
        await trio.sleep_until(ended_at + 120 + 31)
        assert [one.id for one in await broker.list_workflows()] == ["active"]
        await trio.sleep(5000)
        assert [one.id for one in await broker.list_workflows()] == ["active"]
        never.set()
