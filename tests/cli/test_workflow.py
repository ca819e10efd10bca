"""`guild workflow show|list|cancel` through real `guild` processes, on a SQLite file
and on a real redis-server.

The workflows are made by a real app run in this process (a done one, a failed
one whose completed steps are undone, and one whose steps no worker serves),
then read and cancelled by the command. Expected values are written out here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

import guild
from guild import Compensation, Step, StepInput, Workflow
from tests._redis_server import running_redis_server

from .conftest import run_guild

STEP_STATES = ("pending", "running", "done", "failed", "cancelled", "skipped")


def _app() -> guild.Guild:
    app = guild.Guild("cli-workflows", workflow_poll=0.05)

    @app.worker("work", timeout=10, max_attempts=1)
    async def work(job: guild.Job) -> object:
        step = StepInput.of(job)
        if step.kind == "compensation":
            return f"undid {step.step}"
        if step.input == "fail":
            raise guild.Reject("the carrier refused")
        return {"step": step.step, "after": sorted(step.results)}

    return app


DONE = Workflow(
    [
        Step("fetch", "work"),
        Step("left", "work", after="fetch"),
        Step("right", "work", after="fetch"),
        Step("join", "work", after=["left", "right"]),
    ],
    name="diamond",
    id="wf-done",
)
FAILED = Workflow(
    [
        Step("reserve", "work", compensate="release"),
        Step("charge", "work", after="reserve", compensate="refund"),
        Step("ship", "work", "fail", after="charge"),
        Step("email", "work", after="ship"),
    ],
    {"release": Compensation("work"), "refund": Compensation("work")},
    name="order",
    id="wf-failed",
)
# Its steps' queue has no worker anywhere: the workflow stays running.
IDLE = Workflow(
    [Step("a", "idle"), Step("b", "idle"), Step("c", "idle", after=["a", "b"])],
    name="waiting",
    id="wf-idle",
)
# Only a dependency-free step that is cancelled: nothing to undo.
LONE = Workflow([Step("only", "idle")], name="lone", id="wf-lone")


async def _make_workflows(url: str) -> None:
    app = _app()
    async with guild.open_broker(url) as broker, trio.open_nursery() as nursery:
        await nursery.start(app.run, broker)
        for workflow in (DONE, FAILED):
            await app.submit(workflow)
            finished = await app.workflow(workflow.id, wait=30)
            assert finished.finished, finished
        nursery.cancel_scope.cancel()
    async with guild.open_broker(url) as broker:
        for workflow in (IDLE, LONE):
            await app.submit(workflow, queues=["idle"], broker=broker)


@pytest.fixture
def redis_url() -> Iterator[str]:
    # A server per test: a cancel in one test must not show in the next. With
    # persistence on, the broker warns of nothing on stderr.
    with running_redis_server(appendonly=True) as server:
        yield server.url


@pytest.fixture(params=["sqlite", "redis"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    made = (
        f"sqlite:///{tmp_path}/workflows.db"
        if request.param == "sqlite"
        else request.getfixturevalue("redis_url")
    )
    trio.run(_make_workflows, made)
    return made


def _json(*args: str) -> Any:
    found = run_guild(*args)
    assert found.returncode == 0, found.stderr
    assert found.stderr == ""
    return json.loads(found.stdout)


def _steps(shown: dict[str, Any]) -> dict[str, tuple[str, object, str | None]]:
    return {s["name"]: (s["state"], s["result"], s["error"]) for s in shown["steps"]}


def _undo_states(shown: dict[str, Any]) -> dict[str, str | None]:
    return {
        s["name"]: None if s["compensation"] is None else s["compensation"]["state"]
        for s in shown["steps"]
    }


def _table(text: str) -> dict[str, list[str]]:
    """The rows of the step table, by their first cell (whitespace-split)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("step "))
    return {line.split()[0]: line.split() for line in lines[start + 1 :] if line.strip()}


