"""``guild result ID --wait S`` of an id no job has answers at once, through a
real ``python -m guild`` on SQLite and on a real redis-server.

Before, it waited all S seconds for a job that would never come, then said the
id was unknown. Now only an id whose job may still appear is waited for (one
guild made in the last minute, a running workflow's step: see
``guild._may_appear``); any other unknown id is ``no job with id …``, exit 2,
at once, and a malformed id is a usage error naming it, before anything opens.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from guild._ids import new_id
from tests._redis_server import RedisServer, running_redis_server
from tests.cli.conftest import run_guild

WAIT = "30"
AT_ONCE = 10.0
"""Seconds a refusal may take on a busy machine: well short of the 30 s wait."""

UNKNOWN = [
    pytest.param("NOPE", id="typo"),
    # guild's shape, made on 2020-09-13: its enqueue has long landed, or never will.
    pytest.param("01EJ3PX03VD2DW017341T7HN0H", id="old-guild-id"),
    # guild's shape, stamped in 2096: no clock is that far off.
    pytest.param("03MD998G0045G9C5FQSHBVEPVZ", id="future-guild-id"),
    # The jobs of a step and of its undo, of a workflow the broker does not have.
    pytest.param("wf-none.0", id="step-of-no-workflow"),
    pytest.param("wf-none.2.undo", id="undo-of-no-workflow"),
]


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    """The ``url`` fixture's server, with appendonly: a Redis that keeps nothing
    makes every command warn on stderr, which holds just the error line here."""
    with running_redis_server(appendonly=True) as server:
        yield server


def _enqueued(url: str) -> None:
    """One job on the broker: the database exists, the ids asked for do not."""
    done = run_guild("enqueue", "nobody-serves-this", "1", "--broker", url)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("job_id", UNKNOWN)
def test_result_wait_of_an_unknown_id_answers_at_once(url: str, job_id: str) -> None:
    _enqueued(url)
    started = time.monotonic()
    done = run_guild("result", job_id, "--wait", WAIT, "--broker", url)
    took = time.monotonic() - started
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f"guild: error: no job with id '{job_id}'\n"
    assert took < AT_ONCE, f"took {took:.1f} s"


@pytest.mark.slow
def test_with_json_the_unknown_id_is_one_json_object_at_once(url: str) -> None:
    _enqueued(url)
    started = time.monotonic()
    done = run_guild("result", "NOPE", "--wait", WAIT, "--broker", url, "--json")
    assert time.monotonic() - started < AT_ONCE
    assert (done.returncode, done.stdout) == (2, "")
    assert json.loads(done.stderr) == {
        "error": "no job with id 'NOPE'",
        "type": "UnknownJob",
        "exit_code": 2,
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    ("job_id", "says"),
    [
        ("", "argument id: expected a job id, got ''"),
        ("x" * 201, "must be at most 200 characters, got 201"),
        ("a\nb", "must not hold control or line-breaking characters"),
    ],
    ids=["empty", "too-long", "newline"],
)
def test_a_malformed_id_is_a_usage_error_naming_it(url: str, job_id: str, says: str) -> None:
    started = time.monotonic()
    done = run_guild("result", job_id, "--wait", WAIT, "--broker", url)
    assert time.monotonic() - started < AT_ONCE
    assert (done.returncode, done.stdout) == (2, "")
    assert says in done.stderr
    assert done.stderr.startswith("guild: error: ") and done.stderr.count("\n") == 1


@pytest.mark.slow
def test_an_id_guild_made_a_moment_ago_is_waited_for(url: str) -> None:
    """Its enqueue may still be on its way (another process holds the id a moment
    before the broker does): the wait is kept, then the id is unknown."""
    _enqueued(url)
    job_id = new_id()
    started = time.monotonic()
    done = run_guild("result", job_id, "--wait", "2", "--broker", url)
    assert time.monotonic() - started >= 2.0
    assert (done.returncode, done.stderr) == (2, f"guild: error: no job with id '{job_id}'\n")
