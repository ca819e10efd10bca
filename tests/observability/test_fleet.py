"""One view of a `guild run --processes 2`: the parent answers for every process.

The pure merge (:mod:`guild.observability._fleet`) is checked against sums and
quantiles written out here; the real thing runs as real processes: a parent,
two children, SQLite, HTTP, and a child killed with SIGKILL.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio_websocket
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

import guild
from guild.observability import Thresholds
from guild.observability._fleet import Member, fleet_health, merge_workers

ROOT = Path(__file__).resolve().parents[2]
JOBS = 40


def worker(**changes: Any) -> dict[str, Any]:
    """One worker of a child's ``/process`` report."""
    base: dict[str, Any] = {
        "queue": "q",
        "state": "running",
        "finished": 0,
        "failed": 0,
        "active": 0,
        "concurrency": 2,
        "idle_for": 1.0,
        "restarts": 0,
        "last_error": None,
        "processed": 0,
        "failed_total": 0,
        "dead_total": 0,
        "broker_error": None,
        "alive": True,
    }
    return {**base, **changes}


def report(samples: list[float], **changes: Any) -> dict[str, Any]:
    return {
        "pid": 1,
        "status": "healthy",
        "workers": {"w": worker(**changes)},
        "samples": {"w": samples},
        "running": [],
        "failures": [],
    }


def health_of(members: list[Member]) -> tuple[dict[str, Any], int]:
    """The run's /health body and status for ``members``: no queues, no broker
    error, default thresholds."""
    return fleet_health(
        "app",
        members,
        queues={},
        broker_error=None,
        issues=(),
        memory=None,
        thresholds=Thresholds(),
        now=0.0,
    )


def nearest_rank(values: list[float], percent: int) -> float:
    ordered = sorted(values)
    n = len(ordered)
    k = -(-percent * n // 100)  # ceil(percent * n / 100) in integers
    return ordered[max(k, 1) - 1]


class TestMerge:
    def test_counts_add_and_the_worst_state_wins(self) -> None:
        a = report([0.1], processed=5, failed_total=1, dead_total=1, active=1, idle_for=9.0)
        b = report([0.2], processed=7, active=2, idle_for=2.0, state="half_open")
        view = merge_workers([a, b], now=100.0)["w"]
        assert (view.processed, view.failed_total, view.dead_total, view.active) == (12, 1, 1, 3)
        assert view.state == "half_open"
        assert view.concurrency == 4
        assert view.last_claim == 98.0  # the most recent claim of either

    @given(
        st.lists(st.integers(1, 10_000).map(lambda i: i / 1000), max_size=60),
        st.lists(st.integers(1, 10_000).map(lambda i: i / 1000), min_size=1, max_size=60),
    )
    def test_quantiles_are_those_of_the_union(self, one: list[float], two: list[float]) -> None:
        view = merge_workers([report(one), report(two)], now=0.0)["w"]
        union = one + two
        assert (view.p50, view.p95, view.p99) == tuple(nearest_rank(union, p) for p in (50, 95, 99))

    def test_a_silent_process_degrades_the_run(self) -> None:
        members = [
            Member(index=0, pid=10, up=True, report=report([0.1], processed=3)),
            Member(index=1, pid=11, up=False, restarts=2, error="not running; being restarted"),
        ]
        body, status = health_of(members)
        assert (status, body["status"]) == (200, "degraded")
        assert body["checks"]["process:1"]["status"] == "degraded"
        assert body["processes"]["1"] == {
            "pid": 11,
            "up": False,
            "restarts": 2,
            "status": None,
            "error": "not running; being restarted",
            "workers": {},
            "totals": {"processed": 0, "failed": 0, "dead": 0, "active": 0},
        }
        assert body["totals"]["processed"] == 3

    def test_the_schedules_come_from_any_process_that_answered(self) -> None:
        hourly = {"name": "h", "queue": "q", "seconds": 3600.0, "next": "2026-03-28T13:00:00+00:00"}
        members = [
            Member(index=0, pid=10, up=False, error="not running; being restarted"),
            Member(index=1, pid=11, up=True, report={**report([0.1]), "periodic": [hourly]}),
        ]
        body, _ = health_of(members)
        assert body["periodic"] == [hourly]
        # A run without schedules (or whose processes are all silent) lists none.
        assert "periodic" not in health_of([Member(index=0, pid=10, up=True, report=report([]))])[0]


# --- real processes -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    # Logs go to a file: a pipe nobody reads would fill up and stall the run.
    with log.open("ab") as sink:
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=sink, stderr=sink)


def metric_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def metric(text: str, name: str, **labels: str) -> float:
    return metric_samples(text)[(name, frozenset(labels.items()))]


