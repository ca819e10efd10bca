"""What crosses the storage boundary: payloads and results as JSON text, stored rows as jobs.

One bad value stays one bad job. Encoding names the place JSON cannot encode
(``result[2]['at'] is a datetime``) in a typed error, so an enqueue fails before
anything is stored and a handler's attempt fails in its own task, never the
acker's. Decoding never raises for data: a payload that is not JSON becomes
:class:`~guild.UndecodablePayload` (the worker dead-letters it), and a stored row
that cannot become a valid :class:`~guild.Job` becomes a :class:`BadRow` naming
each wrong field (the broker dead-letters it at claim time).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from json.encoder import encode_basestring as _encode_str
from typing import Any, Final, NewType

import attrs

from ._errors import InvalidQueueName, PayloadDecodeError, PayloadEncodeError, ResultEncodeError
from ._job import (
    Job,
    JSONValue,
    Priority,
    UndecodablePayload,
    _queue_name_problem,
    check_stored_queue_name,
)

ResultJSON = NewType("ResultJSON", str)
"""A handler's result, already encoded by :func:`encode_result`: what ``Broker.ack`` stores."""

_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
# json.loads' own decoder (it takes no options here).
_decode_json = json.JSONDecoder().decode
# The first bytes json.detect_encoding reads as other than UTF-8: a zero byte
# (UTF-16/32 text) and the first bytes of the BOMs (UTF-8, UTF-16, UTF-32).
_NOT_UTF8_START: Final = frozenset((0x00, 0xEF, 0xFE, 0xFF))
# Deeper than this is reported as too deep when the encoder ran out of stack;
# well under the recursion limit, so locating the fault never overflows itself.
_MAX_DEPTH: Final = 200
_SHOWN_SEGMENTS: Final = 8


MAX_VALUE_CHARS: Final = 16 * 1024 * 1024
"""The longest payload or result, in characters of its JSON text (16 Mi). A job
carries a reference (a path, a URL, a key) to anything bigger: one value stored
whole in every row, stream entry and ack batch that holds it would otherwise push
a broker past its own limits (Redis refuses a bulk string over 512 MB) and fail
every job beside it."""


MAX_TEXT_CHARS: Final = 64 * 1024
"""The longest error message, ``Reject`` reason or traceback a job's record keeps
(64 Ki characters): the middle of a longer one is cut out."""


def storable(text: str) -> str:
    """``text`` as every broker can store it: a lone surrogate (from a handler's
    message, a file name) becomes its ``\\udcxx`` escape instead of failing the
    write of the dead letter or the progress, and with it the worker. Past
    :data:`MAX_TEXT_CHARS` its middle is cut out: an exception whose message is
    megabytes long is stored (with every retry) as its head and its tail."""
    if len(text) > MAX_TEXT_CHARS:
        half = MAX_TEXT_CHARS // 2
        cut = len(text) - 2 * half
        text = f"{text[:half]} [... {cut:,} characters cut ...] {text[-half:]}"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _too_long(text: str) -> str | None:
    if len(text) <= MAX_VALUE_CHARS:
        return None
    return (
        f"is {len(text):,} characters of JSON, over the limit of {MAX_VALUE_CHARS:,}"
        " (pass a reference to large data instead)"
    )


def _encoded(
    value: JSONValue, root: str, error: type[PayloadEncodeError | ResultEncodeError]
) -> str:
    text = _scalar_text(value)
    if text is None:
        problem = _encode_or_problem(value, root)
        if isinstance(problem, _Problem):
            raise error(problem.path, problem.text)
        text = problem
    too_long = _too_long(text)
    if too_long is not None:
        raise error(root, too_long)
    return text


def encode_payload(payload: JSONValue) -> str:
    """A job payload as compact JSON text, ready to store.

    Raises:
        PayloadEncodeError: JSON cannot encode it; names the place
            (``payload['when'] is a datetime, which JSON cannot encode``); or its
            text is longer than :data:`MAX_VALUE_CHARS`.
    """
    return _encoded(payload, "payload", PayloadEncodeError)


def encode_payloads(jobs: Sequence[Job]) -> list[str]:
    """Each job's payload as :func:`encode_payload` gives it, in order.

    Raises:
        PayloadEncodeError: a payload cannot be stored; when ``jobs`` holds several,
            it names that payload's index (``payloads[437]['when'] is a datetime``).
    """
    if len(jobs) == 1:
        return [_encoded(jobs[0].payload, "payload", PayloadEncodeError)]
    texts: list[str] = []
    for job in jobs:
        try:
            texts.append(_encoded(job.payload, "payload", PayloadEncodeError))
        except PayloadEncodeError as error:
            index = len(texts)
            path = f"payloads[{index}]" + error.path.removeprefix("payload")
            raise PayloadEncodeError(path, error.problem, index) from None
    return texts