class TestShow:
    def test_done_workflow_as_json(self, url: str) -> None:
        shown = _json("workflow", "show", "wf-done", "--broker", url, "--json")
        assert (shown["id"], shown["name"], shown["status"]) == ("wf-done", "diamond", "done")
        assert (shown["failed_step"], shown["error"]) == (None, None)
        assert _steps(shown) == {
            "fetch": ("done", {"step": "fetch", "after": []}, None),
            "left": ("done", {"step": "left", "after": ["fetch"]}, None),
            "right": ("done", {"step": "right", "after": ["fetch"]}, None),
            "join": ("done", {"step": "join", "after": ["left", "right"]}, None),
        }
        assert [s["after"] for s in shown["steps"]] == [[], ["fetch"], ["fetch"], ["left", "right"]]
        assert [s["attempts"] for s in shown["steps"]] == [1, 1, 1, 1]
        assert _undo_states(shown) == dict.fromkeys(("fetch", "left", "right", "join"))
        for step in shown["steps"]:
            assert shown["started_at"] <= step["started_at"] <= step["finished_at"]
            assert step["finished_at"] <= shown["finished_at"]
        assert shown["completed"][0] == "fetch" and shown["completed"][-1] == "join"

    def test_failed_workflow_shows_the_error_and_each_undo(self, url: str) -> None:
        shown = _json("workflow", "--json", "--broker", url, "show", "wf-failed")
        assert (shown["status"], shown["failed_step"]) == ("failed", "ship")
        assert "the carrier refused" in shown["error"]
        states = {name: state for name, (state, _, _) in _steps(shown).items()}
        assert states == {
            "reserve": "done",
            "charge": "done",
            "ship": "failed",
            "email": "skipped",
        }
        assert "the carrier refused" in str(_steps(shown)["ship"][2])
        assert _undo_states(shown) == {
            "reserve": "done",
            "charge": "done",
            "ship": None,
            "email": None,
        }
        undo = {s["name"]: s["compensation"] for s in shown["steps"] if s["compensation"]}
        assert undo["reserve"]["name"] == "release" and undo["charge"]["name"] == "refund"
        assert undo["reserve"]["attempts"] == undo["charge"]["attempts"] == 1
        # Last completed first: the charge is refunded before the stock is released.
        assert undo["charge"]["finished_at"] <= undo["reserve"]["started_at"]

    def test_human_output_is_a_table_with_undo_rows(self, url: str) -> None:
        found = run_guild("workflow", "show", "wf-failed", "--broker", url)
        assert found.returncode == 0, found.stderr
        lines = found.stdout.splitlines()
        assert lines[0] == "workflow wf-failed  'order'"
        assert lines[1].startswith("status   failed at step ship: ")
        assert "the carrier refused" in lines[1]
        assert lines[3] == "steps    2 of 4 done"
        rows = _table(found.stdout)
        assert rows["reserve"][1:4] == ["-", "done", "1"]
        assert rows["charge"][1:4] == ["reserve", "done", "1"]
        assert rows["ship"][1:4] == ["charge", "failed", "1"]
        assert rows["email"][1:6] == ["ship", "skipped", "0", "-", "-"]
        undo_rows = [line.split() for line in lines if line.startswith("  undo: ")]
        assert [row[:4] for row in undo_rows] == [
            ["undo:", "release", "done", "1"],
            ["undo:", "refund", "done", "1"],
        ]

    def test_unknown_id_is_exit_2(self, url: str) -> None:
        found = run_guild("workflow", "show", "no-such-workflow", "--broker", url)
        assert (found.returncode, found.stdout) == (2, "")
        assert found.stderr == "guild: error: no workflow with id 'no-such-workflow'\n"
        as_json = run_guild("workflow", "show", "nope", "--broker", url, "--json")
        assert as_json.returncode == 2
        assert json.loads(as_json.stderr) == {
            "error": "no workflow with id 'nope'",
            "type": "UnknownWorkflow",
            "exit_code": 2,
        }


