"""PMWorker: projects as workflows, rollbacks in reverse completion order, refusals,
and commands through the real TaskWorker (real sandbox, real SQLite, a real HTTP
messages API)."""

from __future__ import annotations

import functools
import gc
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from hypothesis import given
from hypothesis import strategies as st

import guild
from guild.sandbox import SandboxPolicy
from guild_workers._llm import LLMSettings
from guild_workers.pm import (
    InvalidProject,
    PhaseContext,
    PMWorker,
    Project,
    add_pm_worker,
    project_workflow_id,
)
from guild_workers.result import SlackSettings, add_result_worker
from guild_workers.slack_double import SlackDouble
from guild_workers.task import add_task_worker
from tests._poll import until
from tests.workers.test_task_worker import FakeMessagesAPI


class Gates:
    """Inline actions that run when the test says, and a log of what ran."""

    def __init__(self, pm: PMWorker) -> None:
        self.started: set[str] = set()
        self.log: list[str] = []
        self.gates: dict[str, trio.Event] = {}
        pm.add_action("hold", self.hold)
        pm.add_action("fail", self.fail)
        pm.add_action("undo", self.undo)

    def gate(self, phase: str) -> trio.Event:
        return self.gates.setdefault(phase, trio.Event())

    async def hold(self, ctx: PhaseContext) -> dict[str, Any]:
        self.started.add(ctx.phase)
        self.log.append(f"run {ctx.phase}")
        try:
            await self.gate(ctx.phase).wait()
        except trio.Cancelled:
            self.log.append(f"cancelled {ctx.phase}")
            raise
        return {"did": ctx.phase, "saw": sorted(ctx.results)}

    async def fail(self, ctx: PhaseContext) -> None:
        self.started.add(ctx.phase)
        self.log.append(f"run {ctx.phase}")
        await self.gate(ctx.phase).wait()
        raise guild.Reject(f"{ctx.phase} broke")

    async def undo(self, ctx: PhaseContext) -> str:
        assert ctx.kind == "rollback"
        assert ctx.results[ctx.phase]["did"] == ctx.phase  # it gets the phase's result
        self.log.append(f"undo {ctx.phase}")
        return f"undid {ctx.phase}"


# p1, p2, p3 side by side; q after all three; then "boom" fails while its
# sibling "slow" still runs; "later" (after boom) never starts.
SAGA: dict[str, Any] = {
    "name": "saga",
    "phases": {
        "p1": {"action": "hold", "rollback": "undo"},
        "p2": {"action": "hold", "rollback": "undo"},
        "p3": {"action": "hold", "rollback": "undo"},
        "q": {"action": "hold", "after": ["p1", "p2", "p3"], "rollback": "undo"},
        "boom": {"action": "fail", "after": "q"},
        "slow": {"action": "hold", "after": "q", "rollback": "undo"},
        "later": {"action": "hold", "after": ["boom", "slow"], "rollback": "undo"},
    },
    "rollbacks": {"undo": {"action": "undo"}},
}


