"""Issue 10: ``guild job show ID [--json]`` across processes, on SQLite and Redis.

A ``guild run`` child runs tests/cli/jobshow_app.py; ``guild job show`` runs as a
third process and reads the broker alone: the progress a handler reported in
the child, then its result, and a dead job's error with its traceback. Expected
values are written out from what the app does (its messages, its steps).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio

import guild
from tests._poll import until

from .conftest import run_guild, start_run

pytestmark = pytest.mark.slow


async def _show(url: str, job_id: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return await trio.to_thread.run_sync(
        lambda: run_guild("job", "show", job_id, "--broker", url, *extra)
    )


async def _show_json(url: str, job_id: str) -> dict[str, Any]:
    shown = await _show(url, job_id, "--json")
    # stderr may carry the broker's warnings (Redis without persistence), not an error.
    assert shown.returncode == 0, shown.stderr
    assert "error" not in shown.stderr
    found: dict[str, Any] = json.loads(shown.stdout)
    return found


async def test_show_a_running_job_with_its_progress_then_done_then_a_dead_one(
    url: str, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    log = tmp_path / "worker.log"
    with trio.fail_after(120):
        async with guild.open_broker(url) as broker:
            (running,) = await broker.enqueue([guild.Job(queue="steps", payload={"steps": 5})])
            (failing,) = await broker.enqueue([guild.Job(queue="fails", payload=7, max_attempts=2)])
            process = start_run("tests.cli.jobshow_app:app", url, marks, log)
            try:
                # The handler's last report (5 of 5) reaches the broker, from the
                # child, while the job still runs (it waits for its release).
                shown: dict[str, Any] = {}

                async def progressed() -> bool:
                    shown.update(await _show_json(url, running.id))
                    progress = shown["progress"]
                    return progress is not None and progress["fraction"] == 1.0

                await until(progressed, 0.1)
                assert shown["status"] == "in_flight", shown
                assert shown["progress"]["message"] == "step 5 of 5"
                assert (shown["id"], shown["queue"], shown["attempts"]) == (running.id, "steps", 1)
                assert shown["consumer"].startswith(f"{socket.gethostname()}:{process.pid}:steps:")
                assert shown["started_at"] >= shown["enqueued_at"] > 0
                assert shown["finished_at"] is None and shown["result"] is None
                assert shown["error"] is None and shown["traceback"] is None

                human = await _show(url, running.id)
                assert human.returncode == 0, human.stderr
                lines = human.stdout.splitlines()
                assert lines[:4] == [
                    f"id          {running.id}",
                    "queue       steps",
                    "status      in_flight",
                    "attempts    1",
                ]
                assert "finished    -" in lines
                assert f"worker      {shown['consumer']}" in lines
                assert any(line.startswith("progress    100.0% step 5 of 5 (at ") for line in lines)

                (marks / f"{running.id}.release").touch()
                result = await broker.get_result(running.id, wait=30)
                assert result is not None and result.ok, log.read_text()
                done = await _show_json(url, running.id)
                assert (done["status"], done["result"], done["attempts"]) == (
                    "done",
                    {"steps": 5},
                    1,
                )
                assert done["finished_at"] >= done["started_at"]
                assert done["progress"]["fraction"] == 1.0

                dead = await broker.get_result(failing.id, wait=30)
                assert dead is not None and dead.status is guild.JobStatus.DEAD, log.read_text()
                shown = await _show_json(url, failing.id)
                assert (shown["status"], shown["attempts"], shown["max_attempts"]) == ("dead", 2, 2)
                assert shown["error"].startswith("ValueError: no such user: 7")
                trace = shown["traceback"]
                assert trace.startswith("Traceback (most recent call last):")
                assert "in lookup" in trace and "jobshow_app.py" in trace
                assert trace.rstrip().endswith("ValueError: no such user: 7")

                human = await _show(url, failing.id)
                assert human.returncode == 0, human.stderr
                lines = human.stdout.splitlines()
                assert "status      dead" in lines and "attempts    2 of 2" in lines
                assert "error       " + shown["error"] in lines
                at = lines.index("traceback:")
                assert lines[at + 1] == "  Traceback (most recent call last):"
                assert lines[-1] == "  ValueError: no such user: 7"

                process.send_signal(signal.SIGTERM)
                code = await trio.to_thread.run_sync(process.wait)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
    assert code == 0, log.read_text()


class TestErrorContract:
    async def test_an_unknown_id_is_one_error_line_and_exit_2(self, db_url: str) -> None:
        async with guild.open_broker(db_url) as broker:
            await broker.enqueue([guild.Job(queue="q", payload=1)])
        shown = await _show(db_url, "no-such-job")
        assert shown.returncode == 2
        assert shown.stdout == ""
        assert shown.stderr == "guild: error: no job with id 'no-such-job'\n"

        shown = await _show(db_url, "no-such-job", "--json")
        assert shown.returncode == 2 and shown.stdout == ""
        assert json.loads(shown.stderr) == {
            "error": "no job with id 'no-such-job'",
            "type": "UnknownJob",
            "exit_code": 2,
        }

    @pytest.mark.parametrize(
        ("args", "says"),
        [
            (["job", "show"], "the following arguments are required: id"),
            (["job", "show", ""], "job id"),
            (["job", "show", "x", "--broker", "memory://"], "memory://"),
        ],
    )
    def test_bad_input_is_one_error_line_and_exit_2(self, args: list[str], says: str) -> None:
        shown = run_guild(*args)
        assert shown.returncode == 2, shown
        assert shown.stdout == ""
        (line,) = shown.stderr.splitlines()
        assert line.startswith("guild: error: ") and says in line, line


async def _guild(*args: str) -> subprocess.CompletedProcess[str]:
    return await trio.to_thread.run_sync(lambda: run_guild(*args))


async def test_priority_is_shown_and_survives_the_dead_letters_and_requeue(url: str) -> None:
    """`guild job show` and `guild dlq show` name each job's priority as
    `guild enqueue --priority` spells it, before and after `guild dlq requeue`."""
    levels = {
        "high": guild.Priority.HIGH,
        "normal": guild.Priority.NORMAL,
        "low": guild.Priority.LOW,
    }
    with trio.fail_after(120):
        async with guild.open_broker(url) as broker:
            stored = await broker.enqueue(
                [guild.Job(queue="ranked", payload=name, priority=p) for name, p in levels.items()]
            )
            ids = {job.payload: job.id for job in stored}
            for name, job_id in ids.items():
                shown = await _show_json(url, job_id)
                assert (shown["status"], shown["priority"]) == ("ready", name), shown
                human = await _show(url, job_id)
                assert human.returncode == 0, human.stderr
                assert human.stdout.splitlines()[4] == f"priority    {name}", human.stdout

            for delivery in await broker.claim("ranked", consumer="t", limit=3, lease=30):
                await broker.dead(delivery, error="ValueError: no")
            for name, job_id in ids.items():
                letter = await _guild("dlq", "show", job_id, "--broker", url, "--json")
                assert letter.returncode == 0, letter.stderr
                assert json.loads(letter.stdout)["priority"] == name, letter.stdout
                shown = await _show_json(url, job_id)
                assert (shown["status"], shown["priority"]) == ("dead", name), shown

            # The module's Redis server is shared: other tests' dead jobs are on other queues.
            requeued = await _guild("dlq", "requeue", "--all", "--queue", "ranked", "--broker", url)
            assert requeued.returncode == 0 and "requeued 3 jobs" in requeued.stdout
            for name, job_id in ids.items():
                shown = await _show_json(url, job_id)
                assert (shown["status"], shown["priority"]) == ("ready", name), shown
            again = await broker.claim("ranked", consumer="t", limit=3, lease=30)
            assert [d.job.payload for d in again] == ["high", "normal", "low"]
