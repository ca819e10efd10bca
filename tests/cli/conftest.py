from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._redis_server import RedisServer, running_redis_server

ROOT = Path(__file__).resolve().parents[2]


def guild_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "guild", *args]


def run_guild(
    *args: str,
    input: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """``guild ARGS`` as a child in ``cwd``, with none of this process's ``GUILD_*``
    settings (a broker, an environment, a token) but those ``env`` gives."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GUILD_")}
    # From any cwd, this checkout's guild and test apps are the ones imported.
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), full_env.get("PYTHONPATH")]))
    full_env.update(env or {})
    return subprocess.run(
        guild_cmd(*args),
        input=input,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full_env,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/guild.db"


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    """A private redis-server for the module (its tests use the default key prefix)."""
    with running_redis_server() as server:
        yield server


@pytest.fixture(params=["sqlite", "redis"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A broker URL a ``guild run`` child and this process can both open."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/guild.db"
    server: RedisServer = request.getfixturevalue("redis")
    return server.url


def start_run(app: str, url: str, marks: Path, log: Path) -> subprocess.Popen[bytes]:
    """``guild run APP`` as a child on ``url``, JSON logs to ``log``; the app's
    handlers record what they did under ``marks`` ($GUILD_TEST_MARKS)."""
    env = {**os.environ, "GUILD_TEST_MARKS": str(marks)}
    env.pop("GUILD_BROKER", None)
    with log.open("ab") as sink:
        return subprocess.Popen(
            guild_cmd("run", app, "--broker", url, "--log-format", "json"),
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=sink,
        )
