"""Fixtures for the attempt-accounting tests: durable brokers, the CLI, `guild run`."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._redis_server import running_redis_server
from tests.cli.conftest import ROOT, guild_cmd, run_guild


@pytest.fixture(params=["sqlite", "redis"])
def broker_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each durable broker, fresh: a SQLite file, or a redis-server of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/guild.db"
        return
    with running_redis_server() as server:
        yield server.url


def enqueue_lines(url: str, queue: str, payloads: list[object], *options: str) -> list[str]:
    """Enqueue through the CLI, as another process would (no max_attempts unless given)."""
    done = run_guild(
        "enqueue",
        queue,
        "-",
        "--broker",
        url,
        "--json",
        *options,
        input="".join(json.dumps(p) + "\n" for p in payloads),
    )
    assert done.returncode == 0, done.stderr
    # The JSON is the last line: a broker may log a warning before it.
    return [entry["id"] for entry in json.loads(done.stdout.strip().splitlines()[-1])]


def start_guild(
    *args: str, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    full_env = {k: v for k, v in os.environ.items() if k != "GUILD_BROKER"}
    full_env.update(env or {})
    # Logs go to a file: a pipe nobody reads would fill up and stall the process.
    with log.open("ab") as sink:
        return subprocess.Popen(
            guild_cmd(*args, "--log-format", "json"),
            cwd=ROOT,
            env=full_env,
            stdout=sink,
            stderr=sink,
        )