async def get_health(base: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(base + "/health")
    body: dict[str, Any] = response.json()
    return body


async def get_metrics(base: str) -> str:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(base + "/metrics")
    assert response.status_code == 200
    return response.text


def both_reporting(body: dict[str, Any]) -> bool:
    processes = body.get("processes", {})
    return len(processes) == 2 and all(p["status"] is not None for p in processes.values())


async def until_both_report(base: str, parent: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until the run's /health has both children's reports (the parent
    must stay up meanwhile: if it dies, its log says why)."""
    body: dict[str, Any] = {}
    while not both_reporting(body):
        assert parent.poll() is None, log.read_text()[-3000:]
        await trio.sleep(0.1)
        try:
            body = await get_health(base)
        except httpx.HTTPError:
            body = {}


def check_whole(body: dict[str, Any], processed: int) -> None:
    """The run's counts are the sum of its processes', and match what was done."""
    processes = body["processes"]
    per = [processes[i]["totals"] for i in ("0", "1")]
    assert body["totals"]["processed"] == sum(p["processed"] for p in per) == processed
    assert body["workers"]["work"]["processed"] == processed
    assert body["totals"]["dead"] == sum(p["dead"] for p in per) == 1
    assert body["workers"]["work"]["dead"] == 1
    assert body["queues"]["work"]["done"] == JOBS
    assert body["queues"]["work"]["dead"] == 1
    assert body["checks"]["process:0"]["status"] == "healthy"
    assert body["checks"]["process:1"]["status"] == "healthy"
    assert [f["error"] for f in body["failures"]] == [
        "ValueError: asked to fail (gave up after 1 of 1 attempts)"
    ]


@pytest.mark.slow
class TestGuildRunProcesses:
    async def test_one_view_of_two_processes(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path}/fleet.db"
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log = tmp_path / "run.log"
        env = {**os.environ, "GUILD_TEST_JOB_SECONDS": "0.1", "PYTHONPATH": str(ROOT)}
        env.pop("GUILD_BROKER", None)
        argv = [sys.executable, "-m", "guild", "run", "tests.observability.fleet_app:app"]
        argv += ["--broker", url, "--processes", "2", "--http", f"127.0.0.1:{port}"]
        argv += ["--log-format", "json"]
        parent = start(argv, env, log)
        try:
            with trio.fail_after(120):
                await self._scenario(url, base, parent, log)
            parent.send_signal(signal.SIGTERM)
            code = await trio.to_thread.run_sync(parent.wait)
            assert code == 0, log.read_text()[-3000:]
        finally:
            if parent.poll() is None:
                parent.kill()
                parent.wait()

    async def _scenario(
        self, url: str, base: str, parent: subprocess.Popen[bytes], log: Path
    ) -> None:
        await until_both_report(base, parent, log)
        async with guild.open_broker(url) as broker:
            await broker.enqueue(
                [guild.Job(queue="work", payload=i) for i in range(JOBS)]
                + [guild.Job(queue="work", payload="fail", max_attempts=1)]
            )
            while True:
                stats = (await broker.stats(["work"]))["work"]
                if stats.done == JOBS and stats.dead == 1:
                    break
                await trio.sleep(0.05)
        # 2 handlers a child and 0.1 s a job: both children ran some.
        seen: list[dict[str, Any]] = []
        for _ in range(10):
            body = await get_health(base)
            check_whole(body, JOBS)
            seen.append({i: (p["pid"], p["totals"]) for i, p in body["processes"].items()})
        assert all(s == seen[0] for s in seen), "10 calls, one answer"
        pids = {i: pid for i, (pid, _) in seen[0].items()}
        per = {i: totals["processed"] for i, (_, totals) in seen[0].items()}
        assert all(count > 0 for count in per.values()), per
        for _ in range(10):
            text = await get_metrics(base)
            assert metric(text, "guild_jobs_processed_total", app="fleet", worker="work") == JOBS
            assert metric(text, "guild_jobs_dead_total", app="fleet", worker="work") == 1
            for index, count in per.items():
                labels = {"app": "fleet", "process": index}
                assert metric(text, "guild_process_jobs_processed", **labels) == count
                assert metric(text, "guild_process_up", **labels) == 1
            labels = {"app": "fleet", "queue": "work", "status": "dead"}
            assert metric(text, "guild_queue_jobs", **labels) == 1
        status = await trio.to_thread.run_sync(
            lambda: subprocess.run(
                [sys.executable, "-m", "guild", "status", "--url", base, "--json"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=False,
            )
        )
        assert status.returncode == 1, status.stdout  # degraded: 1 of 41 attempts failed
        check_whole(json.loads(status.stdout), JOBS)
        await self._events(url, base, pids)
        # Flushed to the shared directory once a second: wait for the last jobs.
        while True:
            text = await get_metrics(base)
            if metric(text, "guild_jobs_processed_total", app="fleet", worker="work") == JOBS + 8:
                break
            await trio.sleep(0.1)
        await self._kill_one(base, pids, parent, log)

    async def _events(self, url: str, base: str, pids: dict[str, int]) -> None:
        """/events: one hello for the run, then events tagged with their process."""
        async with trio_websocket.open_websocket_url(base.replace("http", "ws") + "/events") as ws:
            (hello,) = json.loads(await ws.get_message())
            assert hello["type"] == "hello"
            assert {i: p["pid"] for i, p in hello["processes"].items()} == pids
            assert hello["workers"]["work"]["state"] == "running"
            async with guild.open_broker(url) as broker:
                await broker.enqueue([guild.Job(queue="work", payload=i) for i in range(8)])
            finished: dict[int, int] = {}
            while sum(finished.values()) < 8:
                for event in json.loads(await ws.get_message()):
                    if event["type"] == "job_finished":
                        finished[event["process"]] = finished.get(event["process"], 0) + 1
            assert set(finished) == {0, 1}, finished

    async def _kill_one(
        self,
        base: str,
        pids: dict[str, int],
        parent: subprocess.Popen[bytes],
        log: Path,
    ) -> None:
        os.kill(pids["0"], signal.SIGKILL)
        while True:
            assert parent.poll() is None, log.read_text()[-3000:]
            body = await get_health(base)
            zero = body["processes"]["0"]
            if zero["pid"] != pids["0"] and zero["status"] is not None:
                break
            await trio.sleep(0.1)
        assert zero["up"] and zero["restarts"] == 1
        assert body["processes"]["1"]["pid"] == pids["1"]
        assert body["processes"]["1"]["restarts"] == 0
        # /health counts what live processes did since they started; the new
        # child has done nothing yet.
        assert zero["totals"]["processed"] == 0
        assert body["totals"]["processed"] == body["processes"]["1"]["totals"]["processed"]
        # /metrics keeps the dead child's counts: every job ever done, by any child.
        text = await get_metrics(base)
        total = metric(text, "guild_jobs_processed_total", app="fleet", worker="work")
        assert total == JOBS + 8
        assert metric(text, "guild_process_restarts", app="fleet", process="0") == 1
        assert metric(text, "guild_process_restarts", app="fleet", process="1") == 0


class TestParentServer:
    """The parent's own server, with no child up: it still answers, and keeps the rules."""

    async def test_answers_alone_and_keeps_the_token(self, tmp_path: Path) -> None:
        from guild.observability._access import Access
        from guild.observability._fleet_http import Fleet, FleetApp, serve_fleet_http

        fleet = Fleet(2, str(tmp_path))
        broker = guild.MemoryBroker()
        await broker.enqueue([guild.Job(queue="q", payload=1)])
        asgi = FleetApp(
            "alone",
            fleet,
            broker,
            host="127.0.0.1",
            access=Access(token="s3cret", loopback=False),
            timeout=1.0,
        )
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                port = await nursery.start(
                    functools.partial(serve_fleet_http, asgi, host="127.0.0.1", port=0)
                )
                base = f"http://127.0.0.1:{port}"
                body = await get_health(base)
                assert body["status"] == "degraded"
                assert body["queues"]["q"]["ready"] == 1
                assert {i: p["error"] for i, p in body["processes"].items()} == {
                    "0": "not started yet",
                    "1": "not started yet",
                }
                text = await get_metrics(base)
                assert metric(text, "guild_process_up", app="alone", process="0") == 0
                assert metric(text, "guild_queue_jobs", app="alone", queue="q", status="ready") == 1
                # By hand: trio-websocket leaves its socket open when refused.
                upgrade = {
                    "connection": "Upgrade",
                    "upgrade": "websocket",
                    "sec-websocket-version": "13",
                    "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
                }
                async with httpx.AsyncClient() as client:
                    refused = await client.get(base + "/events", headers=upgrade)
                assert refused.status_code == 403
                headers = [(b"authorization", b"Bearer s3cret")]
                async with trio_websocket.open_websocket_url(
                    f"ws://127.0.0.1:{port}/events", extra_headers=headers
                ) as ws:
                    (hello,) = json.loads(await ws.get_message())
                assert (hello["type"], hello["processes"]) == ("hello", {})
                # The dashboard is the parent's own, under the same rules, children or not.
                bearer = {"authorization": "Bearer s3cret"}
                async with httpx.AsyncClient() as client:
                    anonymous = await client.get(base + "/api/state")
                    state = (await client.get(base + "/api/state", headers=bearer)).json()
                    act = await client.post(
                        base + "/api/jobs/cancel", json={"ids": ["nope"]}, headers=bearer
                    )
                assert anonymous.status_code == 401
                assert (state["app"], state["running"], state["workers"]) == ("alone", [], {})
                assert state["queues"]["q"]["ready"] == 1
                assert {i: p["error"] for i, p in state["processes"].items()} == {
                    "0": "not started yet",
                    "1": "not started yet",
                }
                assert (act.status_code, act.json()) == (200, {"cancelled": []})
                nursery.cancel_scope.cancel()