def encode_result(value: JSONValue) -> ResultJSON:
    """A handler's result as compact JSON text, for ``Broker.ack``.

    Raises:
        ResultEncodeError: JSON cannot encode it; names the place
            (``result[2]['at'] is a datetime, which JSON cannot encode``); or its
            text is longer than :data:`MAX_VALUE_CHARS`.
    """
    return ResultJSON(_encoded(value, "result", ResultEncodeError))


_NULL: Final = ResultJSON("null")
_TRUE: Final = ResultJSON("true")
_FALSE: Final = ResultJSON("false")
# Ints this small are far from the interpreter's digit limit for int -> str.
_INT_FAST: Final = 10**18


def _scalar_text(value: JSONValue) -> str | None:
    """``value``'s JSON text if it is None or one plain scalar, else ``None``.

    Most payloads and results are: those skip the encoder's per-call set-up,
    which costs several times the encoding itself (on the enqueue and worker hot
    paths). Each gives json.dumps' exact text; anything else (and an int too
    long, a str not ASCII, a float not finite) takes the full path, which checks it.
    """
    if value is None:
        return _NULL
    if type(value) is int:
        if -_INT_FAST < value < _INT_FAST:
            return int.__repr__(value)
    elif type(value) is str:
        if value.isascii():
            return _encode_str(value)
    elif type(value) is bool:
        return _TRUE if value else _FALSE
    elif type(value) is float and math.isfinite(value):
        return float.__repr__(value)
    return None


def decode_payload(job_id: str, raw: bytes | str) -> JSONValue:
    """Decode a stored payload; an undecodable one becomes :class:`UndecodablePayload`.

    Undecodable covers text that is not JSON, bytes that are not UTF-8, and JSON
    nested deeper than the parser's stack (``RecursionError``).
    """
    try:
        if type(raw) is bytes and 0 < len(raw) < 19 and raw.isdigit() and raw[0] != 0x30:
            # A plain non-negative int (ASCII digits, no leading zero: JSON's
            # grammar), as JSON reads it; the decoder's set-up costs several
            # times the parse.
            return int(raw)
        if type(raw) is bytes and raw and raw[0] not in _NOT_UTF8_START and raw[1:2] != b"\0":
            # What json.loads does with these bytes (its detect_encoding says
            # UTF-8: no BOM, no UTF-16/32 zero byte), without its type checks and
            # encoding sniff, a fifth of a small payload's decode.
            return _decode_json(raw.decode("utf-8", "surrogatepass"))
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
        reason = "nested too deeply to decode" if isinstance(exc, RecursionError) else str(exc)
        return UndecodablePayload(
            raw=data[:200], reason=str(PayloadDecodeError(job_id, raw, reason))
        )


# --- finding what JSON cannot encode ---------------------------------------------


@attrs.frozen(slots=True)
class _Problem:
    path: str
    text: str


def _encode_or_problem(value: JSONValue, root: str) -> str | _Problem:
    try:
        text = _encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        found = locate_unencodable(value, root, deep=isinstance(exc, RecursionError))
        return found if found is not None else _Problem(root, f"cannot be encoded as JSON: {exc}")
    # Storage is UTF-8: a lone surrogate (a str made from undecodable bytes by
    # surrogateescape, say) encodes to JSON text that neither SQLite nor Redis takes.
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            found = locate_unencodable(value, root, deep=False)
            if found is not None:
                return found
            return _Problem(root, "holds a lone surrogate, which UTF-8 cannot encode")
    return text


def locate_unencodable(value: JSONValue, root: str, *, deep: bool) -> _Problem | None:
    """The first place in ``value`` that compact, strict JSON in UTF-8 cannot encode.

    Walks like ``json.dumps`` does (dicts in order, keys before their values) but
    without recursion, so a value nested past the stack is found too. ``deep``:
    the encoder ran out of stack, so report nesting beyond ``_MAX_DEPTH`` levels.
    """
    path: list[str] = []
    problem = _leaf_problem(value)
    if problem is not None:
        return _Problem(root, problem)
    if not isinstance(value, (list, tuple, dict)):
        return None
    on_path = {id(value)}
    stack: list[tuple[int, Iterator[tuple[str, Any, str | None]]]] = [(id(value), _children(value))]
    while stack:
        container, children = stack[-1]
        step = next(children, None)
        if step is None:
            stack.pop()
            on_path.discard(container)
            if path:
                path.pop()
            continue
        segment, child, key_problem = step
        if key_problem is not None:
            return _Problem(_format(root, path), key_problem)
        problem = _leaf_problem(child)
        if problem is not None:
            return _Problem(_format(root, [*path, segment]), problem)
        if isinstance(child, (list, tuple, dict)):
            if id(child) in on_path:
                return _Problem(_format(root, [*path, segment]), "contains itself (a cycle)")
            if deep and len(stack) >= _MAX_DEPTH:
                return _Problem(root, f"is nested more than {_MAX_DEPTH} levels deep")
            path.append(segment)
            on_path.add(id(child))
            stack.append((id(child), _children(child)))
    return None


