"""`guild result ID` and `guild enqueue … --wait`, as real processes."""

from __future__ import annotations

import json

import guild
from tests.cli.conftest import run_guild

from .apps import running_worker


def enqueue(url: str, queue: str, payload: str, *extra: str) -> str:
    done = run_guild("enqueue", queue, payload, "--broker", url, "--json", *extra)
    assert done.returncode == 0, done.stderr
    job_id: str = json.loads(done.stdout)[0]["id"]
    return job_id


def test_result_of_a_done_job_prints_its_value(url: str) -> None:
    with running_worker(url):
        job_id = enqueue(url, "double", '"ab"')
        done = run_guild("result", job_id, "--wait", "30", "--broker", url)
        assert (done.returncode, done.stdout, done.stderr) == (0, '"abab"\n', "")
        as_json = run_guild("result", job_id, "--broker", url, "--json")
    assert as_json.returncode == 0
    answer = json.loads(as_json.stdout)
    assert {k: answer[k] for k in ("id", "queue", "status", "value", "error")} == {
        "id": job_id,
        "queue": "double",
        "status": "done",
        "value": "abab",
        "error": None,
    }


def test_result_of_a_dead_job_exits_1_with_its_error(url: str) -> None:
    with running_worker(url):
        job_id = enqueue(url, "reject", "7")
        done = run_guild("result", job_id, "--wait", "30", "--broker", url)
    assert done.returncode == 1
    assert done.stdout == ""
    assert (
        done.stderr == f"guild: error: job {job_id} is dead after 1 attempt: rejected: refused 7\n"
    )


def test_result_of_an_unfinished_job_exits_1_naming_its_status(sqlite_url: str) -> None:
    job_id = enqueue(sqlite_url, "nobody-serves-this", "1", "--delay", "3600")
    done = run_guild("result", job_id, "--wait", "0.2", "--broker", sqlite_url)
    assert done.returncode == 1
    assert done.stderr == (
        f"guild: error: job {job_id} is delayed: not finished after waiting 0.2 s\n"
    )


def test_result_of_an_unknown_id_is_a_usage_error(url: str) -> None:
    enqueue(url, "q", "1")  # the database exists; the id does not
    done = run_guild("result", "no-such-id", "--broker", url, "--json")
    assert done.returncode == 2
    assert json.loads(done.stderr) == {
        "error": "no job with id 'no-such-id'",
        "type": "UnknownJob",
        "exit_code": 2,
    }


def test_bad_input_is_refused_before_anything_opens(tmp_path: object) -> None:
    for argv, message in [
        (["result", "x", "--wait", "-1"], "argument --wait: expected at least 0, got -1"),
        (["result", "x", "--wait", "nan"], "argument --wait: expected a finite number"),
        (["result", "x", "--broker", "memory://"], "memory:// lives inside one process"),
        (["result", "   "], "expected a job id"),
        (["enqueue", "q", "-", "--wait", "1"], "--wait prints one job's result"),
    ]:
        done = run_guild(*argv, input="1\n", env={"GUILD_BROKER": f"sqlite:///{tmp_path}/x.db"})
        assert done.returncode == 2, (argv, done.stderr)
        assert done.stderr.startswith("guild: error: ") and message in done.stderr, done.stderr
        assert len(done.stderr.splitlines()) == 1


def test_result_reads_no_database_into_being(tmp_path: object) -> None:
    done = run_guild("result", "x", "--broker", f"sqlite:///{tmp_path}/none.db")
    assert done.returncode == 2
    assert "no database at" in done.stderr


def test_enqueue_wait_prints_the_result(url: str) -> None:
    with running_worker(url):
        done = run_guild("enqueue", "double", "21", "--wait", "30", "--broker", url)
        assert (done.returncode, done.stdout, done.stderr) == (0, "42\n", "")
        failed = run_guild("enqueue", "reject", '"no"', "--wait", "30", "--broker", url, "--json")
    assert failed.returncode == 1
    answer = json.loads(failed.stdout)
    assert (answer["status"], answer["error"]) == ("dead", "rejected: refused 'no'")
    assert json.loads(failed.stderr)["type"] == "JobNotDone"


def test_enqueue_wait_without_a_worker_names_the_job(sqlite_url: str) -> None:
    done = run_guild("enqueue", "nobody-serves-this", "1", "--wait", "0.2", "--broker", sqlite_url)
    assert done.returncode == 1
    assert "is ready: not finished after waiting 0.2 s" in done.stderr
    job_id = done.stderr.split()[3]
    with guild.Client(sqlite_url) as client:
        assert client.status(job_id) is guild.JobStatus.READY