class TestSaga:
    """A failing phase rolls back its completed siblings, last completed first, once each."""

    @pytest.mark.parametrize("order", [["p2", "p3", "p1"], ["p1", "p2", "p3"], ["p3", "p1", "p2"]])
    async def test_rollbacks_in_reverse_completion_order(
        self,
        order: list[str],
        autojump_clock: trio.testing.MockClock,
        memory_broker: guild.MemoryBroker,
        nursery: trio.Nursery,
    ) -> None:
        app = guild.Guild("pm-test", workflow_poll=0.5)
        pm = add_pm_worker(app)
        gates = Gates(pm)
        await nursery.start(app.run, memory_broker)
        job = await app.enqueue("pm", Project.from_mapping(SAGA).to_payload())
        workflow_id = project_workflow_id(job.id)

        async def completed() -> tuple[str, ...]:
            return (await app.workflow(workflow_id)).completed

        # The three roots run side by side: all have started before any is let go.
        async def roots_started() -> bool:
            return gates.started >= {"p1", "p2", "p3"}

        with trio.fail_after(60):
            await until(roots_started)
        for count, phase in enumerate(order, start=1):
            gates.gate(phase).set()

            async def recorded(count: int = count) -> bool:
                return len(await completed()) == count

            with trio.fail_after(60):
                await until(recorded)
        gates.gate("q").set()

        async def both_running() -> bool:
            return {"boom", "slow"} <= gates.started

        with trio.fail_after(60):
            await until(both_running)
        gates.gate("boom").set()
        result = await app.result(job, wait=60)

        # The oracle, written out from the DAG and the completion order chosen:
        # completed = order + [q]; slow is cancelled (never completed, so not
        # undone); later never starts; rollbacks run last completed first.
        expected_undo = ["q", *reversed(order)]
        assert result is not None and result.status is guild.JobStatus.DEAD
        assert [e for e in gates.log if e.startswith("undo")] == [
            f"undo {p}" for p in expected_undo
        ]
        assert "cancelled slow" in gates.log
        assert "run later" not in gates.log
        assert result.error == (
            "rejected: project 'saga' failed at phase 'boom': rejected: boom broke;"
            f" rolled back: {', '.join(expected_undo)}"
        )
        view = await app.workflow(workflow_id)
        assert view.completed == (*order, "q")
        assert {s.name: s.state for s in view.steps} == {
            "p1": "done",
            "p2": "done",
            "p3": "done",
            "q": "done",
            "boom": "failed",
            "slow": "cancelled",
            "later": "skipped",
        }
        for name in expected_undo:
            undo = view.step(name).compensation
            assert undo is not None and undo.state == "done" and undo.attempts == 1

    async def test_a_project_that_succeeds_reports_every_phase(
        self,
        autojump_clock: trio.testing.MockClock,
        memory_broker: guild.MemoryBroker,
        nursery: trio.Nursery,
    ) -> None:
        app = guild.Guild("pm-test", workflow_poll=0.5)
        pm = add_pm_worker(app)

        @pm.action("add")
        async def add(ctx: PhaseContext) -> int:
            return int(ctx.args) + sum(int(v) for v in ctx.results.values())

        await nursery.start(app.run, memory_broker)
        project = {
            "name": "sums",
            "phases": {
                "one": {"action": "add", "args": 1},
                "two": {"action": "add", "args": 2},
                "total": {"action": "add", "args": 0, "after": ["one", "two"]},
            },
        }
        job = await app.enqueue("pm", {"project": project})
        result = await app.result(job, wait=60)
        assert result is not None and result.ok, result
        assert result.value["status"] == "done"
        assert result.value["phases"] == {"one": 1, "two": 2, "total": 3}
        assert result.value["workflow_id"] == f"pm-{job.id}"

    async def test_a_pm_job_run_again_waits_for_the_same_workflow(
        self,
        autojump_clock: trio.testing.MockClock,
        memory_broker: guild.MemoryBroker,
        nursery: trio.Nursery,
    ) -> None:
        # What a pm job retried after a crash does: the workflow id comes from
        # the job's, so the second run submits nothing new and runs no phase again.
        app = guild.Guild("pm-test", workflow_poll=0.5)
        pm = add_pm_worker(app)
        runs: list[str] = []

        @pm.action("count")
        async def count(ctx: PhaseContext) -> str:
            runs.append(ctx.phase)
            return ctx.phase

        await nursery.start(app.run, memory_broker)
        payload = {"project": {"phases": {"a": {"action": "count"}, "b": {"action": "count"}}}}
        job = await app.enqueue("pm", payload)
        first = await app.result(job, wait=60)
        assert first is not None and first.ok
        again = await pm.handle_project(job)
        assert again == first.value
        assert sorted(runs) == ["a", "b"]
        assert [w.id for w in await app.workflows()] == [f"pm-{job.id}"]


