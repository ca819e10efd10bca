"""``guild run`` with the dashboard's settings from guild.toml, as a real process.

The file binds 0.0.0.0 and sets ``http_token``: the dashboard refuses a request
without it and admits one with it, and ``guild top`` watches with
``$GUILD_HTTP_TOKEN`` (and is refused without it).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from tests.cli.conftest import run_guild

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "file-token-1234"
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _up(url: str) -> None:
    async with httpx.AsyncClient() as client:
        while True:
            try:
                if (await client.get(url + "/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass  # not listening yet
            await trio.sleep(0.1)


async def test_guild_toml_sets_the_token(tmp_path: Path) -> None:
    port = _free_port()
    config = tmp_path / "guild.toml"
    config.write_text(
        "[guild]\n"
        'app = "tests.cli.apps:quick"\n'
        f'broker = "sqlite:///{tmp_path / "guild.db"}"\n'
        f'http = "0.0.0.0:{port}"\n'
        f'http_token = "{TOKEN}"\n'
        "http_redact = true\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUILD_")}
    log = tmp_path / "run.log"
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as output:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "guild", "run", str(config), "--json"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=output,
        )
    try:
        with trio.fail_after(30):
            await _up(url)
            async with httpx.AsyncClient(base_url=url) as client:
                bare = await client.get("/api/state")
                bearer = await client.get(
                    "/api/state", headers={"authorization": f"Bearer {TOKEN}"}
                )
            watched = await trio.to_thread.run_sync(
                lambda: run_guild(
                    "top",
                    "--url",
                    url,
                    "--once",
                    "--interval",
                    "0.2",
                    env={"GUILD_HTTP_TOKEN": TOKEN},
                )
            )
            refused = await trio.to_thread.run_sync(
                lambda: run_guild("top", "--url", url, "--once", "--interval", "0.2")
            )
    finally:
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            await process.wait()
    assert bare.status_code == 401
    assert bearer.status_code == 200 and bearer.json()["app"] == "quick"
    assert watched.returncode == 0, watched.stdout + watched.stderr
    assert "quick" in watched.stdout
    assert refused.returncode != 0
    assert refused.stdout == "" and "403" in refused.stderr, refused.stderr
    assert process.returncode == 0, log.read_text()
