from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def guild_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "guild", *args]


def run_guild(
    *args: str, input: str | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    full_env.pop("GUILD_BROKER", None)
    full_env.update(env or {})
    return subprocess.run(
        guild_cmd(*args),
        input=input,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=full_env,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/guild.db"