def _children(
    value: list[Any] | tuple[Any, ...] | dict[Any, Any],
) -> Iterator[tuple[str, Any, str | None]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield f"[{_short(key)}]", item, _key_problem(key)
    else:
        for index, item in enumerate(value):
            yield f"[{index}]", item, None


def _key_problem(key: object) -> str | None:
    if isinstance(key, float) and not math.isfinite(key):
        return f"has the key {key!r}; JSON has no NaN or Infinity"
    if key is None or isinstance(key, (str, int, float)):
        problem = _leaf_problem(key)
        return None if problem is None else f"has a key that {problem}"
    return (
        f"has the key {_short(key)} of type {type(key).__name__};"
        " JSON object keys must be str, int, float, bool or None"
    )


def _leaf_problem(value: object) -> str | None:
    if value is None or isinstance(value, (bool, list, tuple, dict)):
        return None
    if isinstance(value, str):
        if value.isascii():
            return None
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return (
                f"holds the lone surrogate {value[exc.start]!r} at index {exc.start},"
                " which UTF-8 cannot encode"
            )
        return None
    if isinstance(value, int):
        try:
            int.__repr__(value)
        except ValueError:
            return "is an integer with too many digits to write out (sys.get_int_max_str_digits())"
        return None
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        return f"is float({str(value)!r}); JSON has no NaN or Infinity"
    name = type(value).__name__
    article = "" if isinstance(value, (bytes, bytearray)) else "an " if name[0] in "aeiou" else "a "
    return f"is {article}{name}, which JSON cannot encode"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _format(root: str, path: list[str]) -> str:
    if len(path) <= _SHOWN_SEGMENTS:
        return root + "".join(path)
    return root + "".join(path[:4]) + "..." + "".join(path[-3:])


# --- stored rows -> jobs -----------------------------------------------------------

ROW_FIELDS: Final = (
    "id",
    "queue",
    "payload",
    "attempt",
    "max_attempts",
    "enqueued_at",
    "not_before",
    "timeout",
    "key",
    "trace_id",
)
"""The order of a stored job's fields in a row given to :func:`job_from_row`."""

StoredValue = str | bytes | int | float | None
"""A stored field as a backend returns it: text, raw bytes, a number, or missing."""


@attrs.frozen(kw_only=True, slots=True)
class BadRow:
    """A stored entry that cannot become a valid :class:`~guild.Job`.

    Attributes:
        job: what could be read of it (defaults in place of the wrong fields),
            for its dead letter.
        reason: every wrong field and what was wrong with it.
    """

    job: Job
    reason: str


class _Wrong(Exception):
    """One field's value is wrong; the message says how."""


def job_from_row(row: Sequence[StoredValue], *, queue: str) -> Job | BadRow:
    """The job a stored row holds, or a :class:`BadRow` saying which fields are wrong.

    ``row`` holds the fields in :data:`ROW_FIELDS` order, each as the backend
    returned it (SQLite's typed values, Redis's bytes; ``None`` or empty text for
    a field that holds nothing). ``queue`` is where the row was found, used for
    the dead letter if its own ``queue`` field is wrong. Pure: never raises for
    data, only returns.
    """
    if len(row) == len(ROW_FIELDS):
        job = _fast(row)
        if job is not None:
            return job
    return _checked(row, queue)


_FLOAT_SOURCES: Final = (int, str, bytes)


def _fast(row: Sequence[StoredValue]) -> Job | None:
    """The job a well-formed row holds; ``None`` when anything is off (then
    :func:`_checked` says what). Straight-line, as this runs for every job claimed;
    it accepts exactly what ``_checked`` accepts (a property test holds it to that)."""
    job_id, queue, raw, attempt, max_attempts, enqueued_at, not_before, timeout, key, trace = row
    try:
        if type(job_id) is bytes:
            job_id = job_id.decode()
        if type(queue) is bytes:
            queue = queue.decode()
        if type(attempt) is bytes:
            attempt = int(attempt)
        if max_attempts == b"" or max_attempts == "":
            max_attempts = None
        elif type(max_attempts) is bytes:
            max_attempts = int(max_attempts)
        if type(enqueued_at) is not float:
            if type(enqueued_at) not in _FLOAT_SOURCES:
                return None
            enqueued_at = float(enqueued_at)  # type: ignore[arg-type]
        if not_before == b"" or not_before == "":
            not_before = None
        elif not_before is not None and type(not_before) is not float:
            if type(not_before) not in _FLOAT_SOURCES:
                return None
            not_before = float(not_before)
        if timeout == b"" or timeout == "":
            timeout = None
        elif timeout is not None and type(timeout) is not float:
            if type(timeout) not in _FLOAT_SOURCES:
                return None
            timeout = float(timeout)
        if type(key) is bytes:
            key = key.decode()
        if type(trace) is bytes:
            trace = trace.decode()
    except (ValueError, TypeError, UnicodeDecodeError):
        return None
    if not (
        type(job_id) is str
        and job_id
        and type(queue) is str
        and _queue_name_problem(queue) is None
        and type(attempt) is int
        and attempt >= 0
        and (max_attempts is None or (type(max_attempts) is int and max_attempts >= 1))
        and math.isfinite(enqueued_at)
        and (not_before is None or math.isfinite(not_before))
        and (timeout is None or (0 < timeout < math.inf))
        and (key is None or type(key) is str)
        and (trace is None or type(trace) is str)
        and (type(raw) is str or type(raw) is bytes)
    ):
        return None
    return _make_job(  # type: ignore[no-any-return]
        job_id,
        queue,
        decode_payload(job_id, raw),
        attempt,
        max_attempts,
        enqueued_at,
        not_before,
        timeout,
        key or None,
        trace or job_id,
    )


def _checked(row: Sequence[StoredValue], queue: str) -> Job | BadRow:
    wrong: list[str] = []
    values: dict[str, Any] = {}
    for name, value, convert in zip(ROW_FIELDS, row, _CONVERTERS, strict=False):
        if name == "payload":
            continue
        try:
            values[name] = convert(value)
        except _Wrong as exc:
            wrong.append(f"field {name!r} {exc}")
    if len(row) != len(ROW_FIELDS):
        wrong.append(f"the row has {len(row)} fields, not {len(ROW_FIELDS)}")
    job_id = values.get("id") or _salvage_id(row[0] if row else None)
    raw_payload = row[2] if len(row) > 2 else None
    if isinstance(raw_payload, (str, bytes)):
        payload = decode_payload(job_id, raw_payload)
    else:
        payload = None
        wrong.append(
            "field 'payload' "
            + ("is missing" if raw_payload is None else _got("JSON text", raw_payload))
        )
    if not wrong:
        values["payload"] = payload
        values["trace_id"] = values["trace_id"] or job_id
        return _make_job(**values)  # type: ignore[no-any-return]
    fields = {name: values[name] for name in ROW_FIELDS[3:9] if name in values}
    if _queue_name_problem(queue) is not None:
        # ``queue`` is the reader's guess (a dead letter's own damaged field, say).
        queue = _UNKNOWN_QUEUE
    # Built without Job's checks, which a name or key stored before their limits
    # would fail: each field here passed its stored-value check above.
    job = _make_job(
        id=job_id,
        queue=values.get("queue") or queue,
        payload=payload,
        attempt=fields.get("attempt", 0),
        max_attempts=fields.get("max_attempts"),
        enqueued_at=fields.get("enqueued_at") or 0.0,
        not_before=fields.get("not_before"),
        timeout=fields.get("timeout"),
        key=fields.get("key"),
        trace_id=values.get("trace_id") or job_id,
    )
    return BadRow(job=job, reason="bad stored job: " + "; ".join(wrong))


_UNKNOWN_QUEUE: Final = "?"


def _salvage_id(value: StoredValue) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "backslashreplace")
    return str(value) if value else "<no id>"