class TestCancel:
    async def test_cancelling_the_workflow_rolls_back_and_ends_the_pm_job(
        self,
        autojump_clock: trio.testing.MockClock,
        memory_broker: guild.MemoryBroker,
        nursery: trio.Nursery,
    ) -> None:
        app = guild.Guild("pm-test", workflow_poll=0.5)
        pm = add_pm_worker(app)
        gates = Gates(pm)
        await nursery.start(app.run, memory_broker)
        project = {
            "name": "stoppable",
            "phases": {
                "first": {"action": "hold", "rollback": "undo"},
                "second": {"action": "hold", "after": "first", "rollback": "undo"},
            },
            "rollbacks": {"undo": {"action": "undo"}},
        }
        job = await app.enqueue("pm", {"project": project})
        gates.gate("first").set()
        with trio.fail_after(60):
            await until(lambda: "second" in gates.started)
        assert await app.cancel_workflow(project_workflow_id(job.id), reason="not today")
        result = await app.result(job, wait=60)
        assert result is not None and result.status is guild.JobStatus.DEAD
        assert result.error == (
            "rejected: project 'stoppable' cancelled: not today; rolled back: first"
        )
        assert gates.log == ["run first", "run second", "cancelled second", "undo first"]


class TestRetention:
    async def test_nothing_of_a_finished_project_stays_in_the_process(
        self,
        autojump_clock: trio.testing.MockClock,
        memory_broker: guild.MemoryBroker,
        nursery: trio.Nursery,
    ) -> None:
        # A finished project lives on in the broker only: no workflow spec, view
        # or action context is held by the PM worker or the coordinator (a dict
        # of finished workflows would show here). The collection only clears
        # reference cycles (exceptions and their frames), so that what is
        # counted is what something still holds.
        app = guild.Guild("pm-test", workflow_poll=0.5)
        pm = add_pm_worker(app)

        @pm.action("work")
        async def work(ctx: PhaseContext) -> str:
            if ctx.args:
                raise guild.Reject("planned")
            return ctx.phase

        @pm.action("undo")
        async def undo(ctx: PhaseContext) -> str:
            return ctx.phase

        kinds = guild.Workflow | guild.WorkflowView | PhaseContext | Project
        gc.collect()
        # Objects of these kinds that other tests of this process left behind
        # (hypothesis examples, failure reports) are not this project's.
        before = {id(o) for o in gc.get_objects() if isinstance(o, kinds)}
        await nursery.start(app.run, memory_broker)
        payloads = [
            {
                "project": {
                    "phases": {
                        "a": {"action": "work", "rollback": "undo"},
                        "b": {"action": "work", "after": "a", "args": n % 4 == 0},
                    },
                    "rollbacks": {"undo": {"action": "undo"}},
                }
            }
            for n in range(40)
        ]
        jobs = await app.enqueue_many("pm", payloads)
        for job in jobs:
            assert await app.result(job, wait=60) is not None
        await trio.sleep(5)  # past the coordinator's next sweep
        gc.collect()
        alive = [
            type(o).__name__
            for o in gc.get_objects()
            if isinstance(o, kinds) and id(o) not in before
        ]
        assert alive == []


class TestShapes:
    """Any DAG of phases is accepted, any graph with a cycle refused (the oracle:
    Kahn's algorithm, not the workflow's own cycle finder)."""

    @given(
        st.integers(min_value=1, max_value=7).flatmap(
            lambda n: st.tuples(
                st.just(n),
                st.sets(
                    st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)).filter(
                        lambda e: e[0] != e[1]
                    ),
                    max_size=n * 2,
                ),
            )
        )
    )
    def test_acyclic_iff_accepted(self, graph: tuple[int, set[tuple[int, int]]]) -> None:
        n, edges = graph
        phases = {
            f"p{i}": {"action": "x", "after": [f"p{a}" for (b, a) in sorted(edges) if b == i]}
            for i in range(n)
        }
        waiting = {i: {a for (b, a) in edges if b == i} for i in range(n)}
        ready = [i for i in range(n) if not waiting[i]]
        ordered = 0
        while ready:
            done = ready.pop()
            ordered += 1
            for i in range(n):
                if done in waiting[i]:
                    waiting[i].discard(done)
                    if not waiting[i]:
                        ready.append(i)
        if ordered == n:
            project = Project.from_mapping({"phases": phases})
            assert {p.name: set(p.after) for p in project.phases} == {
                name: set(body["after"]) for name, body in phases.items()
            }
            workflow = project.workflow(queue="pm.phases")
            assert [s.name for s in workflow.steps] == list(phases)
        else:
            with pytest.raises(InvalidProject) as info:
                Project.from_mapping({"phases": phases})
            assert info.value.rule == "cycle"