class TestList:
    def test_all_oldest_first_with_step_counts(self, url: str) -> None:
        listed = _json("workflow", "list", "--broker", url, "--json")
        assert [(w["id"], w["status"]) for w in listed] == [
            ("wf-done", "done"),
            ("wf-failed", "failed"),
            ("wf-idle", "running"),
            ("wf-lone", "running"),
        ]
        counts = {w["id"]: w["steps"] for w in listed}
        zero = dict.fromkeys(STEP_STATES, 0)
        assert counts["wf-done"] == {**zero, "total": 4, "done": 4}
        assert counts["wf-failed"] == {**zero, "total": 4, "done": 2, "failed": 1, "skipped": 1}
        assert counts["wf-idle"] == {**zero, "total": 3, "running": 2, "pending": 1}
        assert listed[1]["failed_step"] == "ship"
        assert listed[2]["finished_at"] is None

    def test_status_filter_and_limit(self, url: str) -> None:
        running = _json("workflow", "list", "--status", "running", "--broker", url, "--json")
        assert [w["id"] for w in running] == ["wf-idle", "wf-lone"]
        ended = _json(
            "workflow", "list", "--status", "failed", "--status", "done", "--broker", url, "--json"
        )
        assert [w["id"] for w in ended] == ["wf-done", "wf-failed"]
        first = _json("workflow", "list", "--limit", "1", "--broker", url, "--json")
        assert [w["id"] for w in first] == ["wf-done"]
        none = _json("workflow", "list", "--status", "cancelled", "--broker", url, "--json")
        assert none == []

    def test_human_table(self, url: str) -> None:
        found = run_guild("workflow", "list", "--broker", url)
        assert found.returncode == 0, found.stderr
        header, *rows = found.stdout.splitlines()
        assert header.split() == ["id", "name", "status", "done", "created", "failed", "step"]
        assert [row.split()[:4] for row in rows] == [
            ["wf-done", "diamond", "done", "4/4"],
            ["wf-failed", "order", "failed", "2/4"],
            ["wf-idle", "waiting", "running", "0/3"],
            ["wf-lone", "lone", "running", "0/1"],
        ]
        assert rows[1].split()[-1] == "ship"
        empty = run_guild("workflow", "list", "--status", "cancelled", "--broker", url)
        assert (empty.returncode, empty.stdout) == (0, "no workflows\n")


class TestCancel:
    def test_cancel_a_running_workflow(self, url: str) -> None:
        found = run_guild("workflow", "cancel", "wf-idle", "--broker", url)
        assert found.returncode == 0, found.stderr
        assert found.stdout == (
            "cancelling wf-idle: 2 running steps being cancelled, then the completed ones"
            " compensated (by a running app's coordinator)\n"
        )
        shown = _json("workflow", "show", "wf-idle", "--broker", url, "--json")
        assert shown["status"] == "compensating"
        assert shown["error"] == "cancelled from the command line"
        assert _steps(shown)["c"][0] == "skipped"
        # The waiting step jobs were cancelled at once (they never run).
        jobs = [s["job_id"] for s in shown["steps"] if s["name"] in ("a", "b")]
        assert _job_statuses(url, jobs) == ["cancelled", "cancelled"]
        again = run_guild("workflow", "cancel", "wf-idle", "--broker", url)
        assert (again.returncode, again.stdout) == (1, "")
        assert again.stderr == (
            "guild: error: workflow wf-idle is already stopping: it is compensating\n"
        )

    def test_cancel_ends_at_once_with_nothing_to_undo(self, url: str) -> None:
        answer = _json(
            "workflow", "cancel", "wf-lone", "--reason", "not needed", "--broker", url, "--json"
        )
        assert answer == {"id": "wf-lone", "status": "compensating"}
        # Its step's job was cancelled; a coordinator turns that into the end.
        app = _app()

        async def drive() -> str:
            async with guild.open_broker(url) as broker, trio.open_nursery() as nursery:
                await nursery.start(app.run, broker)
                view = await app.workflow("wf-lone", wait=30)
                nursery.cancel_scope.cancel()
                return view.status

        assert trio.run(drive) == "cancelled"
        found = run_guild("workflow", "cancel", "wf-lone", "--broker", url, "--json")
        assert found.returncode == 1
        assert json.loads(found.stderr)["error"] == (
            "workflow wf-lone has already finished: it is cancelled"
        )
        shown = _json("workflow", "show", "wf-lone", "--broker", url, "--json")
        assert (shown["status"], shown["error"]) == ("cancelled", "not needed")

    def test_cancel_a_finished_workflow_is_exit_1(self, url: str) -> None:
        found = run_guild("workflow", "cancel", "wf-done", "--broker", url)
        assert (found.returncode, found.stdout) == (1, "")
        assert found.stderr == "guild: error: workflow wf-done has already finished: it is done\n"

    def test_cancel_unknown_is_exit_2(self, url: str) -> None:
        found = run_guild("workflow", "cancel", "ghost", "--broker", url)
        assert found.returncode == 2
        assert found.stderr == "guild: error: no workflow with id 'ghost'\n"