def _got(expected: str, value: StoredValue) -> str:
    if value is None or value == "" or value == b"":
        return "is missing"
    return f"must be {expected}, got {_short(value)}"


def _text(value: StoredValue) -> str:
    if type(value) is str:
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Wrong(f"is not UTF-8 text (byte {exc.start}): {_short(value[:60])}") from None
    if isinstance(value, str):
        return str(value)
    raise _Wrong(_got("text", value))


def _required_text(value: StoredValue) -> str:
    text = _text(value) if value is not None else ""
    if not text:
        raise _Wrong("is missing")
    return text


def _queue_field(value: StoredValue) -> str:
    text = _required_text(value)
    try:
        # A stored name may predate the length limit: it is read as it was written.
        return check_stored_queue_name(text)
    except InvalidQueueName as exc:
        raise _Wrong(f"is not a valid queue name: {exc.reason}") from None


def _optional_text(value: StoredValue) -> str | None:
    if value is None:
        return None
    return _text(value) or None


def _number(value: StoredValue) -> float | None:
    """A stored number; ``None`` for nothing stored."""
    if type(value) is float:
        number = value
    elif type(value) is int:
        number = float(value)
    elif value is None or value == "" or value == b"":
        return None
    elif isinstance(value, (str, bytes)):
        try:
            number = float(value)
        except ValueError:
            raise _Wrong(_got("a number", value)) from None
    else:
        raise _Wrong(_got("a number", value))
    if not math.isfinite(number):
        raise _Wrong(_got("a finite number", value))
    return number


