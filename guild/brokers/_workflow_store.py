"""The workflow store: durable workflow records, kept in the broker (optional protocol).

A workflow's coordinator keeps one :class:`WorkflowRecord` per workflow: its spec
and its machine state as JSON text, and a ``version`` that every write bumps.
Writes are compare-and-set on that version (``update_workflow``), so two
coordinators driving the same workflow (one resumed after a crash it did not
have) can never both apply a transition: the loser sees ``False`` and re-reads.

The store does not interpret ``spec``, ``state`` or ``status``; it checks only
that spec and state are JSON text, on the way in and on the way out. A stored
record that no longer reads as one (edited or damaged by hand) is never
returned: ``list_workflows`` skips it and logs ``workflow_record_unreadable``
naming the field, ``get_workflow`` raises :class:`~guild.BrokerError` naming it,
``update_workflow`` leaves it alone (its version matches nothing), and
``delete_workflows`` removes it.

This module holds the record, the Protocol, the checks every implementation
shares, and the memory broker's store. The record lives here, below
``guild.workflows``, so the brokers can build records without importing the
workflow package (which imports the app, which imports the brokers).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs
import structlog
import trio

from .._errors import BrokerClosed, BrokerError
from .._exports import publish

_log = structlog.get_logger("guild.workflows.store")

FIELDS = ("id", "name", "status", "spec", "state", "version", "created_at", "updated_at")
"""A record's fields, in the order the durable brokers store and read them."""


def _unstorable(text: str) -> bool:
    # A lone surrogate cannot be written as UTF-8, which every store needs.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def json_problem(text: object) -> str | None:
    """Why ``text`` is not JSON text, or ``None`` when it is."""
    if not isinstance(text, str):
        return f"is {type(text).__name__}, not JSON text"
    if _unstorable(text):
        return "holds a lone surrogate, which UTF-8 cannot store"
    try:
        json.loads(text)
    except RecursionError:
        return "is JSON nested too deep to read"
    except ValueError as error:
        return f"is not valid JSON ({error})"
    return None


