"""What a PM project is, and the checks that refuse one that cannot run.

A project is a DAG of phases with optional rollbacks, read from a mapping (a
job's payload) or a TOML file of the same shape::

    name = "release"

    [phases.build]
    command = ["python3", "build.py"]
    files = { "build.py" = "print('built')" }
    rollback = "clean"

    [phases.notes]
    prompt = "Write release notes for version 1.2"
    after = ["build"]

    [phases.tag]
    action = "tag_release"
    args = { version = "1.2" }
    after = ["build"]

    [phases.announce]
    post = { channel = "#releases" }
    after = ["notes", "tag"]

    [rollbacks.clean]
    command = ["python3", "clean.py"]

A phase has exactly one kind, named by its key: ``command`` (run by the
TaskWorker), ``prompt`` (asked by the TaskWorker), ``action`` (a Python
callable registered on the PM worker) or ``post`` (the ResultWorker posts the
results of the phases it runs after). Rollbacks are named, so phases can share
one; each is a body of the same kinds but ``post``.

Everything here is pure: parsing never touches a queue, and a project that
parses becomes a :class:`guild.Workflow` (whose own rules, such as no cycles,
are reported under the project's name and the phase's).
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Final

import attrs

import guild

KINDS: Final = ("command", "prompt", "action", "post")
"""A phase's kinds: the key that names its kind, one per phase."""

_KIND_FIELDS: Final[Mapping[str, frozenset[str]]] = {
    "command": frozenset({"command", "files"}),
    "prompt": frozenset({"prompt", "max_tokens", "system"}),
    "action": frozenset({"action", "args"}),
    "post": frozenset({"post"}),
}
_COMMON: Final = frozenset({"attempts", "timeout"})
_PHASE_ONLY: Final = frozenset({"after", "rollback"})
_TOP: Final = frozenset({"name", "phases", "rollbacks"})


class InvalidProject(guild.InvalidWorkflow):
    """A PM project that cannot run, refused before anything of it is stored.

    A :class:`guild.InvalidWorkflow`, so code that handles refused workflows
    handles refused projects too.

    Attributes:
        source: where the project came from: a file's path, or ``"payload"``.
        rule: the check that refused it. The project's own: ``file`` (cannot be
            read), ``toml`` (not TOML), ``field`` (a field has the wrong type or
            value), ``unknown-field``, ``unknown-kind`` (a phase has none of
            ``command``, ``prompt``, ``action``, ``post``), ``several-kinds``,
            ``unknown-rollback``, ``unknown-action``; or the workflow's
            (``empty``, ``cycle``, ``unknown-dependency``, ``step-name``...).
        phase: the phase it is about (``None``: the whole project). For a
            rollback's own fields, ``"rollbacks.<name>"``.
        step: the same as ``phase`` (the workflow's word).
        reason: a human sentence.
    """

    def __init__(self, source: str, rule: str, phase: str | None, reason: str) -> None:
        super().__init__(rule, phase, reason)
        where = f"phase {phase!r}: " if phase is not None else ""
        self.args = (f"invalid project {source} ({rule}): {where}{reason}",)
        self.source = source
        self.phase = phase


@attrs.frozen
class Body:
    """What one phase or rollback does.

    Attributes:
        kind: one of :data:`KINDS`.
        fields: the kind's fields, checked (``command``'s ``argv``...).
        attempts: runs allowed before it fails (default 1: a project phase is
            rarely safe to repeat unasked).
        timeout: seconds it may take, waiting for its worker included; a
            command is also given it as its own limit.
    """

    kind: str
    fields: dict[str, Any]
    attempts: int = 1
    timeout: float | None = None

    def payload(self, project: str) -> dict[str, Any]:
        """What its job carries (the workflow step's ``input``)."""
        return {"project": project, "kind": self.kind, **self.fields}


@attrs.frozen
class Phase:
    """One node of a project: a body, the phases it runs after, and its rollback."""

    name: str
    body: Body
    after: tuple[str, ...] = ()
    rollback: str | None = None