class TestRefusals:
    """A project that cannot run is refused with the source, the phase and the rule."""

    @pytest.mark.parametrize(
        ("phases", "rollbacks", "rule", "phase", "words"),
        [
            ({"a": {"shell": "ls"}}, {}, "unknown-kind", "a", "unknown: ['shell']"),
            ({"a": {"command": ["ls"], "action": "x"}}, {}, "several-kinds", "a", "command and"),
            (
                {"a": {"action": "x", "after": "b"}, "b": {"action": "x", "after": "a"}},
                {},
                "cycle",
                None,
                "-> ",
            ),
            ({"a": {"action": "x", "rollback": "nope"}}, {}, "unknown-rollback", "a", "'nope'"),
            ({"a": {"action": "x", "after": "ghost"}}, {}, "unknown-dependency", "a", "'ghost'"),
            ({"a": {"command": "ls -l"}}, {}, "field", "a", "non-empty list of strings"),
            ({"a": {"action": "x", "retries": 3}}, {}, "unknown-field", "a", "'retries'"),
            ({"a": {"action": "x", "attempts": 0}}, {}, "field", "a", "attempts"),
            ({"a": {"post": {"channel": "#x"}}}, {}, "field", "a", "runs after"),
            ({"a": {"action": "x"}}, {"u": {"nothing": 1}}, "unknown-kind", "rollbacks.u", ""),
            ({}, {}, "empty", None, "non-empty table of phases"),
        ],
    )
    def test_rules(
        self,
        tmp_path: Path,
        phases: dict[str, Any],
        rollbacks: dict[str, Any],
        rule: str,
        phase: str | None,
        words: str,
    ) -> None:
        path = tmp_path / "bad.toml"
        path.write_text(_toml(phases, rollbacks))
        with pytest.raises(InvalidProject) as info:
            Project.from_toml(path)
        error = info.value
        assert isinstance(error, guild.InvalidWorkflow)
        assert (error.source, error.rule) == (str(path), rule)
        if phase is not None:
            assert error.phase == phase
        assert str(path) in str(error) and f"({rule})" in str(error) and words in str(error)

    def test_the_cycle_is_named(self) -> None:
        cyclic = {
            "phases": {"a": {"action": "x", "after": "b"}, "b": {"action": "x", "after": "a"}}
        }
        with pytest.raises(InvalidProject, match=r"\(cycle\).*(a -> b -> a|b -> a -> b)"):
            Project.from_mapping(cyclic)

    def test_bad_toml_and_missing_file(self, tmp_path: Path) -> None:
        path = tmp_path / "broken.toml"
        path.write_text("[phases.a\ncommand = 1")
        with pytest.raises(InvalidProject, match=r"broken.toml \(toml\)"):
            Project.from_toml(path)
        with pytest.raises(InvalidProject, match=r"\(file\)"):
            Project.from_toml(tmp_path / "missing.toml")
        # Past the TOML parser's stack: refused (the job dead-lettered), not a
        # RecursionError that would be retried as if the next run could differ.
        deep = tmp_path / "deep.toml"
        deep.write_text("a = " + "[" * 100_000 + "]" * 100_000)
        with pytest.raises(InvalidProject, match=r"deep.toml \(toml\): nested too deeply"):
            Project.from_toml(deep)

    def test_unknown_action_and_files_outside_the_project_dir(self, tmp_path: Path) -> None:
        app = guild.Guild("t")
        pm = add_pm_worker(app, project_dir=tmp_path)

        @pm.action("known")
        async def known(ctx: PhaseContext) -> None:
            return None

        payload = {"project": {"phases": {"a": {"action": "known"}, "b": {"action": "unknown"}}}}
        with pytest.raises(InvalidProject, match="'unknown' is not registered") as info:
            pm.load(payload)
        assert (info.value.rule, info.value.phase) == ("unknown-action", "b")
        with pytest.raises(InvalidProject, match="outside the project directory"):
            pm.load({"file": "../elsewhere.toml"})
        with pytest.raises(InvalidProject, match="is no usable path: embedded null byte"):
            pm.load({"file": "a\x00b.toml"})
        with pytest.raises(InvalidProject, match=r'\{"project"'):
            pm.load({"phases": {}})
        with pytest.raises(TypeError, match="async def"):
            pm.add_action("sync", lambda ctx: None)  # type: ignore[arg-type,return-value]

    async def test_a_refused_project_is_dead_lettered_and_stores_nothing(
        self,
        autojump_clock: trio.testing.MockClock,
        memory_broker: guild.MemoryBroker,
        nursery: trio.Nursery,
    ) -> None:
        app = guild.Guild("pm-test", workflow_poll=0.5)
        add_pm_worker(app)
        await nursery.start(app.run, memory_broker)
        job = await app.enqueue("pm", {"project": {"phases": {"a": {"action": "missing"}}}})
        result = await app.result(job, wait=60)
        assert result is not None and result.status is guild.JobStatus.DEAD
        assert result.attempts == 1
        assert result.error is not None and "(unknown-action)" in result.error
        assert await app.workflows() == []


