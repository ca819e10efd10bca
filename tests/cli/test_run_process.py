"""`guild run` as a real process: kill -9 and SIGTERM lose nothing."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import trio

import guild

from .conftest import ROOT, guild_cmd

JOBS = 2000


def _start(url: str, job_seconds: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "GUILD_TEST_JOB_SECONDS": job_seconds}
    # Logs go to a file: a pipe nobody reads would fill up and stall the worker.
    with log.open("ab") as sink:
        return subprocess.Popen(
            guild_cmd("run", "tests.cli.apps:slow", "--broker", url, "--log-format", "json"),
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=sink,
        )


async def _wait_for_done(broker: guild.Broker, at_least: int) -> guild.QueueStats:
    while True:
        stats = (await broker.stats(["work"]))["work"]
        if stats.done >= at_least:
            return stats
        await trio.sleep(0.05)


async def _stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    return await trio.to_thread.run_sync(process.wait)


class TestKillNine:
    """A worker process killed with SIGKILL mid-run loses no job."""

    async def test_every_job_completes_after_a_restart(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path}/kill.db"
        with trio.fail_after(180):
            async with guild.open_broker(url) as broker:
                jobs = await broker.enqueue(
                    [guild.Job(queue="work", payload=i, max_attempts=5) for i in range(JOBS)]
                )
                log = tmp_path / "worker.log"
                first = _start(url, "0.05", log)
                try:
                    await _wait_for_done(broker, 300)
                finally:
                    first.kill()
                    first.wait()
                at_kill = (await broker.stats(["work"]))["work"]
                assert at_kill.in_flight > 0, "the kill should land with jobs in flight"
                assert at_kill.done < JOBS

                second = _start(url, "0.001", log)
                try:
                    stats = await _wait_for_done(broker, JOBS)
                    assert await _stop(second) == 0
                finally:
                    if second.poll() is None:
                        second.kill()
                        second.wait()
                assert (stats.done, stats.dead, stats.ready, stats.in_flight) == (JOBS, 0, 0, 0)
                results = [await broker.get_result(job.id) for job in jobs]
                assert all(r is not None and r.ok for r in results)
                retried = [r for r in results if r is not None and r.attempts > 1]
                # The jobs the dead process held came back through their leases.
                assert 0 < len(retried) <= at_kill.in_flight


class TestSigterm:
    """SIGTERM drains: running jobs finish, the rest stay ready, exit code 0."""

    async def test_in_flight_jobs_finish_or_come_back(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path}/term.db"
        with trio.fail_after(120):
            async with guild.open_broker(url) as broker:
                await broker.enqueue([guild.Job(queue="work", payload=i) for i in range(300)])
                log = tmp_path / "worker.log"
                process = _start(url, "0.5", log)
                try:
                    await _wait_for_done(broker, 20)
                    code = await _stop(process)
                finally:
                    if process.poll() is None:
                        process.kill()
                        process.wait()
                assert code == 0, log.read_text()
                stats = (await broker.stats(["work"]))["work"]
                assert stats.in_flight == 0
                assert stats.dead == 0
                assert stats.done + stats.ready == 300