@attrs.frozen
class Project:
    """A parsed project: run it by enqueueing :meth:`to_payload` on the ``pm`` queue.

    Attributes:
        name: a label for people (the workflow's name).
        phases: the phases, in the order written.
        rollbacks: the named rollbacks phases may declare.
        source: where it came from (a file's path, or ``"payload"``).
        data: the mapping it was read from (what :meth:`to_payload` returns).
    """

    name: str
    phases: tuple[Phase, ...]
    rollbacks: dict[str, Body]
    source: str = "payload"
    data: dict[str, Any] = attrs.field(factory=dict, eq=False, repr=False)

    @classmethod
    def from_mapping(cls, data: object, *, source: str = "payload") -> Project:
        """Read and check a project.

        Raises:
            InvalidProject: the first rule broken, naming ``source``, the rule
                and the phase.
        """
        return _parse(data, source)

    @classmethod
    def from_toml(cls, path: str | Path) -> Project:
        """Read and check a project file (its ``name`` defaults to the file's stem).

        Raises:
            InvalidProject: the file cannot be read (``file``), is not TOML
                (``toml``), or breaks a rule.
        """
        where = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise InvalidProject(where, "file", None, f"cannot be read: {error}") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise InvalidProject(where, "toml", None, f"not valid TOML: {error}") from None
        except RecursionError:  # arrays nested past the parser's stack
            raise InvalidProject(where, "toml", None, "nested too deeply to read") from None
        data.setdefault("name", Path(path).stem)
        return _parse(data, where)

    def to_payload(self) -> dict[str, Any]:
        """The project as a ``pm`` job's payload."""
        return {"project": self.data}

    def actions(self) -> set[str]:
        """The names of the inline actions its phases and rollbacks call."""
        bodies = [p.body for p in self.phases] + list(self.rollbacks.values())
        return {b.fields["action"] for b in bodies if b.kind == "action"}

    def check_actions(self, known: Collection[str]) -> None:
        """Refuse a project that calls an action not registered.

        Raises:
            InvalidProject: rule ``unknown-action``, naming the phase (or rollback).
        """
        listed = sorted(known)
        for where, body in [(p.name, p.body) for p in self.phases] + [
            (f"rollbacks.{n}", b) for n, b in self.rollbacks.items()
        ]:
            if body.kind == "action" and body.fields["action"] not in known:
                raise InvalidProject(
                    self.source,
                    "unknown-action",
                    where,
                    f"action {body.fields['action']!r} is not registered (registered: {listed})",
                )

    def workflow(self, *, queue: str, id: str | None = None) -> guild.Workflow:
        """The workflow that runs it: each phase a step on ``queue``, each
        rollback a compensation on ``queue``.

        Raises:
            InvalidProject: the workflow's rules refuse it (a cycle, an unknown
                dependency, a bad phase name...), under this project's source.
        """
        steps = [
            guild.Step(
                phase.name,
                queue,
                phase.body.payload(self.name),
                after=phase.after,
                compensate=phase.rollback,
                max_attempts=phase.body.attempts,
                timeout=phase.body.timeout,
            )
            for phase in self.phases
        ]
        compensations = {
            name: guild.Compensation(
                queue, body.payload(self.name), max_attempts=body.attempts, timeout=body.timeout
            )
            for name, body in self.rollbacks.items()
        }
        try:
            return guild.Workflow(steps, compensations, name=self.name, id=id)
        except guild.InvalidWorkflow as error:
            raise InvalidProject(self.source, error.rule, error.step, error.reason) from None


# --- parsing -------------------------------------------------------------------------


def _parse(data: object, source: str) -> Project:
    def fail(rule: str, phase: str | None, reason: str) -> InvalidProject:
        return InvalidProject(source, rule, phase, reason)

    if not isinstance(data, Mapping):
        raise fail("field", None, f"a project is a table of phases, not {type(data).__name__}")
    unknown = sorted(set(data) - _TOP)
    if unknown:
        raise fail("unknown-field", None, f"unknown fields {unknown} (known: {sorted(_TOP)})")
    name = data.get("name", "project")
    if not (isinstance(name, str) and name.strip()):
        raise fail("field", None, f"name must be non-empty text, got {name!r}")
    phases_data = data.get("phases")
    if not isinstance(phases_data, Mapping) or not phases_data:
        raise fail("empty", None, "a project needs a non-empty table of phases")
    rollbacks_data = data.get("rollbacks", {})
    if not isinstance(rollbacks_data, Mapping):
        raise fail("field", None, "rollbacks must be a table of named rollbacks")
    rollbacks = {
        str(rname): _body(body, f"rollbacks.{rname}", fail, phase=False)
        for rname, body in rollbacks_data.items()
    }
    for rname, body in rollbacks.items():
        if body.kind == "post":
            raise fail("field", f"rollbacks.{rname}", "a rollback cannot post (no results to post)")
    phases: list[Phase] = []
    for pname, raw in phases_data.items():
        where = str(pname)
        body = _body(raw, where, fail, phase=True)
        after = raw.get("after", ())
        if isinstance(after, str):
            after = [after]
        if not (isinstance(after, list | tuple) and all(isinstance(a, str) for a in after)):
            raise fail(
                "field", where, f"after must be a phase name or a list of them, got {after!r}"
            )
        rollback = raw.get("rollback")
        if rollback is not None:
            if not isinstance(rollback, str):
                raise fail("field", where, f"rollback must name a rollback, got {rollback!r}")
            if rollback not in rollbacks:
                raise fail(
                    "unknown-rollback",
                    where,
                    f"rollback {rollback!r} is not in [rollbacks] (it has {sorted(rollbacks)})",
                )
        if body.kind == "post" and not after:
            raise fail("field", where, "a post phase posts the results of the phases it runs after")
        phases.append(Phase(where, body, tuple(after), rollback))
    project = Project(name, tuple(phases), rollbacks, source, dict(data))
    project.workflow(queue="pm.phases")  # the workflow's rules: cycles, dependencies, names
    return project


