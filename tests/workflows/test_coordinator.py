"""Workflows run by a real app on real brokers (memory, a SQLite file, a redis-server).

Real clock, each test bounded by an absolute ``trio.fail_after``. The order of
events is forced with Trio events and by waiting on the workflow's own view, not
with sleeps.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
import trio
import trio.testing

import guild
from guild import Compensation, Job, Step, StepInput, Workflow
from guild._codec import encode_result
from guild.brokers import Broker
from guild.brokers.redis import RedisBroker
from guild.brokers.sqlite import SqliteBroker
from guild.observability import EventHub, WorkflowChanged
from guild.workflows._machine import StepSucceeded, apply, start
from guild.workflows._steps import step_job
from guild.workflows._store import WorkflowRecord
from tests._poll import until
from tests._redis_server import RedisServer

_prefixes = itertools.count()


async def finished(app: guild.Guild, workflow_id: str) -> guild.WorkflowView:
    view = await app.workflow(workflow_id, wait=60)
    assert view.finished, view
    return view


async def step_state(app: guild.Guild, workflow_id: str, step: str, state: str) -> None:
    async def reached() -> bool:
        return (await app.workflow(workflow_id)).step(step).state == state

    await until(reached)


class TestDiamond:
    """a, then b and c at once, then d with both results."""

    async def test_runs_in_order_and_passes_results(self, broker: Broker) -> None:
        app = guild.Guild("wf", workflow_poll=0.2)
        seen: list[tuple[str, dict[str, object]]] = []
        started = {"b": trio.Event(), "c": trio.Event()}
        own = {"a": 1, "b": 10, "c": 100, "d": 1000}

        @app.worker("calc", timeout=30)
        async def calc(job: Job) -> int:
            step = StepInput.of(job)
            seen.append((step.step, step.results))
            if step.step in started:
                # b and c wait for each other: only steps started together finish.
                started[step.step].set()
                await started["c" if step.step == "b" else "b"].wait()
            return own[step.step] + sum(int(v) for v in step.results.values())

        workflow = Workflow(
            [
                Step("d", "calc", after=["b", "c"]),  # declared first: order is the DAG's
                Step("b", "calc", after="a"),
                Step("a", "calc", {"x": 1}),
                Step("c", "calc", after="a"),
            ]
        )
        with trio.fail_after(30):
            async with app.open(broker):
                workflow_id = await app.submit(workflow)
                view = await finished(app, workflow_id)
        assert workflow_id == workflow.id
        assert view.status == "done"
        names = [name for name, _ in seen]
        assert names[0] == "a" and sorted(names[1:3]) == ["b", "c"] and names[3] == "d"
        assert dict(seen) == {"a": {}, "b": {"a": 1}, "c": {"a": 1}, "d": {"b": 11, "c": 101}}
        assert {s.name: s.result for s in view.steps} == {"a": 1, "b": 11, "c": 101, "d": 1112}
        for step in view.steps:
            assert step.state == "done" and step.attempts == 1 and step.error is None
            assert step.started_at is not None and step.finished_at is not None
            assert step.started_at <= step.finished_at
            assert step.compensation is None
        assert view.completed[0] == "a" and view.completed[3] == "d"


class TestSaga:
    """A failing step cancels its running sibling, then completed steps are undone,
    last completed first, once each."""

    async def test_failure_cancels_sibling_and_compensates_in_reverse(self, broker: Broker) -> None:
        app = guild.Guild("wf", workflow_poll=0.2)
        undone: list[tuple[str, dict[str, object]]] = []
        c_running = trio.Event()
        c_cancelled = trio.Event()
        workflow_id = ""

        @app.worker("work", timeout=60, max_attempts=3)
        async def work(job: Job) -> str:
            step = StepInput.of(job)
            if step.step == "c":
                c_running.set()
                try:
                    await trio.sleep_forever()
                finally:
                    c_cancelled.set()
            if step.step == "b":
                await step_state(app, workflow_id, "e", "done")
                await c_running.wait()
                raise guild.Reject("b broke")
            return step.step.upper()

        @app.worker("undo", timeout=30)
        async def undo(job: Job) -> None:
            step = StepInput.of(job)
            assert step.kind == "compensation"
            undone.append((step.step, step.results))

        workflow = Workflow(
            [
                Step("a", "work", compensate="undo"),
                Step("b", "work", after="a", compensate="undo"),
                Step("c", "work", after="a", compensate="undo"),
                Step("e", "work", after="a", compensate="undo"),
            ],
            {"undo": Compensation("undo")},
        )
        with trio.fail_after(30):
            async with app.open(broker):
                workflow_id = await app.submit(workflow)
                view = await finished(app, workflow_id)
        assert c_cancelled.is_set()
        assert view.status == "failed"
        assert view.failed_step == "b"
        assert view.error is not None and "b broke" in view.error
        assert {s.name: s.state for s in view.steps} == {
            "a": "done",
            "b": "failed",
            "c": "cancelled",
            "e": "done",
        }
        assert undone == [("e", {"e": "E"}), ("a", {"a": "A"})]
        undo_states = {
            s.name: s.compensation.state for s in view.steps if s.compensation is not None
        }
        assert undo_states == {"a": "done", "b": "none", "c": "none", "e": "done"}

    async def test_cancel_workflow(self, broker: Broker) -> None:
        app = guild.Guild("wf", workflow_poll=0.2)
        undone: list[str] = []
        b_running = trio.Event()

        @app.worker("work", timeout=60)
        async def work(job: Job) -> str:
            step = StepInput.of(job)
            if step.kind == "compensation":
                undone.append(step.step)
                return "undone"
            if step.step == "b":
                b_running.set()
                await trio.sleep_forever()
            return "ok"

        workflow = Workflow(
            [
                Step("a", "work", compensate="u"),
                Step("b", "work", after="a"),
                Step("c", "work", after="b"),
            ],
            {"u": Compensation("work")},
        )
        with trio.fail_after(30):
            async with app.open(broker):
                workflow_id = await app.submit(workflow)
                await b_running.wait()
                waited = await app.workflow(workflow_id, wait=0.1)  # b runs on: not finished
                assert (waited.status, waited.finished) == ("running", False)
                assert await app.cancel_workflow(workflow_id, reason="operator") is True
                view = await finished(app, workflow_id)
                assert await app.cancel_workflow(workflow_id) is False
                with pytest.raises(guild.UnknownWorkflow):
                    await app.cancel_workflow("nope")
        assert view.status == "cancelled"
        assert view.error == "operator" and view.failed_step is None
        assert [s.state for s in view.steps] == ["done", "cancelled", "skipped"]
        assert undone == ["a"]


class TestRefused:
    """Submit refuses what cannot run, and stores nothing of it."""

    async def test_unknown_queue_and_duplicate_id(self, broker: Broker) -> None:
        app = guild.Guild("wf", workflow_poll=0.2)

        @app.worker("known")
        async def known(job: Job) -> None:
            return None

        elsewhere = Workflow([Step("a", "known"), Step("b", "elsewhere", after="a")], id="w1")
        with trio.fail_after(30):
            async with app.open(broker):
                with pytest.raises(guild.InvalidWorkflow) as refused:
                    await app.submit(elsewhere)
                assert (refused.value.rule, refused.value.step) == ("unknown-queue", "b")
                assert "'elsewhere' has no worker" in str(refused.value)
                assert await app.workflows() == []
                with pytest.raises(guild.UnknownWorkflow):
                    await app.workflow("w1")
                # Served by another process: named in queues=, then accepted.
                assert await app.submit(elsewhere, queues=["elsewhere"]) == "w1"
                assert await app.submit(elsewhere, queues=["elsewhere"]) == "w1"
                other = Workflow([Step("z", "known")], id="w1")
                with pytest.raises(guild.InvalidWorkflow) as duplicate:
                    await app.submit(other)
                assert duplicate.value.rule == "duplicate-id"
                views = await app.workflows()
        assert [v.id for v in views] == ["w1"]


# --- durable brokers: restarts ---------------------------------------------------------

Reopen = Callable[[], AbstractAsyncContextManager[Broker]]


@pytest.fixture(params=["sqlite", "redis"])
def reopen(request: pytest.FixtureRequest, tmp_path: Path) -> Reopen:
    """Opens a new broker object on the same storage each time (a new process would)."""
    prefix = f"wfr{next(_prefixes)}"

    @asynccontextmanager
    async def make() -> AsyncIterator[Broker]:
        broker: Broker
        if request.param == "sqlite":
            broker = await SqliteBroker.open(tmp_path / "guild.db")
        else:
            server: RedisServer = request.getfixturevalue("redis_server")
            broker = await RedisBroker.open(server.url, prefix=prefix)
        try:
            yield broker
        finally:
            await broker.aclose()

    return make


class TestResume:
    """A new coordinator picks up where the last one stopped: no step forgotten,
    no completed step run again."""

    async def test_second_run_finishes_what_the_first_started(self, reopen: Reopen) -> None:
        runs: list[tuple[str, int]] = []
        b_running = trio.Event()

        def make_app(run: int) -> guild.Guild:
            app = guild.Guild(f"run{run}", workflow_poll=0.2)

            @app.worker("q", timeout=60, graceful_timeout=0.2)
            async def handler(job: Job) -> str:
                step = StepInput.of(job)
                runs.append((step.step, run))
                if step.step == "b" and run == 1:
                    b_running.set()
                    await trio.sleep_forever()
                return f"{step.step}<{','.join(str(v) for v in step.results.values())}>"

            return app

        workflow = Workflow([Step("a", "q"), Step("b", "q", after="a"), Step("c", "q", after="b")])
        with trio.fail_after(60):
            async with reopen() as broker:
                first = make_app(1)
                async with first.open(broker):
                    await first.submit(workflow)
                    await b_running.wait()
            # The first app is gone (its b handed back unfinished); a second starts.
            async with reopen() as broker:
                second = make_app(2)
                async with second.open(broker):
                    view = await finished(second, workflow.id)
        assert view.status == "done"
        assert runs == [("a", 1), ("b", 1), ("b", 2), ("c", 2)]
        assert view.step("c").result == "c<b<a<>>>"

    async def test_state_stored_but_jobs_never_enqueued(self, reopen: Reopen) -> None:
        # A coordinator that died between its write and its enqueue left b "running"
        # with no job: the next one enqueues it; a, done, never runs again.
        workflow = Workflow([Step("a", "q"), Step("b", "q", after="a"), Step("c", "q", after="b")])
        state, _ = start(workflow, now=1.0)
        state, decisions = apply(workflow, state, StepSucceeded("a", "A", 1), now=2.0)
        assert [type(d).__name__ for d in decisions] == ["StartStep"]
        runs: list[tuple[str, dict[str, object]]] = []
        app = guild.Guild("wf", workflow_poll=0.2)

        @app.worker("q", timeout=30)
        async def handler(job: Job) -> str:
            step = StepInput.of(job)
            runs.append((step.step, step.results))
            return step.step.upper()

        with trio.fail_after(30):
            async with reopen() as broker:
                record = WorkflowRecord(
                    id=workflow.id,
                    name=workflow.name,
                    status=state.status,
                    spec=workflow.to_json(),
                    state=state.to_json(),
                    version=3,
                    created_at=1.0,
                    updated_at=2.0,
                )
                assert await broker.create_workflow(record)  # type: ignore[attr-defined]
                async with app.open(broker):
                    view = await finished(app, workflow.id)
        assert runs == [("b", {"a": "A"}), ("c", {"b": "B"})]
        assert view.status == "done"

    async def test_a_step_finished_while_no_coordinator_ran_is_not_run_again(
        self, reopen: Reopen
    ) -> None:
        # b's job finished (result stored) but no coordinator saw it: the next one
        # applies the stored result instead of running b again.
        workflow = Workflow([Step("a", "q"), Step("b", "q", after="a"), Step("c", "q", after="b")])
        state, _ = start(workflow, now=1.0)
        state, _ = apply(workflow, state, StepSucceeded("a", "A", 1), now=2.0)
        runs: list[str] = []
        app = guild.Guild("wf", workflow_poll=0.2)

        @app.worker("q", timeout=30)
        async def handler(job: Job) -> str:
            runs.append(StepInput.of(job).step)
            return "from the app"

        with trio.fail_after(30):
            async with reopen() as broker:
                record = WorkflowRecord(
                    id=workflow.id,
                    name=workflow.name,
                    status=state.status,
                    spec=workflow.to_json(),
                    state=state.to_json(),
                    version=1,
                    created_at=1.0,
                    updated_at=2.0,
                )
                assert await broker.create_workflow(record)  # type: ignore[attr-defined]
                await broker.enqueue([step_job(workflow, "b", {"a": "A"})])
                (delivery,) = await broker.claim("q", consumer="elsewhere", limit=1, lease=30)
                await broker.ack([(delivery, encode_result("B before the crash"))])
                async with app.open(broker):
                    view = await finished(app, workflow.id)
        assert runs == ["c"]
        assert view.step("b").result == "B before the crash"
        assert view.status == "done"

    async def test_two_coordinators_run_each_step_once(self, reopen: Reopen) -> None:
        runs: list[str] = []

        def make_app(name: str) -> guild.Guild:
            app = guild.Guild(name, workflow_poll=0.1)

            @app.worker("q", timeout=30)
            async def handler(job: Job) -> str:
                step = StepInput.of(job)
                runs.append(step.step)
                await trio.sleep(0.01)
                return step.step

            return app

        fan = [Step(f"s{i}", "q", after="root") for i in range(8)]
        workflow = Workflow([Step("root", "q"), *fan, Step("end", "q", after=fan)])
        with trio.fail_after(60):
            async with reopen() as one, reopen() as two:
                first, second = make_app("one"), make_app("two")
                async with first.open(one), second.open(two):
                    await first.submit(workflow)
                    view = await finished(second, workflow.id)
        assert view.status == "done"
        assert sorted(runs) == sorted(s.name for s in workflow.steps)
        assert view.step("end").result == "end"


class TestEvents:
    """Each transition reaches the app's instruments as a WorkflowChanged."""

    async def test_a_failed_workflow_tells_its_story(self) -> None:
        seen: list[tuple[str, str | None, str]] = []

        class Recorder(guild.Instrument):
            def workflow_changed(self, event: WorkflowChanged) -> None:
                seen.append((event.what, event.step, event.status))

        app = guild.Guild("wf", workflow_poll=0.2, instruments=[Recorder()])

        @app.worker("q", timeout=30, max_attempts=1)
        async def handler(job: Job) -> str:
            step = StepInput.of(job)
            if step.step == "b":
                raise ValueError("no")
            return "ok"

        workflow = Workflow(
            [Step("a", "q", compensate="u"), Step("b", "q", after="a")], {"u": Compensation("q")}
        )
        with trio.fail_after(30):
            async with app.open(guild.MemoryBroker()):
                await finished(app, await app.submit(workflow))
        assert seen == [
            ("submitted", None, "running"),
            ("step_started", "a", "running"),
            ("step_done", "a", "running"),
            ("step_started", "b", "running"),
            ("step_failed", "b", "compensating"),
            ("compensation_started", "a", "compensating"),
            ("compensation_done", "a", "failed"),
            ("finished", "b", "failed"),
        ]

    async def test_the_event_hub_sends_them_to_events_clients(self) -> None:
        hub = EventHub(clock=lambda: 5.0)
        app = guild.Guild("wf", workflow_poll=0.2)
        hub.attach(app.instruments)

        @app.worker("q", timeout=30)
        async def handler(job: Job) -> str:
            return "ok"

        with trio.fail_after(30), hub.subscribe() as feed:
            async with app.open(guild.MemoryBroker()):
                await finished(app, await app.submit(Workflow([Step("only", "q")], id="W7")))
            messages = [m for m in _drain(feed.receive) if m["type"] == "workflow"]
        assert [(m["what"], m["step"], m["status"]) for m in messages] == [
            ("submitted", None, "running"),
            ("step_started", "only", "running"),
            ("step_done", "only", "done"),
            ("finished", None, "done"),
        ]
        assert messages[0] == {
            "type": "workflow",
            "time": 5.0,
            "workflow_id": "W7",
            "name": "workflow",
            "status": "running",
            "what": "submitted",
            "step": None,
            "detail": None,
        }


