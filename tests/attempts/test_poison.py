"""One poison job stays one bad job: a job that SIGKILLs its own process is the
only one charged for it, through real `guild run` processes on SQLite and Redis."""

from __future__ import annotations

import functools
import signal
import subprocess
from pathlib import Path

import trio

import guild

from .._poll import until
from .conftest import enqueue_lines, start_guild

INNOCENT = 11


async def _finished(broker: guild.Broker, ids: list[str]) -> bool:
    return all([await broker.get_result(job_id) is not None for job_id in ids])


async def _settled(process: subprocess.Popen[bytes], broker: guild.Broker, ids: list[str]) -> bool:
    """The process died, or every job has a result."""
    return process.poll() is not None or await _finished(broker, ids)


async def _run_until_finished(app: str, url: str, ids: list[str], log: Path) -> list[int]:
    """Start `guild run` again each time it dies, until every job has a result.

    Returns the exit codes of the processes that died on their own."""
    deaths: list[int] = []
    async with guild.open_broker(url) as broker:
        while True:
            process = start_guild("run", app, "--broker", url, log=log)
            try:
                await until(functools.partial(_settled, process, broker, ids))
                if process.poll() is not None:
                    deaths.append(process.returncode)
                    continue
                process.send_signal(signal.SIGTERM)
                assert await trio.to_thread.run_sync(process.wait) == 0
                return deaths
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()


async def _outcome(
    url: str, ids: list[str]
) -> tuple[guild.Result, list[guild.Result], guild.QueueStats]:
    async with guild.open_broker(url) as broker:
        results = [await broker.get_result(job_id) for job_id in ids]
        stats = (await broker.stats(["poison"]))["poison"]
    assert all(r is not None for r in results)
    poison, *innocents = [r for r in results if r is not None]
    return poison, innocents, stats


class TestPoisonJob:
    async def test_only_the_poison_job_is_dead(self, broker_url: str, tmp_path: Path) -> None:
        # The poison job first: each time it runs, four innocent jobs claimed with
        # it wait, prefetched, for the one handler when the process dies.
        ids = enqueue_lines(broker_url, "poison", ["poison", *range(INNOCENT)])
        with trio.fail_after(150):
            deaths = await _run_until_finished(
                "tests.attempts.apps:poison", broker_url, ids, tmp_path / "run.log"
            )
        # Killed by its own handler once per attempt of the worker's max_attempts=3
        # (the jobs, enqueued by the CLI, set none).
        assert deaths == [-signal.SIGKILL] * 3
        poison, innocents, stats = await _outcome(broker_url, ids)
        assert poison.status is guild.JobStatus.DEAD
        assert poison.error == "lease expired on attempt 3 of 3"
        assert poison.attempts == 3
        # Never charged for a death that was not theirs: one run each.
        assert [(r.status, r.value, r.attempts) for r in innocents] == [
            (guild.JobStatus.DONE, n, 1) for n in range(INNOCENT)
        ]
        assert (stats.done, stats.dead, stats.ready, stats.in_flight) == (INNOCENT, 1, 0, 0)

    async def test_four_handlers_one_dead(self, broker_url: str, tmp_path: Path) -> None:
        ids = enqueue_lines(broker_url, "poison", ["poison", *range(INNOCENT)])
        with trio.fail_after(150):
            deaths = await _run_until_finished(
                "tests.attempts.apps:crowd", broker_url, ids, tmp_path / "run.log"
            )
        assert deaths == [-signal.SIGKILL] * 3
        poison, innocents, stats = await _outcome(broker_url, ids)
        assert poison.status is guild.JobStatus.DEAD
        assert poison.error == "lease expired on attempt 3 of 3"
        assert [(r.status, r.value) for r in innocents] == [
            (guild.JobStatus.DONE, n) for n in range(INNOCENT)
        ]
        # At most the three started beside it the first time paid for that run.
        assert all(r.attempts in (1, 2) for r in innocents)
        assert sum(r.attempts == 2 for r in innocents) <= 3
        assert (stats.done, stats.dead, stats.ready, stats.in_flight) == (INNOCENT, 1, 0, 0)