def _job_statuses(url: str, job_ids: list[str]) -> list[str]:
    async def read() -> list[str]:
        async with guild.open_broker(url) as broker:
            found = [await broker.get_result(job_id) for job_id in job_ids]
            return [r.status.value if r is not None else "none" for r in found]

    return trio.run(read)


class TestPurge:
    """Finished workflows go when their retention runs out; running ones never do."""

    def _ids(self, url: str) -> list[str]:
        return sorted(one["id"] for one in _json("workflow", "list", "--broker", url, "--json"))

    def test_nothing_expired_is_kept(self, url: str) -> None:
        assert _json("workflow", "purge", "--broker", url, "--json") == {"deleted": 0}
        assert self._ids(url) == ["wf-done", "wf-failed", "wf-idle", "wf-lone"]

    def test_retention_from_the_url_deletes_the_finished_ones(self, url: str) -> None:
        time.sleep(0.05)
        short = url + ("&" if "?" in url else "?") + "done_ttl=0.01&result_ttl=0.01"
        assert _json("workflow", "purge", "--broker", short, "--json") == {"deleted": 2}
        assert self._ids(url) == ["wf-idle", "wf-lone"]

    def test_older_than(self, url: str) -> None:
        found = run_guild("workflow", "purge", "--broker", url, "--older-than", "3600")
        assert (found.returncode, found.stdout) == (0, "deleted 0 finished workflows\n")
        time.sleep(0.05)
        found = run_guild("workflow", "purge", "--broker", url, "--older-than", "0.01")
        assert (found.returncode, found.stdout) == (0, "deleted 2 finished workflows\n")
        assert self._ids(url) == ["wf-idle", "wf-lone"]


class TestBadInput:
    def test_memory_is_refused(self) -> None:
        for action in (["show", "x"], ["list"], ["cancel", "x"]):
            found = run_guild("workflow", *action, "--broker", "memory://")
            assert found.returncode == 2
            assert found.stderr == (
                "guild: error: broker URL 'memory://': memory:// lives inside one process:"
                " there is nothing stored to read\n"
            )

    def test_no_database_is_not_created(self, tmp_path: Path) -> None:
        path = tmp_path / "none.db"
        found = run_guild("workflow", "list", "--broker", f"sqlite:///{path}")
        assert found.returncode == 2
        assert found.stderr == f"guild: error: no database at {path}\n"
        assert not path.exists()

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["list", "--status", "paused"], "argument --status: invalid choice: 'paused'"),
            (["list", "--limit", "0"], "argument --limit: expected at least 1, got 0"),
            (["purge", "--older-than", "-1"], "argument --older-than: expected at least 0"),
            (["show", " "], "argument id: expected a workflow id, got ' '"),
            (["cancel", "x", "--reason", ""], "argument --reason: expected a reason of 1 to"),
            ([], "the following arguments are required: ACTION"),
        ],
    )
    def test_bad_options_are_one_line_exit_2(
        self, tmp_path: Path, args: list[str], message: str
    ) -> None:
        found = run_guild("workflow", *args, "--broker", f"sqlite:///{tmp_path}/x.db")
        assert found.returncode == 2
        assert found.stderr.startswith("guild: error: " + message), found.stderr
        assert found.stderr.count("\n") == 1
