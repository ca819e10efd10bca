"""The ResultWorker's decisions, free of I/O: how a message is cut to size, and
what a Slack answer means.

Slack counts a message's ``text`` in characters; the Web API refuses more than
40,000 (``msg_too_long``) and incoming webhooks cut long text. guild counts
Python characters (code points), which is what Slack counts for text without
astral symbols and errs on the short side otherwise.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping
from typing import Literal

import attrs

SLACK_TEXT_LIMIT = 40_000
"""The Web API's hard limit on ``text``, in characters."""

TRUNCATION_MARKER = "\n… [truncated]"


def split_text(text: str, limit: int) -> list[str]:
    """Cut ``text`` into parts of at most ``limit`` characters whose concatenation is ``text``.

    Each cut is made after the last newline that fits, else after the last
    space, else at ``limit`` exactly; so lines and words stay whole when they
    can. Empty text is one empty part.

    Raises:
        ValueError: ``limit`` is less than 1.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit!r}")
    parts: list[str] = []
    rest = text
    while len(rest) > limit:
        window = rest[:limit]
        cut = window.rfind("\n") + 1 or window.rfind(" ") + 1 or limit
        parts.append(rest[:cut])
        rest = rest[cut:]
    parts.append(rest)
    return parts


def truncate_text(text: str, limit: int, marker: str = TRUNCATION_MARKER) -> str:
    """``text`` if it fits in ``limit`` characters, else its start and ``marker``, ``limit`` long.

    Raises:
        ValueError: ``marker`` does not leave room for one character of text.
    """
    if len(marker) >= limit:
        raise ValueError(f"the marker ({len(marker)} characters) must be shorter than {limit}")
    if len(text) <= limit:
        return text
    return text[: limit - len(marker)] + marker


@attrs.frozen
class Plan:
    """The parts to post, in order, and how the text was fitted."""

    parts: tuple[str, ...]
    split: bool
    truncated: bool


def plan_message(
    text: str,
    *,
    limit: int,
    oversize: Literal["split", "truncate"],
    max_parts: int,
    marker: str = TRUNCATION_MARKER,
) -> Plan:
    """The parts for ``text``: one if it fits; else split into at most ``max_parts``
    (the last truncated with ``marker`` if even they cannot hold it), or truncated.

    Raises:
        ValueError: ``limit``, ``max_parts`` or ``oversize`` are out of range.
    """
    if max_parts < 1:
        raise ValueError(f"max_parts must be at least 1, got {max_parts!r}")
    if oversize not in ("split", "truncate"):
        raise ValueError(f"oversize must be 'split' or 'truncate', got {oversize!r}")
    if len(text) <= limit:
        return Plan(parts=(text,), split=False, truncated=False)
    if oversize == "truncate":
        return Plan(parts=(truncate_text(text, limit, marker),), split=False, truncated=True)
    parts = split_text(text, limit)
    if len(parts) <= max_parts:
        return Plan(parts=tuple(parts), split=True, truncated=False)
    kept = parts[: max_parts - 1]
    tail = truncate_text("".join(parts[max_parts - 1 :]), limit, marker)
    return Plan(parts=(*kept, tail), split=max_parts > 1, truncated=True)


class Verdict(enum.Enum):
    """What to do after one post."""

    POSTED = "posted"
    RATE_LIMITED = "rate_limited"  # hold the channel for ``wait`` seconds, then post again
    RETRY = "retry"  # a server-side failure: retry the job later, with backoff
    REJECT = "reject"  # the request can never succeed: dead-letter with the reason


@attrs.frozen
class Outcome:
    verdict: Verdict
    ts: str = ""  # the Web API's message timestamp (threads hang from it)
    wait: float = 0.0
    reason: str = ""


# Web API errors (HTTP 200 with ``ok: false``) that are the server's trouble, not the request's.
TRANSIENT_API_ERRORS = frozenset(
    {"internal_error", "fatal_error", "service_unavailable", "request_timeout", "ratelimited"}
)
DEFAULT_RETRY_AFTER = 1.0
MAX_BODY_IN_REASON = 2_000


def retry_after(headers: Mapping[str, str]) -> float:
    """The ``Retry-After`` header in seconds (a number; Slack sends an integer),
    or ``DEFAULT_RETRY_AFTER`` when it is missing or not a finite number >= 0."""
    raw = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    try:
        seconds = float(raw) if raw is not None else math.nan
    except ValueError:
        seconds = math.nan
    return seconds if 0 <= seconds < math.inf else DEFAULT_RETRY_AFTER


def judge(
    kind: Literal["api", "webhook"], status: int, headers: Mapping[str, str], body: str
) -> Outcome:
    """What one answer of the Web API (``api``) or an incoming webhook means."""
    shown = body[:MAX_BODY_IN_REASON]
    if status == 429:
        return Outcome(Verdict.RATE_LIMITED, wait=retry_after(headers), reason="429")
    if status >= 500:
        return Outcome(Verdict.RETRY, reason=f"HTTP {status}: {shown}")
    if status >= 400 or status < 200:
        return Outcome(Verdict.REJECT, reason=f"HTTP {status}: {shown}")
    if kind == "webhook":
        return Outcome(Verdict.POSTED)
    try:
        answer = json.loads(body)
    except ValueError:
        return Outcome(Verdict.RETRY, reason=f"HTTP {status} with a body that is not JSON: {shown}")
    if not isinstance(answer, dict):
        return Outcome(Verdict.RETRY, reason=f"HTTP {status} with a body that is not an object")
    if answer.get("ok") is True:
        ts = answer.get("ts")
        return Outcome(Verdict.POSTED, ts=ts if isinstance(ts, str) else "")
    error = answer.get("error")
    if error in TRANSIENT_API_ERRORS:
        if error == "ratelimited":
            return Outcome(Verdict.RATE_LIMITED, wait=retry_after(headers), reason="ratelimited")
        return Outcome(Verdict.RETRY, reason=f"slack error {error}: {shown}")
    return Outcome(Verdict.REJECT, reason=f"slack error {error}: {shown}")
