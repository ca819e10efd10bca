"""kill -9 of the process coordinating 20-step workflows, 20 times, on SQLite and Redis.

The harness (app, driver, oracle) is tests/workflows/kill9.py; its docstring
says what is killed when and what the oracle checks. The oracle reads only the
log the handlers and the driver append to, and guild's final view is judged
against it. The seed is fixed so a failure reproduces (as far as process
timing allows): set GUILD_KILL9_SEED to try another. The counts are printed
(``pytest -s``); benchmarks/bench_workflow_kill9.py prints them as a table.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from guild import Compensation, Step, Workflow
from tests._redis_server import running_redis_server

from .kill9 import STEPS, Plan, check, make_plan, stress

SEED = int(os.environ.get("GUILD_KILL9_SEED", "20261201"))
KILLS = 20


@pytest.fixture(params=["sqlite", "redis"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/kill9.db"
        return
    with running_redis_server(appendonly=True) as server:
        yield server.url


@pytest.mark.slow
def test_every_workflow_ends_as_planned_and_reruns_are_kill_cut(url: str, tmp_path: Path) -> None:
    outcome = trio.run(lambda: stress(url, tmp_path, seed=SEED, kills=KILLS))
    report = check(outcome.plans, outcome.views, outcome.lines)
    print(f"\nseed {SEED} on {url.split(':')[0]}: {report.as_dict()}")
    assert report.violations == []
    assert len(outcome.kills) == KILLS
    assert dict(report.workflows) == {"done": 2, "failed": 2}
    assert all(len(plan.workflow.steps) == STEPS for plan in outcome.plans)
    # The kills did land inside handlers: without that the test proves nothing.
    assert report.kills_cutting_a_handler >= 1
    assert report.reruns_cut_mid_run >= 1


# --- the oracle, on logs written out by hand ----------------------------------------
# A checker that never fails proves nothing: each rule is shown to catch its case.

DIAMOND = Plan(
    Workflow(
        [
            Step("a", "steps", compensate="undo-a"),
            Step("b", "steps", after="a", compensate="undo-b"),
            Step("c", "steps", after="a", compensate="undo-c"),
            Step("d", "steps", after=["b", "c"], compensate="undo-d"),
        ],
        {f"undo-{n}": Compensation("undo") for n in "abcd"},
        id="kill9-0",
    ),
    fail_step=None,
)
FAILING = attrs.evolve(DIAMOND, fail_step="d")


@attrs.frozen
class _StepView:
    name: str
    state: str


@attrs.frozen
class _View:
    """What the oracle reads of a WorkflowView."""

    status: str
    states: dict[str, str]
    failed_step: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed", "cancelled")

    @property
    def steps(self) -> list[_StepView]:
        return [_StepView(name, state) for name, state in self.states.items()]


DONE_VIEW = _View("done", dict.fromkeys("abcd", "done"))
FAILED_VIEW = _View("failed", {"a": "done", "b": "done", "c": "done", "d": "failed"}, "d")


def _run(step: str, pid: int = 100, outcome: str | None = "ok", kind: str = "step") -> list[Any]:
    mark = {"wf": "kill9-0", "kind": kind, "step": step, "pid": pid, "attempt": 1}
    lines: list[Any] = [{"e": "start", **mark}]
    if outcome is not None:
        lines.append({"e": "end", "outcome": outcome, **mark})
    return lines


def _kill(pid: int, mode: str = "mid-step") -> list[Any]:
    return [{"e": "kill", "pid": pid, "mode": mode}]


CLEAN = _run("a") + _run("b") + _run("c") + _run("d")
UNDONE = (
    _run("a")
    + _run("c")
    + _run("b")
    + _run("d", outcome="reject")
    + _run("b", kind="compensation")
    + _run("c", kind="compensation")
    + _run("a", kind="compensation")
)


def _violations(plan: Plan, view: _View, lines: list[Any]) -> list[str]:
    return check([plan], [view], lines).violations  # type: ignore[list-item]


class TestOracle:
    def test_clean_runs_pass(self) -> None:
        report = check([DIAMOND], [DONE_VIEW], CLEAN)  # type: ignore[list-item]
        assert (report.violations, report.step_runs) == ([], 4)
        report = check([FAILING], [FAILED_VIEW], UNDONE)  # type: ignore[list-item]
        assert (report.violations, report.compensation_runs) == ([], 3)

    def test_reruns_after_a_kill_are_counted_by_where_the_kill_cut(self) -> None:
        lines = _run("a", pid=50, outcome=None) + _kill(50)
        lines += _run("a", pid=60) + _kill(60, "after-end") + CLEAN
        report = check([DIAMOND], [DONE_VIEW], lines)  # type: ignore[list-item]
        assert report.violations == []
        assert (report.reruns_cut_mid_run, report.reruns_after_end) == (1, 1)
        assert (report.kills_cutting_a_handler, dict(report.kills)) == (
            1,
            {"mid-step": 1, "after-end": 1},
        )

    def test_a_rerun_without_a_kill(self) -> None:
        assert _violations(DIAMOND, DONE_VIEW, CLEAN + _run("d", pid=200)) == [
            "kill9-0 step d: ran again (pid 200) with no kill of pid 100 before"
        ]

    def test_a_rerun_after_a_dependent_started(self) -> None:
        lines = CLEAN + _kill(100) + _run("a", pid=300)
        assert _violations(DIAMOND, DONE_VIEW, lines) == [
            "kill9-0 step a: ran again after ['b', 'c'] had started on its result"
        ]

    def test_a_step_before_its_dependency_ended(self) -> None:
        lines = _run("a", outcome=None) + _run("b") + _run("c") + _run("d")
        found = _violations(DIAMOND, DONE_VIEW, lines)
        assert "kill9-0 a: done, but its last run did not end ok" in found
        assert "kill9-0 b: started before its dependency a had ended ok" in found

    def test_an_unplanned_end(self) -> None:
        assert _violations(DIAMOND, _View("running", {}), CLEAN) == [
            "kill9-0: not finished (running)"
        ]
        assert _violations(DIAMOND, FAILED_VIEW, CLEAN) == [
            "kill9-0: ended failed at d, not done at None",
            "kill9-0 d: failed, but it was not the failing step",
            "kill9-0 d: failed in a workflow that cannot fail",
        ]

    def test_compensations_out_of_order_twice_or_missing(self) -> None:
        reversed_ = UNDONE[:-6] + _run("a", kind="compensation") + UNDONE[-6:-2]
        assert "kill9-0: undo a ran before undo b, which runs after it" in _violations(
            FAILING, FAILED_VIEW, reversed_
        )
        twice = UNDONE + _kill(100) + _run("b", pid=400, kind="compensation")
        assert _violations(FAILING, FAILED_VIEW, twice) == [
            "kill9-0: undo c started before undo b ended",
            "kill9-0 compensation b: ran again after the compensation of ['c', 'a'] had started",
        ]
        missing = UNDONE[:-2]
        assert _violations(FAILING, FAILED_VIEW, missing) == [
            "kill9-0: compensated ['b', 'c'], but its done steps are ['a', 'b', 'c']"
        ]

    def test_a_compensation_while_a_step_runs(self) -> None:
        early = UNDONE[:6] + _run("b", kind="compensation") + _run("d", outcome="reject")
        early += UNDONE[8:]
        assert "kill9-0 undo b: started while a step still ran" in _violations(
            FAILING, FAILED_VIEW, early
        )


def test_the_generated_workflows_have_20_steps_and_fail_midway() -> None:
    plan = make_plan(random.Random(SEED), 0, fail=True)
    assert len(plan.workflow.steps) == STEPS
    assert plan.fail_step is not None and 5 <= int(plan.fail_step[1:]) <= 10
    assert plan.ancestors(plan.fail_step), "the failing step runs after others"
    assert all(step.compensate for step in plan.workflow.steps)
