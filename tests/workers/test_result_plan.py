"""The ResultWorker's pure decisions: cutting text to Slack's size, reading Slack's answers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guild_workers._result_plan import (
    DEFAULT_RETRY_AFTER,
    Outcome,
    Plan,
    Verdict,
    judge,
    plan_message,
    retry_after,
    split_text,
    truncate_text,
)


class TestSplit:
    @pytest.mark.parametrize(
        ("text", "limit", "parts"),
        [
            ("", 5, [""]),
            ("short", 5, ["short"]),
            ("abcdefghij", 4, ["abcd", "efgh", "ij"]),
            ("ab cd ef", 5, ["ab ", "cd ef"]),
            ("aaaa bbbb\ncccc dddd", 10, ["aaaa bbbb\n", "cccc dddd"]),
            # A newline wins over a later space.
            ("a\nbc de", 6, ["a\n", "bc de"]),
            # A newline first in the window still cuts there.
            ("\nabcdefg", 4, ["\n", "abcd", "efg"]),
            ("line one\nline two\nline three", 12, ["line one\n", "line two\n", "line three"]),
        ],
    )
    def test_written_out(self, text: str, limit: int, parts: list[str]) -> None:
        assert split_text(text, limit) == parts

    def test_limit_must_be_positive(self) -> None:
        with pytest.raises(ValueError, match="at least 1"):
            split_text("x", 0)

    @given(st.text(alphabet="ab \n", max_size=300), st.integers(1, 40))
    def test_against_a_reference_model(self, text: str, limit: int) -> None:
        expected: list[str] = []
        rest = text
        while len(rest) > limit:
            # Reference: scan every cut point; prefer the last newline, then the last space.
            newlines = [i + 1 for i in range(limit) if rest[i] == "\n"]
            spaces = [i + 1 for i in range(limit) if rest[i] == " "]
            cut = (newlines or spaces or [limit])[-1]
            expected.append(rest[:cut])
            rest = rest[cut:]
        expected.append(rest)
        parts = split_text(text, limit)
        assert parts == expected
        assert "".join(parts) == text
        assert all(1 <= len(part) <= limit for part in parts[:-1])
        assert len(parts[-1]) <= limit


class TestTruncateAndPlan:
    def test_truncate(self) -> None:
        assert truncate_text("abcdefghij", 8, "~~") == "abcdef~~"
        assert truncate_text("abcdefgh", 8, "~~") == "abcdefgh"
        with pytest.raises(ValueError, match="shorter than 2"):
            truncate_text("abc", 2, "~~")

    def test_plans(self) -> None:
        fits = plan_message("abcd", limit=4, oversize="split", max_parts=3, marker="~")
        assert fits == Plan(parts=("abcd",), split=False, truncated=False)
        split = plan_message("abcdefghij", limit=4, oversize="split", max_parts=3, marker="~")
        assert split == Plan(parts=("abcd", "efgh", "ij"), split=True, truncated=False)
        capped = plan_message("abcdefghijkl", limit=4, oversize="split", max_parts=2, marker="~")
        assert capped == Plan(parts=("abcd", "efg~"), split=True, truncated=True)
        one = plan_message("abcdefghijkl", limit=4, oversize="split", max_parts=1, marker="~")
        assert one == Plan(parts=("abc~",), split=False, truncated=True)
        cut = plan_message("abcdefghij", limit=4, oversize="truncate", max_parts=3, marker="~")
        assert cut == Plan(parts=("abc~",), split=False, truncated=True)

    def test_bad_plans(self) -> None:
        with pytest.raises(ValueError, match="max_parts"):
            plan_message("x", limit=4, oversize="split", max_parts=0)
        with pytest.raises(ValueError, match="oversize"):
            plan_message("x", limit=4, oversize="drop", max_parts=1)  # type: ignore[arg-type]


class TestJudge:
    @pytest.mark.parametrize(
        ("kind", "status", "headers", "body", "outcome"),
        [
            ("api", 200, {}, '{"ok": true, "ts": "1.000001"}', Outcome(Verdict.POSTED, ts="1.000001")),
            ("webhook", 200, {}, "ok", Outcome(Verdict.POSTED)),
            ("api", 429, {"Retry-After": "7"}, "", Outcome(Verdict.RATE_LIMITED, wait=7.0, reason="429")),
            ("webhook", 429, {}, "", Outcome(Verdict.RATE_LIMITED, wait=DEFAULT_RETRY_AFTER, reason="429")),
            ("api", 503, {}, "down", Outcome(Verdict.RETRY, reason="HTTP 503: down")),
            ("webhook", 404, {}, "channel_not_found", Outcome(Verdict.REJECT, reason="HTTP 404: channel_not_found")),
            ("api", 200, {}, '{"ok": false, "error": "channel_not_found"}',
             Outcome(Verdict.REJECT, reason='slack error channel_not_found: {"ok": false, "error": "channel_not_found"}')),
            ("api", 200, {}, '{"ok": false, "error": "internal_error"}',
             Outcome(Verdict.RETRY, reason='slack error internal_error: {"ok": false, "error": "internal_error"}')),
            ("api", 200, {"retry-after": "3"}, '{"ok": false, "error": "ratelimited"}',
             Outcome(Verdict.RATE_LIMITED, wait=3.0, reason="ratelimited")),
            ("api", 200, {}, "<html>", Outcome(Verdict.RETRY, reason="HTTP 200 with a body that is not JSON: <html>")),
        ],
    )  # fmt: skip
    def test_written_out(
        self, kind: str, status: int, headers: dict[str, str], body: str, outcome: Outcome
    ) -> None:
        assert judge(kind, status, headers, body) == outcome  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("raw", "seconds"),
        [
            ("12", 12.0),
            ("0", 0.0),
            ("1.5", 1.5),
            ("soon", 1.0),
            ("-3", 1.0),
            ("inf", 1.0),
            ("nan", 1.0),
        ],
    )
    def test_retry_after(self, raw: str, seconds: float) -> None:
        assert retry_after({"Retry-After": raw}) == seconds
