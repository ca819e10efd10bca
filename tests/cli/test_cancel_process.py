"""Issue 10 across processes: a job running in a `guild run` child, cancelled from
this process through the broker (SQLite and Redis), ends cancelled; its handler
is cancelled in the child, long before it would have finished."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import trio

import guild
from tests._poll import until

from .conftest import start_run

pytestmark = pytest.mark.slow
SLEEP = 120  # what the job would sleep, uncancelled: far beyond every wait below


async def test_a_running_job_is_cancelled_from_another_process(url: str, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    log = tmp_path / "worker.log"
    with trio.fail_after(90):
        async with guild.open_broker(url) as broker:
            running, other = await broker.enqueue(
                [guild.Job(queue="sleepy", payload=SLEEP) for _ in range(2)]
            )
            process = start_run("tests.cli.cancel_app:app", url, marks, log)
            try:
                await until((marks / f"{running.id}.started").exists, 0.02)
                asked = time.monotonic()
                assert await broker.cancel([running.id]) == [running.id]
                result = await broker.get_result(running.id, wait=30)
                took = time.monotonic() - asked
                assert result is not None, log.read_text()
                assert result.status is guild.JobStatus.CANCELLED
                assert (result.error, result.attempts) == ("cancelled", 1)
                # Its handler was cancelled in the child, and only its.
                assert (marks / f"{running.id}.cancelled").exists()
                assert not (marks / f"{other.id}.cancelled").exists()
                stats = (await broker.stats(["sleepy"]))["sleepy"]
                assert (stats.cancelled, stats.in_flight, stats.done) == (1, 1, 0)
                process.send_signal(signal.SIGTERM)
                code = await trio.to_thread.run_sync(process.wait)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
            assert code == 0, log.read_text()
    # Reported, not asserted (speed lives in benchmarks/): issue 10 asks for 1 s.
    print(f"cancel to result: {took:.3f}s")
