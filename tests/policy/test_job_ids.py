"""Job ids (``new_id`` / ``new_ids``) and the batch builder of ``enqueue_many``.

The oracle for ids decodes them by hand (Crockford base32, written out here),
never through ``guild._ids``.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guild import InvalidQueueName, Job, Priority, _ids
from guild._client import make_jobs
from guild._ids import new_id, new_ids

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
NOW = 1_767_225_600.123  # 2026-01-01T00:00:00.123Z


def decode(job_id: str) -> tuple[int, int]:
    """(milliseconds, 80-bit random part) of an id."""
    assert len(job_id) == 26 and set(job_id) <= set(CROCKFORD)
    value = 0
    for char in job_id:
        value = value * 32 + CROCKFORD.index(char)
    return value >> 80, value & ((1 << 80) - 1)


class TestNewIds:
    def test_a_batch_counts_up_from_one_clock_read(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # As if no id was made yet (ids made earlier, at the real time, are later).
        monkeypatch.setattr(_ids, "_last_ms", -1)
        ids = new_ids(5, NOW)
        decoded = [decode(i) for i in ids]
        assert {ms for ms, _ in decoded} == {1_767_225_600_123}
        randoms = [r for _, r in decoded]
        assert randoms == list(range(randoms[0], randoms[0] + 5))
        # The next id goes on from there, as five new_id calls would have.
        assert decode(new_id(NOW)) == (1_767_225_600_123, randoms[-1] + 1)

    @given(st.lists(st.integers(0, 20), max_size=20))
    def test_ids_strictly_increase_across_calls(self, counts: list[int]) -> None:
        made: list[str] = []
        for count in counts:
            made += new_ids(count) if count else [new_id()]
        assert made == sorted(made) and len(set(made)) == len(made)

    def test_empty_batch(self) -> None:
        assert new_ids(0) == []

    def test_a_batch_that_would_overflow_moves_to_the_next_millisecond(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        ms = 1_767_225_600_123
        monkeypatch.setattr(_ids, "_last_ms", ms)
        monkeypatch.setattr(_ids, "_last_random", (1 << 80) - 2)
        decoded = [decode(i) for i in new_ids(3, NOW)]
        assert {m for m, _ in decoded} == {ms + 1}
        assert [r for _, r in decoded] == list(range(decoded[0][1], decoded[0][1] + 3))


class TestMakeJobs:
    def test_jobs_are_those_job_would_build_but_for_their_ids(self) -> None:
        payloads = [1, {"a": [1, 2]}, None, "x"]
        jobs = make_jobs(
            "q", payloads, now=100.0, delay=5, max_attempts=3, timeout=2.5, priority="high"
        )
        assert [j.payload for j in jobs] == payloads
        for job in jobs:
            assert job == Job(
                queue="q",
                payload=job.payload,
                id=job.id,
                max_attempts=3,
                timeout=2.5,
                not_before=105.0,
                priority=Priority.HIGH,
            )
            assert job.trace_id == job.id
        assert [j.id for j in jobs] == sorted({j.id for j in jobs})

    def test_a_given_trace_id_is_every_jobs(self) -> None:
        jobs = make_jobs("q", [1, 2], now=0.0, trace_id="t-1")
        assert [j.trace_id for j in jobs] == ["t-1", "t-1"]
        assert jobs[0].id != jobs[1].id

    @pytest.mark.parametrize(
        ("options", "error", "words"),
        [
            ({"queue": "bad\n"}, InvalidQueueName, "whitespace"),
            ({"max_attempts": 0}, ValueError, "max_attempts"),
            ({"timeout": -1.0}, ValueError, "timeout"),
            ({"priority": 7}, ValueError, "priority"),
            ({"delay": -2.0}, ValueError, "delay"),
        ],
    )
    def test_bad_options_are_refused_once_for_the_batch(
        self, options: dict[str, object], error: type[Exception], words: str
    ) -> None:
        queue = str(options.pop("queue", "q"))
        with pytest.raises(error, match=words):
            make_jobs(queue, [1, 2, 3], now=0.0, **options)  # type: ignore[arg-type]

    def test_no_payloads_no_jobs(self) -> None:
        assert make_jobs("q", [], now=0.0) == []
