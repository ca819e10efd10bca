"""One Client shared by many threads: every job is stored exactly once."""

from __future__ import annotations

import guild

from ._stats import queue_stats
from .apps import at_once, race_one_key

THREADS = 16
PER_THREAD = 25


def test_many_threads_enqueue_through_one_client(url: str) -> None:
    ids: list[list[str]] = [[] for _ in range(THREADS)]

    def produce(index: int) -> None:
        for n in range(PER_THREAD):
            if n % 5 == 0:
                ids[index] += [j.id for j in client.enqueue_many("load", [index, n, "batch"])]
            else:
                ids[index].append(client.enqueue("load", [index, n]).id)

    with guild.Client(url) as client:
        at_once(THREADS, produce)
    every = [job_id for per in ids for job_id in per]
    # 5 of each thread's 25 calls store 3 jobs, the other 20 store one.
    expected = THREADS * (20 + 5 * 3)
    assert len(every) == expected
    assert len(set(every)) == expected
    assert queue_stats(url, "load").ready == expected


def test_many_threads_racing_one_key_store_one_job(url: str) -> None:
    with guild.Client(url) as client:
        got = race_one_key(client, THREADS, "only-once")
    assert len(got) == THREADS and len(set(got)) == 1
    assert queue_stats(url, "keyed").ready == 1