def _toml(phases: dict[str, Any], rollbacks: dict[str, Any]) -> str:
    lines = ['name = "bad"']
    for section, tables in (("phases", phases), ("rollbacks", rollbacks)):
        for name, fields in tables.items():
            lines.append(f"[{section}.{name}]")
            lines += [f"{key} = {_toml_value(value)}" for key, value in fields.items()]
    if not phases:
        lines.append("[phases]")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return (
            "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
        )
    return json.dumps(value)


# --- through the real TaskWorker ------------------------------------------------------

RELEASE = """
name = "release"

[phases.build]
command = ["python3", "build.py"]
files = { "build.py" = "print('built v1')" }
rollback = "clean"

[phases.check]
command = ["python3", "check.py"]
after = "build"
files = { "check.py" = '''
import json
results = json.load(open("pm_results.json"))
print("check saw:", results["build"]["stdout"].strip())
''' }

[phases.ship]
command = ["python3", "ship.py"]
after = "check"
files = { "ship.py" = "import sys; sys.exit(int(open('code.txt').read()))", "code.txt" = "EXIT" }

[rollbacks.clean]
command = ["python3", "clean.py"]
files = { "clean.py" = '''
import json
print("cleaning after:", json.load(open("pm_results.json"))["build"]["stdout"].strip())
''' }
"""


