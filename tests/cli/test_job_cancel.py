"""`guild job cancel ID`: exit 0 cancelled or cancelling, 1 already finished, 2 bad input."""

from __future__ import annotations

import json
from pathlib import Path

import trio

import guild

from .conftest import run_guild


def _enqueue(url: str, **fields: object) -> guild.Job:
    async def put() -> guild.Job:
        async with guild.open_broker(url) as broker:
            (job,) = await broker.enqueue([guild.Job(queue="q", payload=1, **fields)])  # type: ignore[arg-type]
            return job

    return trio.run(put)


def _result(url: str, job_id: str) -> guild.Result | None:
    async def get() -> guild.Result | None:
        async with guild.open_broker(url) as broker:
            return await broker.get_result(job_id)

    return trio.run(get)


class TestCancel:
    def test_a_waiting_job_is_cancelled_then_already_finished(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path}/cancel.db"
        ready = _enqueue(url)
        delayed = _enqueue(url, not_before=1e12)
        done = run_guild("job", "cancel", ready.id, "--broker", url)
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"cancelled {ready.id}\n"
        as_json = run_guild("job", "--broker", url, "--json", "cancel", delayed.id)
        assert as_json.returncode == 0, as_json.stderr
        assert json.loads(as_json.stdout) == {"id": delayed.id, "state": "cancelled"}
        for job in (ready, delayed):
            result = _result(url, job.id)
            assert result is not None and result.status is guild.JobStatus.CANCELLED
        again = run_guild("job", "cancel", ready.id, "--broker", url)
        assert again.returncode == 1
        assert again.stdout == ""
        assert again.stderr == (
            f"guild: error: job {ready.id} has already finished: it is cancelled\n"
        )

    def test_a_running_job_gets_a_request(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path}/running.db"
        job = _enqueue(url)

        async def scenario() -> tuple[set[str], guild.Result | None]:
            async with guild.open_broker(url) as broker:
                (held,) = await broker.claim("q", consumer="test", limit=1, lease=60)
                answer = await trio.to_thread.run_sync(
                    lambda: run_guild("job", "cancel", job.id, "--broker", url, "--json")
                )
                assert answer.returncode == 0, answer.stderr
                assert json.loads(answer.stdout) == {"id": job.id, "state": "cancelling"}
                wanted = await broker.cancel_requested([held.job.id])
                await broker.finish_cancelled([held])
                return wanted, await broker.get_result(job.id)

        wanted, result = trio.run(scenario)
        assert wanted == {job.id}
        assert result is not None and result.status is guild.JobStatus.CANCELLED


class TestBadInput:
    def test_unknown_id_is_exit_2(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path}/empty.db"
        _enqueue(url)
        found = run_guild("job", "cancel", "no-such-job", "--broker", url)
        assert found.returncode == 2
        assert found.stderr == "guild: error: no job with id 'no-such-job'\n"
        as_json = run_guild("job", "cancel", "no-such-job", "--broker", url, "--json")
        assert as_json.returncode == 2
        assert json.loads(as_json.stderr)["type"] == "UnknownJob"

    def test_memory_and_empty_ids_are_refused(self) -> None:
        memory = run_guild("job", "cancel", "x", "--broker", "memory://")
        assert memory.returncode == 2 and memory.stderr.startswith("guild: error: ")
        assert "memory://" in memory.stderr and len(memory.stderr.splitlines()) == 1
        empty = run_guild("job", "cancel", "", "--broker", "sqlite:guild.db")
        assert empty.returncode == 2 and empty.stderr.startswith("guild: error: ")
        assert len(empty.stderr.splitlines()) == 1
        missing = run_guild("job")
        assert missing.returncode == 2 and len(missing.stderr.splitlines()) == 1
