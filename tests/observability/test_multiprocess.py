"""Two real processes, one port: any of them answers /metrics with the sum of both."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from guild.observability import prepare_multiprocess, process_exited

ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("mp_child.py")


def processed(text: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "guild_jobs_processed_total"
    )


async def _start(port: int, jobs: int, extra_env: dict[str, str]) -> trio.Process:
    env = {**os.environ, **extra_env, "PYTHONPATH": str(ROOT)}
    process = await trio.lowlevel.open_process(
        [sys.executable, str(CHILD), str(port), str(jobs)], stdout=subprocess.PIPE, env=env
    )
    assert process.stdout is not None
    line = b""
    while not line.endswith(b"\n"):
        chunk = await process.stdout.receive_some(1)
        assert chunk, "the child exited before it was ready"
        line += chunk
    assert line == b"ready\n"
    return process


@pytest.mark.slow
class TestMultiprocess:
    """prometheus-client multiprocess mode, as `guild run --processes N` uses it."""

    async def test_every_process_reports_the_total(self, tmp_path: Path) -> None:
        # Hold the port (SO_REUSEPORT, not listening) so both children can bind it.
        holder = socket.socket()
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        children: list[trio.Process] = []
        try:
            with trio.fail_after(60):
                env = prepare_multiprocess(tmp_path)  # what `guild run --processes 2` does
                children.append(await _start(port, 30, env))
                children.append(await _start(port, 50, env))
                holder.close()
                assert len(list(await trio.Path(tmp_path).glob("counter_*.db"))) == 2
                async with httpx.AsyncClient() as client:
                    for _ in range(8):  # new connections: the kernel spreads them over both
                        response = await client.get(
                            f"http://127.0.0.1:{port}/metrics", headers={"connection": "close"}
                        )
                        assert processed(response.text) == 80
                # A child that ends keeps its counts; only its live gauges go.
                first = children.pop(0)
                first.kill()
                await first.wait()
                process_exited(first.pid, tmp_path)
                async with httpx.AsyncClient() as client:
                    response = await client.get(f"http://127.0.0.1:{port}/metrics")
                assert processed(response.text) == 80
        finally:
            holder.close()
            for child in children:
                child.kill()
                await child.wait()