def _tasks_app(policy: SandboxPolicy, **options: Any) -> tuple[guild.Guild, PMWorker]:
    app = guild.Guild("pm-tasks", workflow_poll=0.2)
    pm = add_pm_worker(app, **options)
    add_task_worker(app, concurrency=4, policy=policy, max_timeout=60.0)
    return app, pm


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory commands can meet in. Outside pytest's tmp (mode 0700): the
    sandbox runs commands as an unprivileged user, who must reach it."""
    path = Path(tempfile.mkdtemp(prefix="guild-pm-meet-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path)


class TestThroughTheTaskWorker:
    """Command phases are TaskWorker jobs in the real sandbox, on a real SQLite file."""

    @pytest.mark.parametrize("code", [0, 3])
    async def test_a_project_file_runs_and_a_failed_command_rolls_back(
        self, tmp_path: Path, code: int
    ) -> None:
        (tmp_path / "release.toml").write_text(RELEASE.replace("EXIT", str(code)))
        app, _ = _tasks_app(SandboxPolicy(isolate="auto"), project_dir=tmp_path)
        with trio.fail_after(90):
            async with guild.open_broker(f"sqlite:///{tmp_path}/pm.db") as broker, app.open(broker):
                job = await app.enqueue("pm", {"file": "release.toml"})
                result = await app.result(job, wait=80)
                view = await app.workflow(project_workflow_id(job.id))
        assert result is not None
        build = view.step("build").result
        assert build["stdout"] == "built v1\n" and build["exit_code"] == 0
        assert view.step("check").result["stdout"] == "check saw: built v1\n"
        assert build["isolated"] is True
        undo = view.step("build").compensation
        assert undo is not None
        if code == 0:
            assert result.ok, result
            assert result.value["completed"] == ["build", "check", "ship"]
            assert undo.state == "none"
        else:
            assert result.status is guild.JobStatus.DEAD
            assert result.error is not None
            assert "failed at phase 'ship': PhaseFailed: python3 exited 3" in result.error
            assert result.error.endswith("rolled back: build")  # check declares no rollback
            assert undo.state == "done"
            async with guild.open_broker(f"sqlite:///{tmp_path}/pm.db") as broker:
                cleaned = await broker.get_result(undo.job_id)
            assert cleaned is not None and cleaned.ok
            assert cleaned.value["stdout"] == "cleaning after: built v1\n"

    async def test_parallel_commands_run_at_once_and_a_failure_cancels_the_running_one(
        self, tmp_path: Path, shared_dir: Path
    ) -> None:
        # Two commands meet at a rendezvous (each waits for the other's marker),
        # which only commands running at the same time can do. Then "bad" fails
        # while "sleeper" runs: sleeper's task job (and its process) is cancelled.
        meet = shared_dir
        rendezvous = (
            "import os, sys, time\n"
            "me, other = sys.argv[1], sys.argv[2]\n"
            f"open(os.path.join({str(meet)!r}, me), 'w').close()\n"
            "deadline = time.time() + 30\n"
            f"while not os.path.exists(os.path.join({str(meet)!r}, other)):\n"
            "    if time.time() > deadline: sys.exit(9)\n"
            "    time.sleep(0.05)\n"
            "print(me, 'met', other)\n"
        )
        sleeper = (
            f"import os, time; open(os.path.join({str(meet)!r}, 'pid'), 'w')"
            ".write(str(os.getpid())); time.sleep(120)"
        )
        # bad fails once the sleeper is surely running: when its pid file exists.
        bad = (
            "import os, sys, time\n"
            f"while not os.path.exists(os.path.join({str(meet)!r}, 'pid')): time.sleep(0.05)\n"
            "sys.exit(2)\n"
        )
        project = {
            "name": "fan-out",
            "phases": {
                "left": {
                    "command": ["python3", "meet.py", "left", "right"],
                    "files": {"meet.py": rendezvous},
                },
                "right": {
                    "command": ["python3", "meet.py", "right", "left"],
                    "files": {"meet.py": rendezvous},
                },
                "sleeper": {
                    "command": ["python3", "sleep.py"],
                    "files": {"sleep.py": sleeper},
                    "after": ["left", "right"],
                },
                "bad": {
                    "command": ["python3", "bad.py"],
                    "files": {"bad.py": bad},
                    "after": ["left", "right"],
                },
            },
        }
        app, _ = _tasks_app(SandboxPolicy(isolate="never"))
        with trio.fail_after(90):
            async with guild.open_broker(f"sqlite:///{tmp_path}/pm.db") as broker, app.open(broker):
                job = await app.enqueue("pm", {"project": project})
                result = await app.result(job, wait=80)
                view = await app.workflow(project_workflow_id(job.id))
                pid = int((meet / "pid").read_text())
                await until(lambda: not _alive(pid))  # killed with its cancelled task

                # The sleeper's task job ends cancelled (its worker notices
                # the request within a second), not done, dead or retried.
                async def settled() -> bool:
                    return not (await broker.stats(["tasks"]))["tasks"].in_flight

                await until(settled)
                stats = (await broker.stats(["tasks"]))["tasks"]
        assert view.step("left").result["stdout"] == "left met right\n"
        assert view.step("right").result["stdout"] == "right met left\n"
        assert result is not None and result.status is guild.JobStatus.DEAD
        assert "failed at phase 'bad': PhaseFailed: python3 exited 2" in (result.error or "")
        assert view.step("sleeper").state == "cancelled"
        assert stats.cancelled == 1  # the sleeper's task job, cancelled with its phase
        assert stats.done == 3  # left, right and bad (a command exiting 2 is a done task)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class TestPhaseRunAgain:
    async def test_a_phase_run_again_adopts_the_task_its_first_run_started(
        self, tmp_path: Path
    ) -> None:
        # What a phase's run after its process died does: it enqueues its task
        # with the same key, finds the task the dead run started, and waits for
        # that one instead of running the command again.
        app, pm = _tasks_app(SandboxPolicy(isolate="never"))
        project = {"phases": {"once": {"command": ["python3", "--version"]}}}
        with trio.fail_after(60):
            async with guild.open_broker(f"sqlite:///{tmp_path}/pm.db") as broker, app.open(broker):
                job = await app.enqueue("pm", {"project": project})
                result = await app.result(job, wait=50)
                assert result is not None and result.ok, result
                workflow_id = project_workflow_id(job.id)
                step = (await app.workflow(workflow_id)).step("once")
                # The phase's job, as the workflow enqueued it (its envelope is
                # documented in guild.StepInput), run a second time.
                phase_job = guild.Job(
                    queue="pm.phases",
                    id=step.job_id,
                    attempt=2,
                    payload={
                        "guild_workflow": {"id": workflow_id, "step": "once", "kind": "step"},
                        "input": Project.from_mapping(project).phases[0].body.payload("project"),
                        "results": {},
                    },
                )
                again = await pm.handle_phase(phase_job)
                tasks = (await broker.stats(["tasks"]))["tasks"]
        assert again["task_job"] == step.result["task_job"]
        assert again["stdout"] == step.result["stdout"]
        assert tasks.done == 1 and tasks.ready == tasks.in_flight == 0


@pytest.fixture
async def messages_api(nursery: trio.Nursery) -> tuple[FakeMessagesAPI, str]:
    api = FakeMessagesAPI()
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    bound: list[str] = await nursery.start(functools.partial(serve, api, config))  # type: ignore[arg-type]
    return api, bound[0]


class TestPromptsAndPosts:
    """Prompt phases go to a real HTTP messages API through the TaskWorker; post
    phases go to a real Slack-like server through the ResultWorker."""

    async def test_a_prompt_phase_gets_the_models_answer(
        self, tmp_path: Path, messages_api: tuple[FakeMessagesAPI, str]
    ) -> None:
        api, base = messages_api
        app = guild.Guild("pm-prompts", workflow_poll=0.2)
        add_pm_worker(app)
        add_task_worker(app, llm=LLMSettings(base_url=base, model="notes-model"))
        project = {
            "name": "notes",
            "phases": {
                "draft": {"prompt": "write release notes", "max_tokens": 50, "system": "terse"}
            },
        }
        with trio.fail_after(60):
            async with guild.open_broker(f"sqlite:///{tmp_path}/pm.db") as broker, app.open(broker):
                job = await app.enqueue("pm", {"project": project})
                result = await app.result(job, wait=50)
        assert result is not None and result.ok, result
        draft = result.value["phases"]["draft"]
        assert draft["text"] == "echo: write release notes"
        assert draft["tokens"] == {"input": 3, "output": 3}
        assert [(r["model"], r["system"], r["max_tokens"]) for r in api.requests] == [
            ("notes-model", "terse", 50)
        ]

    async def test_a_post_phase_posts_the_results_it_runs_after(
        self, tmp_path: Path, nursery: trio.Nursery
    ) -> None:
        slack = SlackDouble(token="xoxb-pm")
        base = await slack.serve(nursery)
        app = guild.Guild("pm-posts", workflow_poll=0.2)
        pm = add_pm_worker(app)
        add_task_worker(app, policy=SandboxPolicy(isolate="never"))
        settings = SlackSettings(api_url=f"{base}/api", token="xoxb-pm", rate=50.0, burst=5)
        add_result_worker(app, settings=settings)

        @pm.action("version")
        async def version(ctx: PhaseContext) -> dict[str, str]:
            return {"version": "1.2"}

        project = {
            "name": "report",
            "phases": {
                "hello": {"command": ["python3", "hi.py"], "files": {"hi.py": "print('hi')"}},
                "version": {"action": "version"},
                "announce": {"post": {"channel": "#builds"}, "after": ["hello", "version"]},
            },
        }
        with trio.fail_after(60):
            async with guild.open_broker(f"sqlite:///{tmp_path}/pm.db") as broker, app.open(broker):
                job = await app.enqueue("pm", {"project": project})
                result = await app.result(job, wait=50)
        assert result is not None and result.ok, result
        texts = sorted(r.text for r in slack.posted("#builds"))
        task_job = result.value["phases"]["hello"]["task_job"]
        assert len(texts) == 2
        # The command's task job is posted as the ResultWorker formats a job's result.
        assert texts[0].startswith(f"job `{task_job}`: done")
        assert '"stdout": "hi\\n"' in texts[0]
        assert texts[1] == 'report / version:\n```{\n  "version": "1.2"\n}```'
        assert set(result.value["phases"]["announce"]["posted"]) == {"hello", "version"}
