"""The workflow state machine, against a reference model written separately here.

The model (``Reference``) knows nothing of the machine's state: it keeps what
the outside world has seen (which jobs were started, how each ended, what was
cancelled), recomputes by brute force over all steps what ought to happen after
each event, and the machine's decisions must equal it at every event. On top,
each rule of the design is asserted in the world's terms: a step starts only
after its dependencies are done, never twice and never after a failure; running
siblings are cancelled; compensations run one at a time, each once, in reverse
order of completion; replayed and stray events change nothing.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guild.workflows._machine import (
    CancelRequested,
    CancelStep,
    CompensationFailed,
    CompensationSucceeded,
    Decision,
    Event,
    Finished,
    StartCompensation,
    StartStep,
    StepCancelled,
    StepFailed,
    StepSucceeded,
    WorkflowState,
    apply,
    resume,
    start,
)
from guild.workflows._spec import Compensation, Step, Workflow

# --- the reference model ------------------------------------------------------------


@attrs.define
class Reference:
    """What should happen, from the outside, recomputed from scratch each time."""

    after: dict[str, tuple[str, ...]]
    undoable: set[str]
    started: list[str] = attrs.Factory(list)
    ended: dict[str, str] = attrs.Factory(dict)  # step -> done | failed | cancelled
    results: dict[str, Any] = attrs.Factory(dict)
    done_order: list[str] = attrs.Factory(list)
    stop: tuple[str, str | None, str] | None = None  # (ending, failed step, error)
    cancel_sent: set[str] = attrs.Factory(set)
    undo_started: list[str] = attrs.Factory(list)
    undo_ended: dict[str, str] = attrs.Factory(dict)
    finished: str | None = None

    def running(self) -> set[str]:
        return {s for s in self.started if s not in self.ended}

    def undo_running(self) -> set[str]:
        return {s for s in self.undo_started if s not in self.undo_ended}

    def fits(self, event: Event) -> bool:
        """Whether the event means anything now (else it must be ignored)."""
        if self.finished is not None:
            return False
        if isinstance(event, CancelRequested):
            return self.stop is None
        if isinstance(event, CompensationSucceeded | CompensationFailed):
            return event.step in self.undo_running()
        return event.step in self.running()

    def record(self, event: Event) -> None:
        if isinstance(event, CancelRequested):
            self.stop = ("cancelled", None, event.reason)
        elif isinstance(event, StepSucceeded):
            self.ended[event.step] = "done"
            self.results[event.step] = event.result
            self.done_order.append(event.step)
        elif isinstance(event, StepFailed | StepCancelled):
            self.ended[event.step] = "failed" if isinstance(event, StepFailed) else "cancelled"
            if self.stop is None:
                # A step cancelled from outside (no cancel was sent yet) fails the workflow.
                error = (
                    event.error if isinstance(event, StepFailed) else "the step's job was cancelled"
                )
                self.stop = ("failed", event.step, error)
        elif isinstance(event, CompensationSucceeded):
            self.undo_ended[event.step] = "done"
        else:
            self.undo_ended[event.step] = "failed"

    def expected(self, stopped_now: bool) -> list[Decision]:
        """The decisions the world should see now: starts and cancels as a set
        (order free), compensation or end exactly."""
        out: list[Decision] = []
        if stopped_now:
            out += [CancelStep(s) for s in sorted(self.running())]
        if self.stop is None:
            if len(self.ended) == len(self.after) and all(v == "done" for v in self.ended.values()):
                return [Finished("done")]
            for step, deps in self.after.items():
                if step not in self.started and all(self.ended.get(d) == "done" for d in deps):
                    out.append(StartStep(step, {d: self.results[d] for d in deps}))
            return out
        if self.running() or self.undo_running():
            return out
        todo = [s for s in reversed(self.done_order) if s in self.undoable]
        todo = [s for s in todo if s not in self.undo_started]
        if todo:
            return [*out, StartCompensation(todo[0], self.results[todo[0]])]
        ending, failed_step, error = self.stop
        return [*out, Finished(ending, failed_step, error)]  # type: ignore[arg-type]

    def see(self, decisions: list[Decision]) -> None:
        for decision in decisions:
            if isinstance(decision, StartStep):
                self.started.append(decision.step)
            elif isinstance(decision, CancelStep):
                self.cancel_sent.add(decision.step)
            elif isinstance(decision, StartCompensation):
                self.undo_started.append(decision.step)
            else:
                self.finished = decision.status


def _key(decision: Decision) -> tuple[str, str]:
    return (type(decision).__name__, getattr(decision, "step", ""))


def assert_same(got: list[Decision], want: list[Decision]) -> None:
    assert sorted(got, key=_key) == sorted(want, key=_key)
    # Compensations and the end come one at a time, after any cancels and starts.
    tail = [d for d in got if isinstance(d, StartCompensation | Finished)]
    assert len(tail) <= 1
    if tail:
        assert got[-1] == tail[0]


# --- generated workflows and worlds -------------------------------------------------


@st.composite
def workflows(draw: st.DrawFn) -> Workflow:
    count = draw(st.integers(1, 8))
    names = [f"s{i}" for i in range(count)]
    steps = []
    for i, name in enumerate(names):
        deps = draw(st.lists(st.sampled_from(names[:i]), unique=True, max_size=3)) if i else []
        undo = "undo" if draw(st.booleans()) else None
        steps.append(Step(name, "q", {"n": i}, after=deps, compensate=undo))
    order = draw(st.permutations(steps))  # declared in any order, not only topological
    return Workflow(order, {"undo": Compensation("q")})


def _world_events(ref: Reference, error_count: int) -> list[Event]:
    """Every event the world could send now that means something."""
    options: list[Event] = []
    for step in sorted(ref.running()):
        options.append(StepSucceeded(step, f"result of {step}", attempts=1))
        options.append(StepFailed(step, f"error {error_count} in {step}", attempts=2))
        options.append(StepCancelled(step, attempts=1))
    for step in sorted(ref.undo_running()):
        options.append(CompensationSucceeded(step, attempts=1))
        options.append(CompensationFailed(step, f"undo of {step} failed", attempts=3))
    if ref.stop is None:
        options.append(CancelRequested("operator said stop"))
    return options


def _stray_events(spec: Workflow) -> list[Event]:
    """Events that a replay or a confused coordinator might send for any step."""
    out: list[Event] = []
    for step in spec.steps:
        out += [
            StepSucceeded(step.name, "late"),
            StepFailed(step.name, "late failure"),
            StepCancelled(step.name),
            CompensationSucceeded(step.name),
            CompensationFailed(step.name, "late undo failure"),
        ]
    return [*out, CancelRequested("late cancel"), StepSucceeded("no such step")]


def _roundtrip(state: WorkflowState) -> WorkflowState:
    again = WorkflowState.from_json(state.to_json())
    assert again == state
    return again


def _check_resume(spec: Workflow, state: WorkflowState, ref: Reference) -> None:
    want: list[Decision] = []
    for step in sorted(ref.running()):
        want.append(StartStep(step, {d: ref.results[d] for d in ref.after[step]}))
        if step in ref.cancel_sent:
            want.append(CancelStep(step))
    want += [StartCompensation(s, ref.results[s]) for s in sorted(ref.undo_running())]
    if ref.finished is not None:
        want = []
    assert sorted(resume(spec, state), key=_key) == sorted(want, key=_key)


class TestAgainstReference:
    """Over generated DAGs and failure points, the machine decides what the model says."""

    @settings(max_examples=300, deadline=None)
    @given(workflows(), st.data())
    def test_every_event_decides_what_the_model_says(
        self, spec: Workflow, data: st.DataObject
    ) -> None:
        ref = Reference(
            after={s.name: s.after for s in spec.steps},
            undoable={s.name for s in spec.steps if s.compensate},
        )
        state, decisions = start(spec, now=0.0)
        assert_same(decisions, ref.expected(stopped_now=False))
        ref.see(decisions)
        history: list[Event] = []
        now = 0.0
        # Each round ends a step or a compensation, or stops the workflow: a
        # workflow of n steps finishes within 2n + 1 rounds.
        for _ in range(2 * len(spec.steps) + 1):
            if ref.finished is not None:
                break
            state = _roundtrip(state)
            _check_resume(spec, state, ref)
            if data.draw(st.booleans()):
                # A replayed or stray event first: it must change nothing.
                noise = data.draw(st.sampled_from(history + _stray_events(spec)))
                if not ref.fits(noise):  # (one that fits is a real event: skip it)
                    assert apply(spec, state, noise, now=now) == (state, [])
            options = _world_events(ref, len(history))
            assert options, "the machine left the world nothing to do"
            event = data.draw(st.sampled_from(options))
            now += 1.0
            state, decisions = apply(spec, state, event, now=now)
            history.append(event)
            was_stopped = ref.stop is not None
            ref.record(event)
            assert_same(decisions, ref.expected(stopped_now=not was_stopped and bool(ref.stop)))
            self._check_rules(ref, decisions)
            ref.see(decisions)
        assert ref.finished is not None
        self._check_outcome(spec, state, ref)

    def _check_rules(self, ref: Reference, decisions: list[Decision]) -> None:
        for decision in decisions:
            if isinstance(decision, StartStep):
                # Only after its dependencies are done, never twice, never once stopped.
                assert all(ref.ended.get(d) == "done" for d in ref.after[decision.step])
                assert decision.step not in ref.started
                assert ref.stop is None
            if isinstance(decision, StartCompensation):
                # One at a time, once each, only when nothing runs forward.
                assert not ref.running()
                assert not ref.undo_running()
                assert decision.step not in ref.undo_started

    def _check_outcome(self, spec: Workflow, state: WorkflowState, ref: Reference) -> None:
        assert state.status == ref.finished
        for step in spec.steps:
            run = state.steps[step.name]
            assert run.state == ref.ended.get(step.name, "skipped")
            assert run.compensation == ref.undo_ended.get(step.name, "none")
        if ref.stop is None:
            assert ref.undo_started == []
            assert set(ref.ended.values()) == {"done"}
        else:
            # Each completed step that declares an undo is undone once, last completed first.
            undoable = [s for s in reversed(ref.done_order) if s in ref.undoable]
            assert ref.undo_started == undoable
            assert state.failed_step == ref.stop[1]


# --- written-out cases -------------------------------------------------------------


def diamond(undo: bool = True) -> Workflow:
    c = "undo" if undo else None
    return Workflow(
        [
            Step("a", "q", compensate=c),
            Step("b", "q", after="a", compensate=c),
            Step("c", "q", after="a", compensate=c),
            Step("d", "q", after=("b", "c"), compensate=c),
        ],
        {"undo": Compensation("undo")},
        id="W",
    )


def run(spec: Workflow, *events: Event) -> tuple[WorkflowState, list[list[Decision]]]:
    state, first = start(spec)
    out = [first]
    for at, event in enumerate(events, 1):
        state, decisions = apply(spec, state, event, now=float(at))
        out.append(decisions)
    return state, out


class TestDiamond:
    """a, then b and c together, then d with both results."""

    def test_success(self) -> None:
        state, out = run(
            diamond(),
            StepSucceeded("a", 1),
            StepSucceeded("c", 3),
            StepSucceeded("b", 2),
            StepSucceeded("d", 4),
        )
        assert out == [
            [StartStep("a", {})],
            [StartStep("b", {"a": 1}), StartStep("c", {"a": 1})],
            [],
            [StartStep("d", {"b": 2, "c": 3})],
            [Finished("done")],
        ]
        assert state.status == "done"
        assert state.completed == ("a", "c", "b", "d")
        assert state.steps["d"].started_at == 3.0
        assert state.steps["d"].finished_at == 4.0

    def test_a_failure_cancels_the_sibling_and_undoes_in_reverse(self) -> None:
        state, out = run(
            diamond(),
            StepSucceeded("a", 1),
            StepFailed("b", "boom"),
            StepSucceeded("c", 3),  # finished before its cancel landed: it counts
            CompensationSucceeded("c"),
            CompensationSucceeded("a"),
        )
        assert out == [
            [StartStep("a", {})],
            [StartStep("b", {"a": 1}), StartStep("c", {"a": 1})],
            [CancelStep("c")],
            [StartCompensation("c", 3)],
            [StartCompensation("a", 1)],
            [Finished("failed", "b", "boom")],
        ]
        assert {n: r.state for n, r in state.steps.items()} == {
            "a": "done",
            "b": "failed",
            "c": "done",
            "d": "skipped",
        }
        assert [state.steps[n].compensation for n in "abcd"] == ["done", "none", "done", "none"]

    def test_a_cancelled_sibling_is_not_undone(self) -> None:
        state, out = run(
            diamond(),
            StepSucceeded("a", 1),
            StepFailed("c", "boom"),
            StepCancelled("b"),
            CompensationFailed("a", "undo broke"),
        )
        assert out[2:] == [
            [CancelStep("b")],
            [StartCompensation("a", 1)],
            [Finished("failed", "c", "boom")],
        ]
        assert state.steps["b"].state == "cancelled"
        assert state.steps["a"].compensation == "failed"
        assert state.steps["a"].compensation_error == "undo broke"

    def test_a_failed_undo_does_not_stop_the_next(self) -> None:
        spec = Workflow(
            [
                Step("a", "q", compensate="u"),
                Step("b", "q", after="a", compensate="u"),
                Step("c", "q", after="b"),
            ],
            {"u": Compensation("q")},
        )
        _, out = run(
            spec,
            StepSucceeded("a", "A"),
            StepSucceeded("b", "B"),
            StepFailed("c", "no"),
            CompensationFailed("b", "x"),
            CompensationSucceeded("a"),
        )
        assert out[3:] == [
            [StartCompensation("b", "B")],
            [StartCompensation("a", "A")],
            [Finished("failed", "c", "no")],
        ]

    def test_cancel_request(self) -> None:
        state, out = run(
            diamond(undo=False),
            StepSucceeded("a", 1),
            CancelRequested("stop it"),
            StepCancelled("b"),
            StepSucceeded("c", 3),
        )
        assert out[2:] == [
            [CancelStep("b"), CancelStep("c")],
            [],
            [Finished("cancelled", None, "stop it")],
        ]
        assert state.status == "cancelled"
        assert state.steps["b"].state == "cancelled"
        assert state.steps["d"].state == "skipped"

    def test_duplicates_and_late_events_change_nothing(self) -> None:
        spec = diamond()
        state, _ = run(spec, StepSucceeded("a", 1))
        late: list[Event] = [
            StepSucceeded("a", 99),
            StepFailed("a", "late"),
            StepSucceeded("d", 4),  # not started yet
            CompensationSucceeded("a"),
            StepSucceeded("nope"),
        ]
        for event in late:
            assert apply(spec, state, event, now=9.0) == (state, [])
        done, _ = run(spec, *[StepSucceeded(n, 0) for n in "abcd"])
        assert apply(spec, done, CancelRequested(), now=9.0) == (done, [])

    def test_a_single_step(self) -> None:
        state, out = run(Workflow([Step("only", "q")]), StepFailed("only", "x"))
        assert out == [[StartStep("only", {})], [Finished("failed", "only", "x")]]
        assert state.status == "failed"


class TestResume:
    """A restarted coordinator redoes exactly the in-flight work."""

    def test_running_steps_cancels_and_compensation(self) -> None:
        spec = diamond()
        state, _ = run(spec, StepSucceeded("a", 1))
        assert resume(spec, state) == [StartStep("b", {"a": 1}), StartStep("c", {"a": 1})]
        state, _ = run(spec, StepSucceeded("a", 1), StepFailed("b", "x"))
        assert resume(spec, state) == [StartStep("c", {"a": 1}), CancelStep("c")]
        state, _ = run(spec, StepSucceeded("a", 1), StepFailed("b", "x"), StepCancelled("c"))
        assert resume(spec, state) == [StartCompensation("a", 1)]

    @pytest.mark.parametrize("status", ["done", "failed"])
    def test_nothing_for_a_finished_workflow(self, status: str) -> None:
        spec = Workflow([Step("a", "q")])
        event: Event = StepSucceeded("a") if status == "done" else StepFailed("a", "x")
        state, _ = run(spec, event)
        assert state.status == status
        assert resume(spec, state) == []


class TestJson:
    """The stored text gives back the same state."""

    def test_roundtrip(self) -> None:
        state, _ = run(diamond(), StepSucceeded("a", {"k": [1, 2.5, None]}), StepFailed("b", "x"))
        assert WorkflowState.from_json(state.to_json()) == state

    def test_garbage_is_a_value_error(self) -> None:
        with pytest.raises(ValueError, match="not a stored workflow state"):
            WorkflowState.from_json('{"status": "running"}')