def _drain(receive: trio.MemoryReceiveChannel[dict[str, object]]) -> list[dict[str, object]]:
    out = []
    while True:
        try:
            out.append(receive.receive_nowait())
        except trio.WouldBlock:
            return out


class TestUnreadable:
    """One damaged record stays one damaged record: the others run, it is logged once."""

    async def test_a_bad_record_beside_a_good_workflow(self, broker: Broker) -> None:
        app = guild.Guild("wf", workflow_poll=0.1)

        @app.worker("q", timeout=30)
        async def handler(job: Job) -> str:
            return "ok"

        bad = WorkflowRecord(
            id="bad",
            name="bad",
            status="running",
            spec='{"steps": "not a list"}',
            state="{}",
            version=0,
            created_at=0.0,
            updated_at=0.0,
        )
        assert await broker.create_workflow(bad)  # type: ignore[attr-defined]
        with structlog.testing.capture_logs() as logs, trio.fail_after(30):
            async with app.open(broker):
                good = await finished(app, await app.submit(Workflow([Step("a", "q")])))
                await trio.sleep(0.5)  # several more polls see the bad record
                listed = await app.workflows()
                with pytest.raises(ValueError, match="not a stored workflow spec"):
                    await app.workflow("bad")
        assert good.status == "done"
        assert [v.id for v in listed] == [good.id]
        unreadable = [e for e in logs if e["event"] == "workflow_unreadable"]
        # Once by the coordinator (however many polls), once by the listing.
        assert [e["workflow_id"] for e in unreadable] == ["bad", "bad"]


class CountingMemoryBroker(guild.MemoryBroker):
    """The memory broker, counting its sweeps of active workflows (the minute's walk
    of finished ones for expiry, which asks for finished statuses only, is not one)."""

    sweeps = 0

    async def list_workflows(self, **options: Any) -> list[WorkflowRecord]:
        if set(options.get("statuses") or ()) & {"running", "compensating"}:
            self.sweeps += 1
        return await super().list_workflows(**options)


class TestIdle:
    """On the memory broker, a coordinator with no active workflow does not poll."""

    async def test_no_polls_while_idle_then_a_submit_wakes_it(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker = CountingMemoryBroker()
        app = guild.Guild("wf", workflow_poll=1.0)

        @app.worker("q")
        async def handler(job: Job) -> str:
            return "ok"

        async with app.open(broker):
            await trio.sleep(3600)
            assert broker.sweeps == 1  # the one at start
            view = await app.workflow(await app.submit(Workflow([Step("a", "q")])), wait=60)
            assert view.status == "done"
            after = broker.sweeps
            await trio.sleep(3600)
            assert broker.sweeps - after <= 1  # one look finds nothing active, then idle
