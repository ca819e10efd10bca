"""The storage boundary's pure functions: a stored row becomes a valid Job or a
BadRow naming each wrong field; a value JSON cannot encode is named by its place."""

from __future__ import annotations

import datetime
import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import guild
from guild._codec import (
    ROW_FIELDS,
    BadRow,
    _checked,
    _fast,
    decode_payload,
    encode_payload,
    encode_result,
    job_from_row,
    lenient_seconds,
)
from guild.testing._strategies import jobs, payloads

# What a backend may hand back for one stored field: text, bytes, numbers, nothing.
stored_values = (
    st.none()
    | st.text(max_size=12)
    | st.binary(max_size=12)
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.booleans()
)
# Pieces of JSON text and of what json.loads sniffs encodings by (BOMs, zero bytes).
_JSONISH = [b"0", b"1", b"7", b"-", b"+", b"_", b".", b"e", b" ", b'"', b"[", b"]", b"{", b"}"]
_JSONISH += [b":", b",", b"\x00", b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\xc3\xa9", b"NaN"]


def as_text_row(job: guild.Job, *, as_bytes: bool) -> list[Any]:
    """A job stored as Redis stores it: every field text, '' for nothing."""
    values = [
        job.id,
        job.queue,
        json.dumps(job.payload),
        str(job.attempt),
        "" if job.max_attempts is None else str(job.max_attempts),
        repr(job.enqueued_at),
        "" if job.not_before is None else repr(job.not_before),
        "" if job.timeout is None else repr(job.timeout),
        job.key or "",
        job.trace_id,
    ]
    return [v.encode() for v in values] if as_bytes else values


# Values each field must refuse, with the field's name: the row is valid but for one.
bad_values: dict[str, st.SearchStrategy[Any]] = {
    "id": st.sampled_from([None, "", b"", b"\xff\xfe"]),
    "queue": st.sampled_from([None, "", " padded", "new\nline", b"\xc3(", 7]),
    "attempt": st.sampled_from([None, "", "x", "2.5", 2.5, -1, "-3", b"\xff"])
    | st.floats(allow_nan=True).filter(lambda f: not f.is_integer() or math.isinf(f)),
    "max_attempts": st.sampled_from(["many", "1.5", 0, -2, "0", b"zero", 1.5]),
    "enqueued_at": st.sampled_from([None, "", "yesterday", "nan", "inf", b"-inf", b"\xff"]),
    "not_before": st.sampled_from(["soon", "nan", float("inf"), b"later"]),
    "timeout": st.sampled_from(["soon", "0", "-1", -0.5, 0, "nan", float("inf")]),
    "key": st.sampled_from([b"\xff\xfe", b"ok\x80", 12]),
    "trace_id": st.sampled_from([b"\xfe", 3.5]),
}


class TestRows:
    @given(st.lists(stored_values, min_size=0, max_size=12), st.booleans())
    def test_never_raises_for_any_row(self, row: list[Any], bytes_payload: bool) -> None:
        found = job_from_row(row, queue="q")
        assert isinstance(found, guild.Job | BadRow)
        if isinstance(found, BadRow):
            assert found.reason.startswith("bad stored job: ")
            assert "field '" in found.reason or "the row has" in found.reason
            assert found.job.id and found.job.queue

    @given(st.data())
    def test_the_fast_path_agrees_with_the_checked_one(self, data: st.DataObject) -> None:
        # Rows near valid ones: a well-formed row with a few fields replaced by anything.
        job = data.draw(jobs(queue="q"))
        row = as_text_row(job, as_bytes=data.draw(st.booleans()))
        typed = data.draw(st.booleans())
        if typed:  # as SQLite returns them: numbers as numbers, nothing as None
            row = [
                job.id,
                "q",
                row[2],
                job.attempt,
                job.max_attempts,
                1.5,
                None,
                job.timeout,
                job.key,
                job.trace_id,
            ]
        for index in data.draw(st.lists(st.integers(0, 9), max_size=3)):
            row[index] = data.draw(stored_values)
        fast = _fast(row)
        checked = _checked(row, "q")
        if fast is not None:
            assert fast == checked
        assert job_from_row(row, queue="q") == checked

    @given(jobs(), st.booleans())
    def test_a_stored_job_reads_back_equal(self, job: guild.Job, as_bytes: bool) -> None:
        stored = guild.Job(
            queue=job.queue,
            payload=job.payload,
            id=job.id,
            attempt=3,
            max_attempts=job.max_attempts,
            enqueued_at=1_700_000_000.25,
            not_before=1_700_000_100.5,
            timeout=job.timeout,
            key=job.key or None,
            trace_id=job.trace_id,
        )
        assert job_from_row(as_text_row(stored, as_bytes=as_bytes), queue="q") == stored

    @given(jobs(queue="q"), st.sampled_from(sorted(bad_values)), st.data())
    def test_one_bad_field_is_named(self, job: guild.Job, field: str, data: st.DataObject) -> None:
        row = as_text_row(job, as_bytes=data.draw(st.booleans()))
        row[ROW_FIELDS.index(field)] = data.draw(bad_values[field])
        found = job_from_row(row, queue="q")
        assert isinstance(found, BadRow)
        named = [name for name in ROW_FIELDS if f"field {name!r}" in found.reason]
        assert named == [field], found.reason
        # What could be read is kept for the dead letter.
        assert found.job.payload == job.payload
        if field != "id":
            assert found.job.id == job.id

    def test_a_missing_payload_is_a_bad_row(self) -> None:
        row = ["j1", "q", None, "0", "3", "1.0", "", "", "", "j1"]
        found = job_from_row(row, queue="q")
        assert isinstance(found, BadRow)
        assert found.reason == "bad stored job: field 'payload' is missing"

    @pytest.mark.parametrize(
        ("raw", "reason"),
        [
            (b"\xff\xfe{}", "not valid JSON"),
            ("[" * 100_000 + "]" * 100_000, "nested too deeply to decode"),
            ('{"a": ' * 50_000, "nested too deeply to decode"),
            ("{'single': 'quotes'}", "not valid JSON"),
        ],
    )
    def test_an_undecodable_payload_is_a_job_for_the_worker(
        self, raw: str | bytes, reason: str
    ) -> None:
        row = ["j1", "q", raw, "0", "3", "1.0", "", "", "", "j1"]
        found = job_from_row(row, queue="q")
        assert isinstance(found, guild.Job)
        assert isinstance(found.payload, guild.UndecodablePayload)
        assert reason in found.payload.reason
        assert isinstance(decode_payload("j1", raw), guild.UndecodablePayload)

    @pytest.mark.parametrize(
        ("raw", "value"),
        [
            (b"7", 7),
            (b"0", 0),
            (b"123456789012345678", 123456789012345678),
            (b"1234567890123456789", 1234567890123456789),
            (b" 5\n", 5),
            (b"-3", -3),
            (b"\xef\xbb\xbf5", 5),  # a UTF-8 BOM: json reads such bytes as utf-8-sig
            ("[1]".encode("utf-16"), [1]),
            ("[1]".encode("utf-16-le"), [1]),
            ("[12]".encode("utf-32-be"), [12]),
            (b"5\x00", 5),  # two bytes, the second zero: json reads UTF-16-LE
            (b"\x005", 5),
            (b'"\xc3\xa9"', "é"),
            (b'{"a":[1,2.5]}', {"a": [1, 2.5]}),
        ],
    )
    def test_stored_bytes_decode_as_json_reads_them(self, raw: bytes, value: Any) -> None:
        decoded = decode_payload("j1", raw)
        assert decoded == value
        assert type(decoded) is type(value)

    @pytest.mark.parametrize("raw", [b"007", b"1_0", b"+1", b"", b"\xc3", b"5\x00\x00"])
    def test_bytes_json_refuses_stay_undecodable(self, raw: bytes) -> None:
        assert isinstance(decode_payload("j1", raw), guild.UndecodablePayload)

    @given(st.binary(max_size=8) | st.lists(st.sampled_from(_JSONISH), max_size=8).map(b"".join))
    def test_bytes_decode_agrees_with_json_loads(self, raw: bytes) -> None:
        try:
            expected: Any = json.loads(raw)
        except ValueError:
            assert isinstance(decode_payload("j1", raw), guild.UndecodablePayload)
        else:
            decoded = decode_payload("j1", raw)
            assert decoded == expected or (decoded != decoded and expected != expected)
            assert type(decoded) is type(expected)


unencodable = st.sampled_from(
    [
        (datetime.datetime(2026, 1, 1), "is a datetime, which JSON cannot encode"),
        (b"bytes", "is bytes, which JSON cannot encode"),
        (frozenset({1}), "is a frozenset, which JSON cannot encode"),
        (float("nan"), "is float('nan'); JSON has no NaN or Infinity"),
        (float("-inf"), "is float('-inf'); JSON has no NaN or Infinity"),
        ("a\udc80b", "holds the lone surrogate '\\udc80' at index 1, which UTF-8 cannot encode"),
        (object(), "is an object, which JSON cannot encode"),
    ]
)


# Short keys whose repr is short too: a path shows a key as its repr (cut past 40 characters).
keys = st.text(alphabet="abcxyz019 '\"é", max_size=6)


@st.composite
def value_with_bad_leaf(draw: st.DrawFn) -> tuple[Any, str, str]:
    """A JSON value with one unencodable leaf, the leaf's path (built here, as the
    value is built) and what is wrong with it."""
    leaf, problem = draw(unencodable)
    path = ""
    value: Any = leaf
    for _ in range(draw(st.integers(0, 5))):
        if draw(st.booleans()):
            before = draw(st.lists(payloads(max_leaves=2), max_size=3))
            value = [*before, value]
            path = f"[{len(before)}]" + path
        else:
            key = draw(keys)
            others = draw(st.dictionaries(keys, payloads(max_leaves=2), max_size=3))
            others.pop(key, None)
            value = {**others, key: value}
            path = f"[{key!r}]" + path
    return value, path, problem


class TestEncoding:
    def test_values_longer_than_16_mi_characters_are_refused(self) -> None:
        at_limit = "x" * (16 * 1024 * 1024 - 2)  # with its quotes, exactly the limit
        assert len(encode_payload(at_limit)) == len(encode_result(at_limit)) == 16_777_216
        over = {"rows": ["é" * 1024] * (16 * 1024)}  # 16,826,378 characters
        with pytest.raises(guild.PayloadEncodeError) as payload_error:
            encode_payload(over)
        assert str(payload_error.value) == (
            "payload is 16,826,378 characters of JSON, over the limit of 16,777,216"
            " (pass a reference to large data instead)"
        )
        with pytest.raises(guild.ResultEncodeError) as result_error:
            encode_result(at_limit + "x")
        assert str(result_error.value).startswith(
            "result is 16,777,217 characters of JSON, over the limit of 16,777,216"
        )

    @given(payloads())
    def test_json_values_round_trip(self, value: Any) -> None:
        assert json.loads(encode_result(value)) == value
        assert json.loads(encode_payload(value)) == value

    @given(
        st.none()
        | st.booleans()
        | st.integers()
        | st.integers(min_value=-(2**70), max_value=2**70)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text()
    )
    def test_a_scalar_is_the_text_json_dumps_gives(self, value: Any) -> None:
        # Scalars take a shortcut past the encoder: it must give the same text.
        expected = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        assert encode_result(value) == expected
        assert encode_payload(value) == expected

    @pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
    def test_a_float_json_cannot_hold_is_refused(self, value: float) -> None:
        with pytest.raises(guild.ResultEncodeError) as caught:
            encode_result(value)
        assert caught.value.path == "result"
        with pytest.raises(guild.PayloadEncodeError):
            encode_payload(value)

    def test_a_lone_surrogate_is_refused_as_a_payload(self) -> None:
        with pytest.raises(guild.PayloadEncodeError):
            encode_payload("bad \udcff")

    @given(value_with_bad_leaf())
    def test_the_bad_leaf_is_named(self, case: tuple[Any, str, str]) -> None:
        value, path, problem = case
        with pytest.raises(guild.ResultEncodeError) as result:
            encode_result(value)
        assert (result.value.path, result.value.problem) == ("result" + path, problem)
        with pytest.raises(guild.PayloadEncodeError) as payload:
            encode_payload(value)
        assert str(payload.value) == f"payload{path} {problem}"

    def test_a_cycle_is_named(self) -> None:
        loop: list[Any] = [1]
        loop.append({"back": loop})
        with pytest.raises(guild.ResultEncodeError, match=r"^result\[1\]\['back'\] contains"):
            encode_result(loop)

    def test_a_bad_key_is_named(self) -> None:
        with pytest.raises(guild.ResultEncodeError) as caught:
            encode_result({"ok": {(1, 2): "tuple key"}})
        assert caught.value.path == "result['ok']"
        assert caught.value.problem.startswith("has the key (1, 2) of type tuple")

    def test_nesting_past_the_stack_is_named_not_raised(self) -> None:
        deep: list[Any] = []
        for _ in range(100_000):
            deep = [deep]
        with pytest.raises(guild.ResultEncodeError) as caught:
            encode_result(deep)
        assert caught.value.problem == "is nested more than 200 levels deep"

    def test_the_errors_are_typed(self) -> None:
        assert issubclass(guild.ResultEncodeError, guild.JobError)
        assert issubclass(guild.PayloadEncodeError, guild.JobError)
        assert issubclass(guild.PayloadEncodeError, TypeError)


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        (1.5, 1.5),
        (7, 7.0),
        ("3.25", 3.25),
        (b"1700000000.5", 1700000000.5),
        (b" 2 ", 2.0),
        # Missing, or spoiled by a hand edit: shown as no time, never raised.
        (None, None),
        ("", None),
        (b"", None),
        ("soon", None),
        (b"\xff\xfe", None),
        ("inf", None),
        (b"nan", None),
        (math.inf, None),
        (10**400, None),
        ([1.0], None),
    ],
)
def test_a_shown_time_is_read_leniently(stored: object, shown: float | None) -> None:
    assert lenient_seconds(stored) == shown