def lenient_seconds(value: object) -> float | None:
    """A stored time as shown (job info, a dead letter): ``None`` where it is
    missing or a hand edit spoiled it (``'soon'``, bytes that are no number, a
    non-finite number), rather than text or an infinity handed on for a reader
    (a date formatter, a sort) to trip over. Unlike a claimed row's fields, a
    shown time is never a reason to dead-letter the job."""
    if type(value) is float:
        number = value
    elif isinstance(value, (str, bytes, int, float)):
        try:
            number = float(value)
        except (ValueError, OverflowError):  # an int past a float's range
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def is_positive_seconds(value: object) -> bool:
    """A setting's duration: a real number (not a bool), finite and above 0."""
    return (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and math.isfinite(value)
        and value > 0
    )


def _whole(value: StoredValue) -> int | None:
    """A stored whole number; ``None`` for nothing stored."""
    if type(value) is int:
        return value
    if value is None or value == "" or value == b"":
        return None
    if isinstance(value, (str, bytes)):
        try:
            return int(value)
        except ValueError:
            pass
    raise _Wrong(_got("a whole number", value))


def _attempt(value: StoredValue) -> int:
    number = _whole(value)
    if number is None:
        raise _Wrong("is missing")
    if number < 0:
        raise _Wrong(_got("a whole number >= 0", value))
    return number


def _max_attempts(value: StoredValue) -> int | None:
    number = _whole(value)
    if number is not None and number < 1:
        raise _Wrong(_got("a whole number >= 1", value))
    return number


def _enqueued_at(value: StoredValue) -> float:
    number = _number(value)
    if number is None:
        raise _Wrong("is missing")
    return number


def _timeout(value: StoredValue) -> float | None:
    number = _number(value)
    if number is not None and number <= 0:
        raise _Wrong(_got("a positive number of seconds", value))
    return number


def _payload_placeholder(value: StoredValue) -> None:
    return None


_CONVERTERS: Final = (
    _required_text,  # id
    _queue_field,  # queue
    _payload_placeholder,  # payload: decoded on its own, into UndecodablePayload
    _attempt,
    _max_attempts,
    _enqueued_at,
    _number,  # not_before
    _timeout,
    _optional_text,  # key
    _optional_text,  # trace_id
)

_JOB_FIELD_NAMES = tuple(field.name for field in attrs.fields(Job))
# Every field of a valid row has been checked above: build the job without
# re-running the validators, straight-line (this runs for every job claimed).
# ``priority`` is no row field: a broker stores it beside the row (it orders
# claims), and sets it on the jobs whose priority is not the default.
# Positional in ROW_FIELDS order (a claim's call skips keyword matching), each
# field set through its slot's own descriptor, bound once as a default: a C call
# that skips ``object.__setattr__``'s attribute lookup.
_MAKE_SOURCE = (
    f"def _make({', '.join(ROW_FIELDS)}, priority=NORMAL, new=object.__new__"
    + "".join(f", set_{name}=Job.__dict__[{name!r}].__set__" for name in _JOB_FIELD_NAMES)
    + "):\n    job = new(Job)\n"
    + "".join(f"    set_{name}(job, {name})\n" for name in _JOB_FIELD_NAMES)
    + "    return job\n"
)
assert set(_JOB_FIELD_NAMES) == {*ROW_FIELDS, "priority"}, "a stored row holds every field of a Job"
_namespace: dict[str, Any] = {"Job": Job, "NORMAL": Priority.NORMAL}
exec(_MAKE_SOURCE, _namespace)
_make_job = _namespace["_make"]
