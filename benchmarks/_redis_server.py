"""A private redis-server for a benchmark: ``$GUILD_REDIS_SERVER`` or ``redis-server``
on PATH, on a free port, keeping nothing on disk."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def redis_server() -> Iterator[str]:
    """Start one; yields its URL (``redis://127.0.0.1:PORT/0``); stops it on leaving."""
    binary = os.environ.get("GUILD_REDIS_SERVER") or shutil.which("redis-server")
    if binary is None:
        raise SystemExit("no redis-server: put one on PATH or set GUILD_REDIS_SERVER")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="guild-bench-redis-") as directory:
        server = subprocess.Popen(
            [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", directory],
            stdout=subprocess.DEVNULL,
        )
        try:
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            server.terminate()
            server.wait(10)