def _body(raw: object, where: str, fail: Any, *, phase: bool) -> Body:
    if not isinstance(raw, Mapping):
        raise fail("field", where, f"must be a table, not {type(raw).__name__}")
    kinds = [k for k in KINDS if k in raw]
    allowed = _COMMON | (_PHASE_ONLY if phase else frozenset())
    for kind in kinds:
        allowed |= _KIND_FIELDS[kind]
    unknown = sorted(set(raw) - allowed - set().union(*_KIND_FIELDS.values()))
    if not kinds:
        extra = f" (unknown: {unknown})" if unknown else ""
        raise fail("unknown-kind", where, f"has none of {', '.join(KINDS)}{extra}")
    if len(kinds) > 1:
        raise fail("several-kinds", where, f"has {' and '.join(kinds)}: a phase has one kind")
    (kind,) = kinds
    stray = sorted(set(raw) - allowed)
    if stray:
        raise fail(
            "unknown-field",
            where,
            f"unknown fields {stray} for a {kind} (known: {sorted(allowed)})",
        )
    attempts = raw.get("attempts", 1)
    if not (isinstance(attempts, int) and not isinstance(attempts, bool) and attempts >= 1):
        raise fail("field", where, f"attempts must be a whole number >= 1, got {attempts!r}")
    timeout = raw.get("timeout")
    if timeout is not None and not (
        isinstance(timeout, int | float)
        and not isinstance(timeout, bool)
        and timeout > 0
        and math.isfinite(timeout)
    ):
        raise fail("field", where, f"timeout must be a positive number of seconds, got {timeout!r}")
    fields = _KIND_CHECKS[kind](raw, where, fail)
    if kind == "command" and timeout is not None:
        fields["timeout"] = timeout
    return Body(kind, fields, attempts, None if timeout is None else float(timeout))


def _command(raw: Mapping[str, Any], where: str, fail: Any) -> dict[str, Any]:
    argv = raw["command"]
    if not (isinstance(argv, list) and argv and all(isinstance(a, str) and a for a in argv)):
        raise fail("field", where, f"command must be a non-empty list of strings, got {argv!r}")
    fields: dict[str, Any] = {"argv": list(argv)}
    files = raw.get("files")
    if files is not None:
        if not (
            isinstance(files, Mapping)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())
        ):
            raise fail("field", where, "files must map file names to text")
        fields["files"] = dict(files)
    return fields


def _prompt(raw: Mapping[str, Any], where: str, fail: Any) -> dict[str, Any]:
    prompt = raw["prompt"]
    if not (isinstance(prompt, str) and prompt.strip()):
        raise fail("field", where, "prompt must be non-empty text")
    fields: dict[str, Any] = {"prompt": prompt}
    if "max_tokens" in raw:
        tokens = raw["max_tokens"]
        if not (isinstance(tokens, int) and not isinstance(tokens, bool) and tokens > 0):
            raise fail("field", where, f"max_tokens must be a positive integer, got {tokens!r}")
        fields["max_tokens"] = tokens
    if "system" in raw:
        if not isinstance(raw["system"], str):
            raise fail("field", where, "system must be text")
        fields["system"] = raw["system"]
    return fields


def _action(raw: Mapping[str, Any], where: str, fail: Any) -> dict[str, Any]:
    action = raw["action"]
    if not (isinstance(action, str) and action.strip()):
        raise fail("field", where, f"action must name a registered action, got {action!r}")
    return {"action": action, "args": raw.get("args")}


def _post(raw: Mapping[str, Any], where: str, fail: Any) -> dict[str, Any]:
    target = raw["post"]
    if not (
        isinstance(target, Mapping)
        and len(target) == 1
        and next(iter(target)) in ("channel", "webhook")
        and isinstance(next(iter(target.values())), str)
        and next(iter(target.values()))
    ):
        raise fail(
            "field",
            where,
            f'post must be {{channel = "#name"}} or {{webhook = "name"}}, got {target!r}',
        )
    return {"post": dict(target)}


_KIND_CHECKS: Final = {"command": _command, "prompt": _prompt, "action": _action, "post": _post}
