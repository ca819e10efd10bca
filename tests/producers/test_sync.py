"""guild.Client from plain synchronous code, against real SQLite and Redis, with a worker."""

from __future__ import annotations

import pytest

import guild

from ._stats import queue_stats
from .apps import running_worker


def test_enqueue_then_result_from_a_running_worker(url: str) -> None:
    with running_worker(url), guild.Client(url) as client:
        job = client.enqueue("double", 21)
        result = client.result(job, wait=30)
        assert result is not None
        assert (result.status, result.value, result.queue) == (guild.JobStatus.DONE, 42, "double")
        assert client.status(job) is guild.JobStatus.DONE


def test_enqueue_many_results_come_back_per_job(url: str) -> None:
    with running_worker(url), guild.Client(url) as client:
        jobs = client.enqueue_many("double", [1, 2, 3, "ab"])
        values = [client.result(job.id, wait=30) for job in jobs]
        assert [r.value for r in values if r is not None] == [2, 4, 6, "abab"]


def test_a_rejected_job_reads_dead_with_its_error(url: str) -> None:
    with running_worker(url), guild.Client(url) as client:
        job = client.enqueue("reject", "x")
        result = client.result(job, wait=30)
        assert result is not None and not result.ok
        assert result.status is guild.JobStatus.DEAD
        assert "refused 'x'" in (result.error or "")


def test_status_without_a_worker(url: str) -> None:
    with guild.Client(url) as client:
        ready = client.enqueue("nobody-serves-this", 1)
        delayed = client.enqueue("nobody-serves-this", 2, delay=3600)
        assert client.status(ready) is guild.JobStatus.READY
        assert client.status(delayed.id) is guild.JobStatus.DELAYED
        assert client.result(ready) is None
        with pytest.raises(guild.UnknownJob, match="no job with id 'missing'"):
            client.status("missing")
        with pytest.raises(guild.UnknownJob):
            client.result("missing", wait=0.1)


def test_a_key_stores_one_job(url: str) -> None:
    with guild.Client(url) as client:
        first = client.enqueue("nobody-serves-this", 1, key="k")
        second = client.enqueue("nobody-serves-this", 2, key="k")
        assert second.id == first.id
        assert queue_stats(url, "nobody-serves-this").ready == 1
