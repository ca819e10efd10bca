"""``guild purge``: a real ``guild`` process against a real SQLite file and redis-server."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import trio

from guild import Job, JobStatus
from guild.brokers import encode_result, open_broker
from tests._redis_server import RedisServer, running_redis_server

from .conftest import run_guild


async def _fill(url: str) -> dict[str, list[str]]:
    """On queue ``q``: 2 done, 1 dead, 1 cancelled, 2 ready, 1 delayed; 1 done on ``other``."""
    async with open_broker(url) as broker:
        ids: dict[str, list[str]] = {}
        done = await broker.enqueue([Job(queue="q", payload=i) for i in range(2)])
        held = await broker.claim("q", consumer="c", limit=2, lease=600)
        await broker.ack([(d, encode_result(1)) for d in held])
        ids["done"] = [j.id for j in done]
        dead = await broker.enqueue([Job(queue="q", max_attempts=1)])
        (one,) = await broker.claim("q", consumer="c", limit=1, lease=600)
        await broker.dead(one, error="boom")
        ids["dead"] = [dead[0].id]
        cancelled = await broker.enqueue([Job(queue="q")])
        await broker.cancel([cancelled[0].id])
        ids["cancelled"] = [cancelled[0].id]
        ids["ready"] = [j.id for j in await broker.enqueue([Job(queue="q") for _ in range(2)])]
        later = broker.now() + 3600
        ids["delayed"] = [(await broker.enqueue([Job(queue="q", not_before=later)]))[0].id]
        other = await broker.enqueue([Job(queue="other")])
        (held_other,) = await broker.claim("other", consumer="c", limit=1, lease=600)
        await broker.ack([(held_other, encode_result(1))])
        ids["other"] = [other[0].id]
        return ids


async def _statuses(url: str, ids: list[str]) -> list[str | None]:
    async with open_broker(url) as broker:
        found = []
        for job_id in ids:
            info = await broker.job_info(job_id)
            found.append(None if info is None else info.status.value)
        return found


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with running_redis_server() as server:
        yield server


@pytest.fixture(params=["sqlite", "redis"])
def url(request: pytest.FixtureRequest, db_url: str) -> str:
    if request.param == "sqlite":
        return db_url
    server: RedisServer = request.getfixturevalue("redis")
    return f"redis://127.0.0.1:{server.port}/3"


def test_purge_done_by_default_then_each_status(url: str) -> None:
    ids = trio.run(_fill, url)
    done = run_guild("purge", "q", "--broker", url)
    # stderr may carry the broker's warnings (a test redis-server has no persistence).
    assert (done.returncode, done.stdout) == (0, "purged 2 jobs (done) from q\n"), done.stderr
    assert trio.run(_statuses, url, ids["done"] + ids["other"]) == [None, None, "done"]
    both = run_guild(
        "purge", "q", "--status", "dead", "--status", "cancelled", "--json", "--broker", url
    )
    assert both.returncode == 0, both.stderr
    assert json.loads(both.stdout) == {
        "queue": "q",
        "statuses": ["cancelled", "dead"],
        "older_than": None,
        "purged": 2,
    }
    assert trio.run(_statuses, url, ids["ready"] + ids["delayed"]) == ["ready"] * 2 + ["delayed"]
    refused = run_guild("purge", "q", "--status", "all", "--broker", url)
    assert refused.returncode == 2
    assert refused.stderr == (
        "guild: error: purging delayed and ready jobs deletes work that has not run yet;"
        " add --yes to do it\n"
    )
    assert trio.run(_statuses, url, ids["ready"]) == ["ready", "ready"]
    everything = run_guild("purge", "q", "--status", "all", "--yes", "--broker", url)
    assert (everything.returncode, everything.stdout) == (
        0,
        "purged 3 jobs (cancelled, dead, delayed, done, ready) from q\n",
    )
    assert trio.run(_statuses, url, ids["ready"] + ids["delayed"]) == [None] * 3


def test_older_than_keeps_younger_jobs(db_url: str) -> None:
    ids = trio.run(_fill, db_url)
    kept = run_guild("purge", "q", "--older-than", "3600", "--broker", db_url)
    assert (kept.returncode, kept.stdout) == (0, "purged 0 jobs (done) from q\n")
    assert trio.run(_statuses, db_url, ids["done"]) == ["done", "done"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--broker", "memory://"], "nothing stored to read"),
        (["--status", "running"], "invalid choice: 'running'"),
        (["--status", "in_flight"], "invalid choice: 'in_flight'"),
        (["--older-than", "-1"], "--older-than: expected at least 0"),
        (["--older-than", "nan"], "--older-than: expected a finite number"),
        (["--status", "ready"], "add --yes"),
        (["--broker", "sqlite:/nonexistent-dir/x.db"], "does not exist"),
        (["--broker", "sqlite:x.db?dead_ttl=-1"], "dead_ttl=-1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], says: str) -> None:
    found = run_guild("purge", "q", *args)
    assert found.returncode == 2, found
    assert found.stdout == ""
    assert found.stderr.startswith("guild: error: ") and found.stderr.count("\n") == 1
    assert says in found.stderr


def test_a_missing_database_is_not_made(tmp_path: object) -> None:
    found = run_guild("purge", "q", "--broker", f"sqlite:///{tmp_path}/none.db")
    assert found.returncode == 2
    assert "no database at" in found.stderr


def test_bad_queue_name(db_url: str) -> None:
    found = run_guild("purge", "", "--broker", db_url)
    assert found.returncode == 2 and found.stderr.startswith("guild: error: argument QUEUE")


def test_statuses_named_map_to_job_statuses() -> None:
    from guild.cli._purge import chosen_statuses

    assert chosen_statuses(None) == {JobStatus.DONE}
    assert chosen_statuses(["dead", "done"]) == {JobStatus.DEAD, JobStatus.DONE}
    assert len(chosen_statuses(["done", "all"])) == 5
