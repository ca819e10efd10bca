"""A job that sets no max_attempts takes its worker's, in the process that runs it."""

from __future__ import annotations

import signal
from pathlib import Path

import trio

import guild

from .conftest import enqueue_lines, start_guild


class TestWorkerMaxAttempts:
    async def test_cli_job_gets_the_workers_three(self, broker_url: str, tmp_path: Path) -> None:
        (job_id,) = enqueue_lines(broker_url, "flaky", [{"n": 1}])
        async with guild.open_broker(broker_url) as broker:
            process = start_guild(
                "run", "tests.attempts.apps:flaky", "--broker", broker_url, log=tmp_path / "log"
            )
            try:
                with trio.fail_after(60):
                    result = await broker.get_result(job_id, wait=60)
                process.send_signal(signal.SIGTERM)
                assert await trio.to_thread.run_sync(process.wait) == 0
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
            letter = await broker.get_dead(job_id)
        assert result is not None and result.status is guild.JobStatus.DEAD
        # Not the 5 a producer's default used to impose: the worker says 3.
        assert result.attempts == 3
        assert result.error == "RuntimeError: attempt 3 failed (gave up after 3 of 3 attempts)"
        assert letter is not None and letter.job.max_attempts is None

    async def test_an_explicit_value_wins(self, broker_url: str, tmp_path: Path) -> None:
        (job_id,) = enqueue_lines(broker_url, "flaky", [{"n": 1}], "--max-attempts", "2")
        async with guild.open_broker(broker_url) as broker:
            process = start_guild(
                "run", "tests.attempts.apps:flaky", "--broker", broker_url, log=tmp_path / "log"
            )
            try:
                with trio.fail_after(60):
                    result = await broker.get_result(job_id, wait=60)
            finally:
                process.kill()
                process.wait()
        assert result is not None and result.attempts == 2
        assert result.error == "RuntimeError: attempt 2 failed (gave up after 2 of 2 attempts)"


class TestGuildTomlOverride:
    async def test_the_running_process_toml_decides(self, broker_url: str, tmp_path: Path) -> None:
        config = tmp_path / "guild.toml"
        config.write_text(
            '[guild]\napp = "tests.attempts.apps:flaky"\n\n[workers.flaky]\nmax_attempts = 2\n'
        )
        (job_id,) = enqueue_lines(broker_url, "flaky", [{"n": 1}])
        async with guild.open_broker(broker_url) as broker:
            process = start_guild("run", str(config), "--broker", broker_url, log=tmp_path / "log")
            try:
                with trio.fail_after(60):
                    result = await broker.get_result(job_id, wait=60)
            finally:
                process.kill()
                process.wait()
        # The app says 3; the guild.toml of the process that ran the job says 2.
        assert result is not None and result.attempts == 2, (tmp_path / "log").read_text()
        assert result.error == "RuntimeError: attempt 2 failed (gave up after 2 of 2 attempts)"
