"""WorkflowRecord's checks, and reading records back from stored text (pure, no broker)."""

from __future__ import annotations

import json
import math
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from guild.brokers._workflow_store import record_from_stored
from guild.workflows import WorkflowRecord

_GOOD: dict[str, Any] = {
    "id": "wf-1",
    "name": "order",
    "status": "running",
    "spec": '{"steps":[]}',
    "state": "{}",
    "version": 3,
    "created_at": 10.5,
    "updated_at": 11.25,
}

# Text UTF-8 can hold (no lone surrogates): what a record may carry.
_text = st.text(st.characters(blacklist_categories=["Cs"]))
_json_text = st.recursive(
    st.none() | st.booleans() | st.integers() | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
).map(lambda value: json.dumps(value, ensure_ascii=False))
_seconds = st.floats(allow_nan=False, allow_infinity=False)
records = st.builds(
    WorkflowRecord,
    id=_text.filter(bool),
    name=_text,
    status=_text.filter(bool),
    spec=_json_text,
    state=_json_text,
    version=st.integers(min_value=0, max_value=2**53),
    created_at=_seconds,
    updated_at=_seconds,
)


def _as_redis_stores(record: WorkflowRecord) -> dict[str, bytes]:
    # What the Redis store writes: text as UTF-8, numbers as their repr.
    return {
        "id": record.id.encode(),
        "name": record.name.encode(),
        "status": record.status.encode(),
        "spec": record.spec.encode(),
        "state": record.state.encode(),
        "version": str(record.version).encode(),
        "created_at": repr(float(record.created_at)).encode(),
        "updated_at": repr(float(record.updated_at)).encode(),
    }


@given(records)
def test_a_record_stored_as_text_reads_back_equal(record: WorkflowRecord) -> None:
    assert record_from_stored(_as_redis_stores(record)) == record
    # As SQLite gives them back: numbers as numbers.
    assert record_from_stored(attrs.asdict(record)) == record


@pytest.mark.parametrize(
    ("change", "error", "says"),
    [
        ({"id": ""}, ValueError, "id must be non-empty UTF-8 text"),
        ({"status": ""}, ValueError, "status must be non-empty UTF-8 text"),
        ({"name": "a\udc80"}, ValueError, "name must be UTF-8 text"),
        ({"state": '"\udc80"'}, ValueError, "state holds a lone surrogate"),
        ({"name": None}, TypeError, "name must be text"),
        ({"version": -1}, ValueError, "version must be an int >= 0"),
        ({"version": True}, ValueError, "version must be an int >= 0"),
        ({"version": 1.0}, ValueError, "version must be an int >= 0"),
        ({"created_at": math.nan}, ValueError, "created_at must be a finite number"),
        ({"updated_at": "now"}, ValueError, "updated_at must be a finite number"),
        ({"state": "{oops"}, ValueError, "state is not valid JSON"),
        ({"spec": b"{}"}, ValueError, "spec is bytes, not JSON text"),
        ({"spec": "[" * 100_000}, ValueError, "spec is JSON nested too deep"),
    ],
)
def test_a_bad_record_is_refused_naming_the_field(
    change: dict[str, Any], error: type[Exception], says: str
) -> None:
    with pytest.raises(error, match=f"WorkflowRecord.{says}"):
        WorkflowRecord(**{**_GOOD, **change})


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"version": None}, "field 'version' is missing"),
        ({"version": b"1.5"}, "field 'version' is '1.5', not a whole number"),
        ({"version": b"-1"}, "field 'version' is '-1', not a whole number"),
        ({"version": "\u0663"}, "field 'version' is '\u0663', not a whole number"),
        ({"created_at": b"inf"}, "field 'created_at' is inf, not a finite number"),
        ({"created_at": b"soon"}, "field 'created_at' is 'soon', not a number"),
        ({"state": b"\xff{}"}, "field 'state' is not UTF-8 text"),
        ({"state": b"{oops"}, "state is not valid JSON"),
        ({"name": 7}, "field 'name' is int, not text"),
        ({"id": b""}, "id must be non-empty UTF-8 text"),
    ],
)
def test_stored_fields_that_are_no_record_give_the_reason(
    change: dict[str, Any], reason: str
) -> None:
    found = record_from_stored({**_GOOD, **change})
    assert isinstance(found, str)
    assert found.startswith(reason), found
