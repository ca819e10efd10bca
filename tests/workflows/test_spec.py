"""Workflow specs: what is refused and why, Celery's shapes, and the step jobs' envelope."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

import guild
from guild import Compensation, Job, Step, StepInput, Workflow, chain, chord, group
from guild.workflows._spec import find_cycle, validate
from guild.workflows._steps import compensation_job, step_job


def refused(make: object) -> guild.InvalidWorkflow:
    with pytest.raises(guild.InvalidWorkflow) as caught:
        make()  # type: ignore[operator]
    return caught.value


class TestRefused:
    """Each rule names itself, the step, and the reason."""

    def test_empty(self) -> None:
        error = refused(lambda: Workflow([]))
        assert (error.rule, error.step) == ("empty", None)

    def test_duplicate_step(self) -> None:
        error = refused(lambda: Workflow([Step("a", "q"), Step("a", "q")]))
        assert (error.rule, error.step) == ("duplicate-step", "a")

    def test_unknown_dependency(self) -> None:
        error = refused(lambda: Workflow([Step("a", "q", after="ghost")]))
        assert (error.rule, error.step) == ("unknown-dependency", "a")
        assert "'ghost'" in error.reason

    def test_cycle_is_named(self) -> None:
        error = refused(
            lambda: Workflow(
                [
                    Step("a", "q", after="c"),
                    Step("b", "q", after="a"),
                    Step("c", "q", after="b"),
                    Step("d", "q"),
                ]
            )
        )
        assert error.rule == "cycle"
        assert error.reason.endswith("a -> b -> c -> a")

    def test_self_dependency_is_a_cycle(self) -> None:
        error = refused(lambda: Workflow([Step("a", "q", after="a")]))
        assert error.rule == "cycle" and error.reason.endswith("a -> a")

    def test_unknown_compensation(self) -> None:
        error = refused(
            lambda: Workflow([Step("a", "q", compensate="undo")], {"other": Compensation("q")})
        )
        assert (error.rule, error.step) == ("unknown-compensation", "a")
        assert "['other']" in error.reason

    def test_unknown_queues(self) -> None:
        workflow = Workflow(
            [Step("a", "q"), Step("b", "r", compensate="u")], {"u": Compensation("s")}
        )
        validate(workflow, None)
        validate(workflow, {"q", "r", "s"})
        error = refused(lambda: validate(workflow, {"q", "s"}))
        assert (error.rule, error.step) == ("unknown-queue", "b")
        error = refused(lambda: validate(workflow, {"q", "r"}))
        assert error.rule == "unknown-queue" and "compensation 'u'" in error.reason

    @pytest.mark.parametrize("name", ["", " a", "a\nb", "a:undo"])
    def test_step_names(self, name: str) -> None:
        assert refused(lambda: Workflow([Step(name, "q")])).rule == "step-name"

    @pytest.mark.parametrize("workflow_id", ["", "a.b", "a b", "-a", "x" * 129])
    def test_workflow_ids(self, workflow_id: str) -> None:
        assert refused(lambda: Workflow([Step("a", "q")], id=workflow_id)).rule == "workflow-id"

    def test_payload_json_cannot_encode(self) -> None:
        error = refused(lambda: Workflow([Step("a", "q", {"when": dt.date(2026, 1, 1)})]))
        assert (error.rule, error.step) == ("payload", "a")
        assert "['when']" in error.reason

    def test_bad_queue_and_numbers_are_refused_when_the_step_is_built(self) -> None:
        with pytest.raises(guild.InvalidQueueName):
            Step("a", " q")
        with pytest.raises(ValueError, match="max_attempts"):
            Step("a", "q", max_attempts=0)
        with pytest.raises(ValueError, match="timeout"):
            Step("a", "q", timeout=-1.0)


@st.composite
def graphs(draw: st.DrawFn) -> dict[str, list[str]]:
    names = [f"n{i}" for i in range(draw(st.integers(1, 7)))]
    return {n: draw(st.lists(st.sampled_from(names), unique=True, max_size=3)) for n in names}


def _has_cycle_brute(graph: dict[str, list[str]]) -> bool:
    # A graph is acyclic iff repeatedly removing nodes that wait for nothing empties it.
    left = {n: set(deps) for n, deps in graph.items()}
    while True:
        free = [n for n, deps in left.items() if not deps]
        if not free:
            return bool(left)
        for n in free:
            del left[n]
        for deps in left.values():
            deps.difference_update(free)


class TestCycles:
    """find_cycle finds one exactly when there is one, and it is a real loop."""

    @given(graphs())
    def test_against_brute_force(self, graph: dict[str, list[str]]) -> None:
        cycle = find_cycle(graph)
        assert (cycle is not None) == _has_cycle_brute(graph)
        if cycle is not None:
            assert cycle[0] == cycle[-1]
            for before, after in itertools.pairwise(cycle):
                assert before in graph[after]  # `after` waits for `before`


class TestCeleryWords:
    """chain, group and chord build plain DAGs."""

    def test_chain_of_steps_and_a_group(self) -> None:
        workflow = chain(
            Step("a", "q"),
            group(Step("b", "q"), Step("c", "q")),
            Step("d", "q"),
            name="pipeline",
        )
        assert workflow.name == "pipeline"
        assert {s.name: s.after for s in workflow.steps} == {
            "a": (),
            "b": ("a",),
            "c": ("a",),
            "d": ("b", "c"),
        }

    def test_chord_is_a_group_then_a_body(self) -> None:
        # Each piece is a whole workflow: the group holds the undo its step names.
        workflow = chord(
            group(
                Step("x", "q", compensate="u"),
                Step("y", "q"),
                compensations={"u": Compensation("undo")},
            ),
            Step("sum", "q"),
        )
        assert workflow.step("sum").after == ("x", "y")
        assert workflow.compensations == {"u": Compensation("undo")}

    def test_chain_keeps_a_piece_inner_order(self) -> None:
        inner = chain(Step("b1", "q"), Step("b2", "q"))
        workflow = chain(Step("a", "q"), inner)
        assert {s.name: s.after for s in workflow.steps} == {
            "a": (),
            "b1": ("a",),
            "b2": ("b1",),
        }

    def test_conflicting_compensations(self) -> None:
        one = Workflow([Step("a", "q", compensate="u")], {"u": Compensation("q1")})
        two = Workflow([Step("b", "q", compensate="u")], {"u": Compensation("q2")})
        assert refused(lambda: group(one, two)).rule == "duplicate-compensation"

    def test_duplicate_names_across_pieces(self) -> None:
        assert refused(lambda: group(Step("a", "q"), Step("a", "q"))).rule == "duplicate-step"

    def test_json_roundtrip(self) -> None:
        workflow = chain(
            Step("x", "q", [1, {"k": None}], compensate="u", timeout=5.0),
            Step("s", "r", max_attempts=2),
            compensations={"u": Compensation("undo", "p", max_attempts=3)},
            id="abc-1",
        )
        assert Workflow.from_json(workflow.to_json()) == workflow


class TestStepJobs:
    """A step's job carries the envelope; StepInput reads it back."""

    def test_step_and_compensation_jobs(self) -> None:
        workflow = Workflow(
            [
                Step("a", "qa", {"n": 1}, compensate="u"),
                Step("b", "qb", after="a", max_attempts=2, timeout=9.0),
            ],
            {"u": Compensation("undo", {"why": "x"}, max_attempts=4)},
            id="W1",
        )
        job = step_job(workflow, "b", {"a": 7})
        assert (job.queue, job.id, job.key, job.trace_id) == ("qb", "W1.1", "wf:W1:b", "W1")
        assert (job.max_attempts, job.timeout) == (2, 9.0)
        assert job.payload == {
            "guild_workflow": {"id": "W1", "step": "b", "kind": "step"},
            "input": None,
            "results": {"a": 7},
        }
        assert StepInput.of(job) == StepInput(
            workflow_id="W1", step="b", kind="step", input=None, results={"a": 7}
        )
        undo = compensation_job(workflow, "a", "A")
        assert (undo.queue, undo.id, undo.key, undo.max_attempts) == (
            "undo",
            "W1.0.undo",
            "wf:W1:a:undo",
            4,
        )
        assert StepInput.of(undo) == StepInput(
            workflow_id="W1", step="a", kind="compensation", input={"why": "x"}, results={"a": "A"}
        )

    @pytest.mark.parametrize(
        "payload",
        [
            None,
            "text",
            {"input": 1},
            {"guild_workflow": {"id": "W", "step": "a", "kind": "other"}, "results": {}},
            {"guild_workflow": {"id": "W", "step": "a", "kind": "step"}, "results": []},
        ],
    )
    def test_not_a_step(self, payload: object) -> None:
        with pytest.raises(guild.NotAWorkflowStep) as caught:
            StepInput.of(Job(queue="q", payload=payload, id="J1"))
        assert caught.value.job_id == "J1"