def _non_empty(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value or _unstorable(value):
        raise ValueError(
            f"WorkflowRecord.{attribute.name} must be non-empty UTF-8 text, got {value!r}"
        )


def _text(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"WorkflowRecord.{attribute.name} must be text, got {value!r}")
    if _unstorable(value):
        raise ValueError(f"WorkflowRecord.{attribute.name} must be UTF-8 text, got {value!r}")


def _json(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    problem = json_problem(value)
    if problem is not None:
        raise ValueError(f"WorkflowRecord.{attribute.name} {problem}")


def _version(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"WorkflowRecord.version must be an int >= 0, got {value!r}")


def _time(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(
            f"WorkflowRecord.{attribute.name} must be a finite number of seconds, got {value!r}"
        )


@attrs.frozen
class WorkflowRecord:
    """One workflow as the store keeps it.

    Attributes:
        id: the workflow's id (unique in the store).
        name: the workflow's name, for people.
        status: the workflow's status (``running``, ``compensating``, ``done``,
            ``failed``, ``cancelled``); ``list_workflows`` filters on it.
        spec: the workflow's spec, as JSON text.
        state: the workflow's machine state, as JSON text.
        version: bumped by every ``update_workflow``; what its compare-and-set compares.
        created_at: when it was created (broker clock); lists are oldest first.
        updated_at: when it was last written (broker clock).

    Raises:
        ValueError: a field is empty, negative or not finite, or spec/state is not
            JSON text (the message names the field).
        TypeError: ``name`` is not text.
    """

    id: str = attrs.field(validator=_non_empty)
    name: str = attrs.field(validator=_text)
    status: str = attrs.field(validator=_non_empty)
    spec: str = attrs.field(validator=_json, repr=False)
    state: str = attrs.field(validator=_json, repr=False)
    version: int = attrs.field(validator=_version)
    created_at: float = attrs.field(validator=_time)
    updated_at: float = attrs.field(validator=_time)


@runtime_checkable
class WorkflowStore(Protocol):
    """Durable workflow records with compare-and-set updates (optional broker protocol;
    the memory, SQLite and Redis brokers implement it)."""

    async def create_workflow(self, record: WorkflowRecord) -> bool:
        """Store ``record``; False, storing nothing, when a record with its id exists."""
        ...

    async def get_workflow(self, workflow_id: str) -> WorkflowRecord | None:
        """The record with this id, or ``None``.

        Raises:
            BrokerError: the stored record is unreadable (names the field).
        """
        ...

    async def list_workflows(
        self, *, statuses: Collection[str] | None = None, limit: int = 100
    ) -> list[WorkflowRecord]:
        """Up to ``limit`` records, oldest ``created_at`` first (then by id), of any
        status or of those in ``statuses``. Unreadable records are skipped (and logged)."""
        ...

    async def update_workflow(
        self, workflow_id: str, *, version: int, status: str, state: str
    ) -> bool:
        """Set ``status`` and ``state`` iff the stored version is ``version``: then the
        stored version becomes ``version + 1`` and ``updated_at`` the broker's now.
        False, changing nothing, otherwise (or when there is no such record)."""
        ...

    async def delete_workflows(self, workflow_ids: Sequence[str]) -> int:
        """Delete these records (readable or not); how many there were."""
        ...


# --- checks shared by every implementation ---------------------------------------


def check_create(record: WorkflowRecord) -> None:
    """Raises TypeError unless ``record`` is a WorkflowRecord."""
    if not isinstance(record, WorkflowRecord):
        raise TypeError(f"create_workflow takes a WorkflowRecord, got {record!r}")


def check_id(workflow_id: str) -> None:
    """Raises ValueError unless ``workflow_id`` is non-empty UTF-8 text."""
    if not isinstance(workflow_id, str) or not workflow_id or _unstorable(workflow_id):
        raise ValueError(f"a workflow id must be non-empty text, got {workflow_id!r}")


def check_update(workflow_id: str, version: int, status: str, state: str) -> None:
    """Raises ValueError naming the argument that ``update_workflow`` cannot take."""
    check_id(workflow_id)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(f"update_workflow: version must be an int >= 0, got {version!r}")
    if not isinstance(status, str) or not status or _unstorable(status):
        raise ValueError(f"update_workflow: status must be non-empty UTF-8 text, got {status!r}")
    problem = json_problem(state)
    if problem is not None:
        raise ValueError(f"update_workflow: state {problem}")


def check_list(statuses: Collection[str] | None, limit: int) -> list[str] | None:
    """The statuses to list (sorted, without repeats), or None for all.

    Raises:
        TypeError: ``statuses`` is one string (a collection of its letters) or holds
            something that is not text.
        ValueError: ``limit`` is not an int >= 0.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"list_workflows: limit must be an int >= 0, got {limit!r}")
    if statuses is None:
        return None
    if isinstance(statuses, str | bytes):
        raise TypeError(
            f"list_workflows: statuses must be a collection of statuses, got the string"
            f" {statuses!r} (write [{statuses!r}])"
        )
    for status in statuses:
        if not isinstance(status, str) or _unstorable(status):
            raise TypeError(f"list_workflows: a status must be UTF-8 text, got {status!r}")
    return sorted(set(statuses))


def check_ids(workflow_ids: Sequence[str]) -> list[str]:
    """The ids to delete, without repeats, in the order given.

    Raises:
        TypeError: ``workflow_ids`` is one string.
        ValueError: an id is not non-empty text.
    """
    if isinstance(workflow_ids, str | bytes):
        raise TypeError(
            f"delete_workflows takes a sequence of ids, got the string {workflow_ids!r}"
        )
    for workflow_id in workflow_ids:
        check_id(workflow_id)
    return list(dict.fromkeys(workflow_ids))


# --- reading stored records --------------------------------------------------------


class _Unreadable(Exception):
    pass


def _stored_text(name: str, value: object) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise _Unreadable(f"field {name!r} is not UTF-8 text") from None
    if isinstance(value, str):
        return value
    if value is None:
        raise _Unreadable(f"field {name!r} is missing")
    raise _Unreadable(f"field {name!r} is {type(value).__name__}, not text")


def _stored_int(name: str, value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = _stored_text(name, value)
    if not text.isascii() or not text.isdigit():
        raise _Unreadable(f"field {name!r} is {text[:40]!r}, not a whole number")
    return int(text)


def _stored_float(name: str, value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    else:
        text = _stored_text(name, value)
        try:
            number = float(text)
        except ValueError:
            raise _Unreadable(f"field {name!r} is {text[:40]!r}, not a number") from None
    if not math.isfinite(number):
        raise _Unreadable(f"field {name!r} is {number!r}, not a finite number")
    return number


def record_from_stored(fields: Mapping[str, object]) -> WorkflowRecord | str:
    """The record that stored ``fields`` (text, bytes or numbers, by name) hold, or
    why they hold none (a reason naming the field)."""
    try:
        return WorkflowRecord(
            id=_stored_text("id", fields.get("id")),
            name=_stored_text("name", fields.get("name")),
            status=_stored_text("status", fields.get("status")),
            spec=_stored_text("spec", fields.get("spec")),
            state=_stored_text("state", fields.get("state")),
            version=_stored_int("version", fields.get("version")),
            created_at=_stored_float("created_at", fields.get("created_at")),
            updated_at=_stored_float("updated_at", fields.get("updated_at")),
        )
    except _Unreadable as error:
        return str(error)
    except (TypeError, ValueError) as error:
        return str(error).removeprefix("WorkflowRecord.")


def shown_id(value: object) -> str:
    """A stored id for a log line or message, whatever it holds."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def readable_or_raise(workflow_id: str, found: WorkflowRecord | str) -> WorkflowRecord:
    """``found`` if it is a record; else the ``BrokerError`` for ``get_workflow``."""
    if isinstance(found, str):
        raise BrokerError(f"workflow {workflow_id!r}: the stored record is unreadable: {found}")
    return found


def readable(candidates: Sequence[tuple[object, WorkflowRecord | str]]) -> list[WorkflowRecord]:
    """The records among ``(stored id, record or reason)``; each unreadable one is logged."""
    records = []
    for stored_id, found in candidates:
        if isinstance(found, str):
            _log.error("workflow_record_unreadable", workflow_id=shown_id(stored_id), reason=found)
        else:
            records.append(found)
    return records


def sort_key(record: WorkflowRecord) -> tuple[float, str]:
    """The order lists follow: oldest first, then by id."""
    return (record.created_at, record.id)


# --- the memory broker's store -----------------------------------------------------


class MemoryWorkflows:
    """The workflow store in memory (the memory broker's; it lasts as long as the process).

    Args:
        clock: the broker's clock, for ``updated_at``.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._records: dict[str, WorkflowRecord] = {}
        self.closed = False

    def _check_open(self) -> None:
        if self.closed:
            raise BrokerClosed("the memory broker is closed")

    async def create_workflow(self, record: WorkflowRecord) -> bool:
        check_create(record)
        self._check_open()
        await trio.lowlevel.checkpoint()
        if record.id in self._records:
            return False
        self._records[record.id] = record
        return True

    async def get_workflow(self, workflow_id: str) -> WorkflowRecord | None:
        check_id(workflow_id)
        self._check_open()
        await trio.lowlevel.checkpoint()
        return self._records.get(workflow_id)

    async def list_workflows(
        self, *, statuses: Collection[str] | None = None, limit: int = 100
    ) -> list[WorkflowRecord]:
        wanted = check_list(statuses, limit)
        self._check_open()
        await trio.lowlevel.checkpoint()
        found = [r for r in self._records.values() if wanted is None or r.status in wanted]
        found.sort(key=sort_key)
        return found[:limit]

    async def update_workflow(
        self, workflow_id: str, *, version: int, status: str, state: str
    ) -> bool:
        check_update(workflow_id, version, status, state)
        self._check_open()
        await trio.lowlevel.checkpoint()
        record = self._records.get(workflow_id)
        if record is None or record.version != version:
            return False
        self._records[workflow_id] = attrs.evolve(
            record, status=status, state=state, version=version + 1, updated_at=self._clock()
        )
        return True

    async def delete_workflows(self, workflow_ids: Sequence[str]) -> int:
        ids = check_ids(workflow_ids)
        self._check_open()
        await trio.lowlevel.checkpoint()
        return sum(self._records.pop(i, None) is not None for i in ids)


# Reprs, tracebacks and pickles name guild.X (see guild._exports).
publish(globals())
