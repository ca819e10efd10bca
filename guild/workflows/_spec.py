"""What a workflow is: steps, their dependencies and their compensations.

A :class:`Workflow` is a DAG of :class:`Step` s. A step names the queue its job
runs on (so it gets that queue's retries, timeouts, limits and supervision), the
steps it runs after, and optionally the :class:`Compensation` that undoes it.

Rules (checked by :func:`validate`, which building a ``Workflow`` runs without
the queue check, so that a workflow that can never run cannot be built):

* at least one step; step names non-empty, without control characters or
  surrounding whitespace, unique, and not ending in ``:undo`` (that suffix marks
  a compensation's idempotency key);
* every dependency names a step of the workflow, and the dependencies form no
  cycle (the error names one, e.g. ``a -> b -> a``);
* every ``compensate`` names an entry of ``Workflow.compensations``;
* every payload is one JSON can encode;
* with ``known_queues``, every step's and compensation's queue is one of them.

:func:`chain`, :func:`group` and :func:`chord` are Celery's words for the common
shapes; each returns a plain ``Workflow``, so they compose.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import attrs

from .._codec import encode_payload
from .._errors import InvalidField, InvalidQueueName, InvalidWorkflow, PayloadEncodeError, shown
from .._exports import publish
from .._ids import new_id
from .._job import MAX_QUEUE_NAME, JSONValue, check_field, check_queue_name, check_stored_queue_name

_WORKFLOW_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
UNDO_SUFFIX = ":undo"


def _positive_or_none(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a positive number of seconds, got {value!r}")


def _queue(_: object, __: attrs.Attribute[Any], value: str) -> None:
    # The stored rule: a workflow read back from its record may predate the length
    # limit of new names, which ``validate`` applies when one is submitted.
    check_stored_queue_name(value)


def _names(value: str | Step | Iterable[str | Step]) -> tuple[str, ...]:
    items: Iterable[str | Step] = (value,) if isinstance(value, str | Step) else value
    names: list[str] = []
    for item in items:
        name = item.name if isinstance(item, Step) else item
        if name not in names:
            names.append(name)
    return tuple(names)


@attrs.frozen
class Compensation:
    """The job that undoes a completed step (a saga's compensating action).

    Its handler gets the step's result in ``StepInput.results``, under the
    step's name, and this ``payload`` as ``StepInput.input``.

    Attributes:
        queue: the queue its job runs on.
        payload: JSON-serialisable arguments.
        max_attempts: runs allowed (``None``: the queue's worker's).
        timeout: seconds one run may take (``None``: the worker's).
    """

    queue: str = attrs.field(validator=_queue)
    payload: JSONValue = None
    max_attempts: int | None = attrs.field(
        default=None, kw_only=True, validator=attrs.validators.optional(attrs.validators.ge(1))
    )
    timeout: float | None = attrs.field(default=None, kw_only=True, validator=_positive_or_none)


@attrs.frozen
class Step:
    """One node of a workflow: a job on ``queue``, run once the steps ``after`` are done.

    Attributes:
        name: unique within the workflow; the key of its result in later steps'
            ``StepInput.results``.
        queue: the queue its job runs on.
        payload: JSON-serialisable arguments (``StepInput.input``).
        after: the steps (names, or ``Step`` objects) it waits for.
        compensate: the name of the ``Workflow.compensations`` entry that undoes it.
        max_attempts: runs allowed before the step fails (``None``: the worker's).
        timeout: seconds one run may take (``None``: the worker's).
    """

    name: str
    queue: str = attrs.field(validator=_queue)
    payload: JSONValue = None
    after: tuple[str, ...] = attrs.field(default=(), kw_only=True, converter=_names)
    compensate: str | None = attrs.field(default=None, kw_only=True)
    max_attempts: int | None = attrs.field(
        default=None, kw_only=True, validator=attrs.validators.optional(attrs.validators.ge(1))
    )
    timeout: float | None = attrs.field(default=None, kw_only=True, validator=_positive_or_none)


def _to_steps(value: Iterable[Step]) -> tuple[Step, ...]:
    return tuple(value)


def _to_compensations(value: Mapping[str, Compensation]) -> dict[str, Compensation]:
    return dict(value)


def _id_or_new(value: str | None) -> str:
    return new_id() if value is None else value


@attrs.frozen
class Workflow:
    """A DAG of steps, submitted with ``await app.submit(workflow)``.

    Building one checks its shape (see :func:`validate`); the queues are checked
    when it is submitted, against the queues the app knows.

    Attributes:
        steps: the steps, in any order that names each once.
        compensations: the undo jobs that steps name in ``compensate``.
        name: a label for people (``guild workflow list``); need not be unique;
            at most 200 characters, one line.
        id: unique per workflow (default: a new time-sortable id): letters,
            digits, ``_`` and ``-``, at most 128.

    Raises:
        InvalidWorkflow: the shape is wrong; ``rule`` and ``step`` say how and where.
    """

    steps: tuple[Step, ...] = attrs.field(converter=_to_steps)
    compensations: dict[str, Compensation] = attrs.field(factory=dict, converter=_to_compensations)
    name: str = attrs.field(default="workflow", kw_only=True)
    id: str = attrs.field(factory=new_id, kw_only=True, converter=_id_or_new)
    _positions: dict[str, int] = attrs.field(
        init=False,
        repr=False,
        eq=False,
        default=attrs.Factory(
            lambda self: {s.name: i for i, s in enumerate(self.steps)}, takes_self=True
        ),
    )

    def __attrs_post_init__(self) -> None:
        # The shape only: the limits of new names wait for submission (``validate``),
        # so that a workflow stored before them is still read back (``from_json``).
        _check_shape(self)

    def step(self, name: str) -> Step:
        """The step called ``name``.

        Raises:
            KeyError: no such step.
        """
        return self.steps[self._positions[name]]

    def index(self, name: str) -> int:
        """The position of step ``name`` in ``steps`` (it names the step's job).

        Raises:
            KeyError: no such step.
        """
        return self._positions[name]

    def queues(self) -> set[str]:
        """Every queue a step or compensation of this workflow runs on."""
        return {s.queue for s in self.steps} | {c.queue for c in self.compensations.values()}

    # --- JSON (the record's ``spec``) -------------------------------------------

    def to_json(self) -> str:
        """The workflow as JSON text, for the broker's workflow record."""
        return json.dumps(
            {
                "id": self.id,
                "name": self.name,
                "steps": [
                    {
                        "name": s.name,
                        "queue": s.queue,
                        "payload": s.payload,
                        "after": list(s.after),
                        "compensate": s.compensate,
                        "max_attempts": s.max_attempts,
                        "timeout": s.timeout,
                    }
                    for s in self.steps
                ],
                "compensations": {
                    name: {
                        "queue": c.queue,
                        "payload": c.payload,
                        "max_attempts": c.max_attempts,
                        "timeout": c.timeout,
                    }
                    for name, c in self.compensations.items()
                },
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> Workflow:
        """The workflow that :meth:`to_json` wrote.

        Raises:
            ValueError: the text is not such a workflow (``InvalidWorkflow`` when
                its shape breaks a rule).
        """
        try:
            data = json.loads(text)
            steps = [
                Step(
                    s["name"],
                    s["queue"],
                    s["payload"],
                    after=tuple(s["after"]),
                    compensate=s["compensate"],
                    max_attempts=s["max_attempts"],
                    timeout=s["timeout"],
                )
                for s in data["steps"]
            ]
            compensations = {
                name: Compensation(
                    c["queue"], c["payload"], max_attempts=c["max_attempts"], timeout=c["timeout"]
                )
                for name, c in data["compensations"].items()
            }
            return cls(steps, compensations, name=data["name"], id=data["id"])
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"not a stored workflow spec: {error!r}") from error


def validate(workflow: Workflow, known_queues: Collection[str] | None = None) -> None:
    """Refuse a workflow that cannot run, or that names what no new workflow may:
    a name, step name or queue name over 200 characters.

    Args:
        workflow: the workflow.
        known_queues: the queues that have workers; ``None`` skips that check.

    Raises:
        InvalidWorkflow: the first rule broken, with the step it is about.
    """
    _check_shape(workflow)
    _check_new_names(workflow)
    if known_queues is not None:
        _check_queues(workflow, known_queues)


def _check_new_names(workflow: Workflow) -> None:
    try:
        # A label in every ``guild workflow list`` row: one line, of a width a table holds.
        check_field("name", workflow.name, MAX_QUEUE_NAME)
    except InvalidField as error:
        raise InvalidWorkflow("name", None, str(error)) from None
    for step in workflow.steps:
        if len(step.name) > MAX_QUEUE_NAME:
            raise InvalidWorkflow(
                "step-name",
                step.name,
                f"must be at most {MAX_QUEUE_NAME:,} characters, got {len(step.name):,}",
            )
    queues: list[tuple[str | None, str, str]] = [(s.name, "", s.queue) for s in workflow.steps]
    queues += [(None, f"compensation {n!r}: ", c.queue) for n, c in workflow.compensations.items()]
    for name, what, queue in queues:
        try:
            check_queue_name(queue)
        except InvalidQueueName as error:
            raise InvalidWorkflow("queue-name", name, f"{what}{error}") from None


def _check_shape(workflow: Workflow) -> None:
    if not _WORKFLOW_ID.fullmatch(workflow.id):
        raise InvalidWorkflow(
            "workflow-id",
            None,
            f"id {shown(workflow.id)} must be 1 to 128 letters, digits, '_' or '-',"
            " starting with a letter or digit",
        )
    if not workflow.steps:
        raise InvalidWorkflow("empty", None, "a workflow needs at least one step")
    names: set[str] = set()
    for step in workflow.steps:
        _check_step_name(step.name)
        if step.name in names:
            raise InvalidWorkflow("duplicate-step", step.name, "two steps have this name")
        names.add(step.name)
    for step in workflow.steps:
        for dependency in step.after:
            if dependency not in names:
                raise InvalidWorkflow(
                    "unknown-dependency", step.name, f"runs after {dependency!r}, which is no step"
                )
    cycle = find_cycle({s.name: s.after for s in workflow.steps})
    if cycle is not None:
        raise InvalidWorkflow(
            "cycle", cycle[0], "the steps wait for each other: " + " -> ".join(cycle)
        )
    for step in workflow.steps:
        if step.compensate is not None and step.compensate not in workflow.compensations:
            raise InvalidWorkflow(
                "unknown-compensation",
                step.name,
                f"compensate={step.compensate!r} names no entry of the workflow's compensations"
                f" (it has {sorted(workflow.compensations)})",
            )
    _check_payloads(workflow)


def _check_payloads(workflow: Workflow) -> None:
    # Refused here, not when a step's job is enqueued halfway through the workflow.
    payloads: list[tuple[str | None, str, JSONValue]] = [
        (s.name, "step", s.payload) for s in workflow.steps
    ]
    payloads += [
        (None, f"compensation {n!r}", c.payload) for n, c in workflow.compensations.items()
    ]
    for step, what, payload in payloads:
        if payload is None:
            continue
        try:
            encode_payload(payload)
        except PayloadEncodeError as error:
            raise InvalidWorkflow("payload", step, f"{what}: {error}") from None


def _check_step_name(name: object) -> None:
    if not isinstance(name, str):
        raise InvalidWorkflow("step-name", None, f"a step name must be a string, got {name!r}")
    try:
        # The stored rule (non-empty, no padding, no control characters); the
        # length limit of new names is _check_new_names'.
        check_stored_queue_name(name)
    except InvalidQueueName as error:
        raise InvalidWorkflow("step-name", name, error.reason) from None
    if name.endswith(UNDO_SUFFIX):
        raise InvalidWorkflow(
            "step-name", name, f"must not end in {UNDO_SUFFIX!r} (it marks compensations)"
        )


def _check_queues(workflow: Workflow, known_queues: Collection[str]) -> None:
    known = sorted(known_queues)
    for step in workflow.steps:
        if step.queue not in known_queues:
            raise InvalidWorkflow(
                "unknown-queue",
                step.name,
                f"queue {step.queue!r} has no worker (known queues: {known})",
            )
    for name, compensation in workflow.compensations.items():
        if compensation.queue not in known_queues:
            raise InvalidWorkflow(
                "unknown-queue",
                None,
                f"compensation {name!r}: queue {compensation.queue!r} has no worker"
                f" (known queues: {known})",
            )


def find_cycle(after: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One cycle of the "runs after" graph, in run order (``["a", "b", "a"]``), or None.

    ``after`` maps each step to the steps it waits for; names missing from the
    mapping are ignored. Depth-first, in the mapping's order, so the answer is
    the same for the same workflow.
    """
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for root in after:
        if state.get(root):
            continue
        path: list[str] = [root]
        iterators = [iter(after[root])]
        state[root] = 1
        while iterators:
            child = next(iterators[-1], None)
            if child is None:
                state[path.pop()] = 2
                iterators.pop()
                continue
            if child not in after or state.get(child) == 2:
                continue
            if state.get(child) == 1:
                # path[i] waits for path[i+1]; in run order the waiting comes last.
                loop = [*path[path.index(child) :], child]
                return loop[::-1]
            state[child] = 1
            path.append(child)
            iterators.append(iter(after[child]))
    return None


# --- Celery's words ------------------------------------------------------------------


Piece = Step | Workflow


def _steps_of(piece: Piece) -> tuple[tuple[Step, ...], dict[str, Compensation]]:
    if isinstance(piece, Step):
        return (piece,), {}
    return piece.steps, dict(piece.compensations)


def _sinks(steps: Iterable[Step]) -> tuple[str, ...]:
    steps = tuple(steps)
    waited_for = {name for s in steps for name in s.after}
    return tuple(s.name for s in steps if s.name not in waited_for)


def _merge(
    into: dict[str, Compensation], more: Mapping[str, Compensation]
) -> dict[str, Compensation]:
    for name, compensation in more.items():
        if name in into and into[name] != compensation:
            raise InvalidWorkflow(
                "duplicate-compensation",
                None,
                f"two pieces define compensation {name!r} differently",
            )
        into[name] = compensation
    return into


def group(
    *pieces: Piece,
    compensations: Mapping[str, Compensation] | None = None,
    name: str = "group",
    id: str | None = None,
) -> Workflow:
    """Run ``pieces`` side by side (Celery's ``group``): the union of their steps.

    Args:
        pieces: steps, or workflows (from ``chain``, ``group``...).
        compensations: undo jobs the steps name, beside the pieces' own.
        name: the workflow's name.
        id: the workflow's id (default: a new one).

    Raises:
        InvalidWorkflow: no pieces, two steps share a name, or a rule is broken.
    """
    steps: list[Step] = []
    undos = _merge({}, compensations or {})
    for piece in pieces:
        more, undo = _steps_of(piece)
        steps.extend(more)
        _merge(undos, undo)
    return Workflow(steps, undos, name=name, id=id)


def chain(
    *pieces: Piece,
    compensations: Mapping[str, Compensation] | None = None,
    name: str = "chain",
    id: str | None = None,
) -> Workflow:
    """Run ``pieces`` one after another (Celery's ``chain``).

    Each piece's first steps (those that wait for nothing inside it) run after
    the previous piece's last steps (those nothing inside it waits for), and get
    their results.

    Args:
        pieces: steps, or workflows (from ``chain``, ``group``...).
        compensations: undo jobs the steps name, beside the pieces' own.
        name: the workflow's name.
        id: the workflow's id (default: a new one).

    Raises:
        InvalidWorkflow: no pieces, two steps share a name, or a rule is broken.
    """
    steps: list[Step] = []
    undos = _merge({}, compensations or {})
    previous: tuple[str, ...] = ()
    for piece in pieces:
        more, undo = _steps_of(piece)
        inside = {s.name for s in more}
        for step in more:
            if previous and not any(d in inside for d in step.after):
                step = attrs.evolve(step, after=_names((*step.after, *previous)))
            steps.append(step)
        _merge(undos, undo)
        previous = _sinks(more)
    return Workflow(steps, undos, name=name, id=id)


def chord(
    header: Piece,
    body: Piece,
    *,
    compensations: Mapping[str, Compensation] | None = None,
    name: str = "chord",
    id: str | None = None,
) -> Workflow:
    """Run ``header`` (usually a :func:`group`), then ``body`` with all of its
    results (Celery's ``chord``); it is ``chain(header, body)``."""
    return chain(header, body, compensations=compensations, name=name, id=id)


# Reprs, tracebacks and pickles name guild.X (see guild._exports).
publish(globals())
