"""A run's system tasks (HTTP server, rollout recorder, canary controller) are
supervised like workers: a crash in one is restarted with the app's backoff,
logged with its cause and counted, and the workers go on."""

from __future__ import annotations

import functools
import math
import os
import socket

import httpx
import pytest
import structlog
import trio
import trio.testing

import guild
from guild.cli._run import _listen
from guild.observability._events import Instrument, WorkerStateChanged
from guild.observability._metrics import PrometheusInstrument
from guild.rollout._serve import run_app
from guild.supervision import ChildSpec
from tests._poll import until


class _States(Instrument):
    def __init__(self) -> None:
        self.services: list[tuple[str, str]] = []
        self.workers: list[tuple[str, str]] = []
        self.crashed = trio.Event()

    def service_state_changed(self, event: WorkerStateChanged) -> None:
        self.services.append((event.worker, event.state))
        if event.state == "crashed":
            self.crashed.set()

    def worker_state_changed(self, event: WorkerStateChanged) -> None:
        self.workers.append((event.worker, event.state))


def _app(states: _States, metrics: PrometheusInstrument, done: list[object]) -> guild.Guild:
    app = guild.Guild(
        "svc",
        instruments=[states, metrics],
        # Exact restart delays: 0.5 s, then 1 s.
        supervision=guild.SupervisorOptions(
            backoff=guild.Backoff(initial=0.5, maximum=10.0, jitter=0.0)
        ),
        workflow_poll=None,
    )

    @app.worker("q")
    async def handle(job: guild.Job) -> None:
        done.append(job.payload)

    return app


def _restarts(metrics: PrometheusInstrument, service: str) -> float | None:
    return metrics.registry.get_sample_value(
        "guild_service_restarts_total", {"app": "svc", "service": service}
    )


async def test_a_crashing_rollout_recorder_is_restarted_and_the_workers_go_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = guild.MemoryBroker()
    # A damaged rollout record: the recorder's first read of the rollouts fails
    # with an error nobody expected (not BrokerUnavailable).
    broker.canary_records["q"] = (1, "{not json")
    states, metrics = _States(), PrometheusInstrument("svc")
    done: list[object] = []
    app = _app(states, metrics, done)
    stop = trio.Event()
    with structlog.testing.capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_app, app, broker, stop)
            await states.crashed.wait()
            crashed_at = trio.current_time()
            del broker.canary_records["q"]  # repaired: the restarted recorder reads none
            await broker.enqueue([guild.Job(queue="q", payload="after the crash")])
            await trio.sleep(5.0)
            stop.set()
    assert done == ["after the crash"]
    assert ("rollout-recorder", "crashed") in states.services
    recorder = [state for name, state in states.services if name == "rollout-recorder"]
    assert recorder[:6] == ["starting", "running", "crashed", "restarting", "starting", "running"]
    # The worker never left running until the drain.
    assert [s for w, s in states.workers if w == "q"][:2] == ["starting", "running"]
    assert "crashed" not in [s for w, s in states.workers if w == "q"]
    # The recorder reads every 0.5 s: its first read crashed it.
    assert crashed_at == pytest.approx(0.5)
    crash = [line for line in logs if line["event"] == "child_crashed"]
    assert len(crash) == 1
    assert crash[0]["child"] == "rollout-recorder"
    assert crash[0]["supervisor"] == "svc.services"
    assert "JSONDecodeError" in crash[0]["last_error"] or "ValueError" in crash[0]["last_error"]
    assert _restarts(metrics, "rollout-recorder") == 1.0


async def test_a_service_crash_loop_gives_up_like_a_worker(
    autojump_clock: trio.testing.MockClock,
) -> None:
    states, metrics = _States(), PrometheusInstrument("svc")
    app = _app(states, metrics, [])
    starts: list[float] = []

    async def always_crashes(*, task_status: trio.TaskStatus[None]) -> None:
        starts.append(trio.current_time())
        task_status.started()
        await trio.sleep(0.1)
        raise RuntimeError("broken service")

    async def serve_it() -> None:
        async with app.open_services() as services:
            await services.start_child(ChildSpec(name="broken", start=always_crashes))
            await trio.sleep(math.inf)

    with pytest.raises(guild.GaveUp) as raised:
        await serve_it()
    # Five restarts are allowed within 30 s (SupervisorOptions): the sixth crash
    # gives up. Starts at 0, then each crash 0.1 s in plus the backoff
    # 0.5, 1, 2, 4, 8 s.
    expected = [0.0, 0.6, 1.7, 3.8, 7.9, 16.0]
    assert starts == pytest.approx(expected)
    assert raised.value.supervisor == "svc.services"
    assert "RuntimeError: broken service" in raised.value.last_error
    assert _restarts(metrics, "broken") == 5.0


async def test_the_value_a_service_starts_with_is_returned(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # guild run's HTTP service reports its bound port this way.
    app = guild.Guild("svc", workflow_poll=None)

    async def listens(*, task_status: trio.TaskStatus[int]) -> None:
        task_status.started(8123)
        await trio.sleep(math.inf)

    async with app.open_services() as services:
        assert await services.start_child(ChildSpec(name="http", start=listens)) == 8123


async def test_a_crashed_http_server_is_restarted_on_its_port_while_the_workers_go_on() -> None:
    states, metrics = _States(), PrometheusInstrument("svc")
    done: list[object] = []
    app = _app(states, metrics, done)
    broker = guild.MemoryBroker()
    stop = trio.Event()
    with trio.fail_after(30), structlog.testing.capture_logs() as logs:
        async with app.open_services() as services, httpx.AsyncClient(timeout=5.0) as client:
            # As `guild run --http 127.0.0.1:0` starts it.
            port = await _listen(services, app, "127.0.0.1", 0)
            url = f"http://127.0.0.1:{port}"
            async with trio.open_nursery() as nursery:
                nursery.start_soon(functools.partial(run_app, app, broker, stop, services=services))
                await broker.enqueue([guild.Job(queue="q", payload="before")])
                await until(lambda: done == ["before"])
                assert (await client.get(f"{url}/health")).status_code == 200
                # The fault: the listening socket breaks under hypercorn, whose
                # accept loop fails with it (EINVAL) and ends the server.
                _break_listener(port)
                await states.crashed.wait()
                assert ("http", "crashed") in states.services
                await broker.enqueue([guild.Job(queue="q", payload="while it was down")])
                await until(lambda: _serves(client, f"{url}/health"))
                scrape = (await client.get(f"{url}/metrics")).text
                await broker.enqueue([guild.Job(queue="q", payload="after")])
                await until(lambda: len(done) == 3)
                stop.set()
    assert sorted(map(str, done)) == ["after", "before", "while it was down"]
    http = [state for name, state in states.services if name == "http"]
    assert http[:6] == ["starting", "running", "crashed", "restarting", "starting", "running"]
    assert "crashed" not in [state for name, state in states.workers if name == "q"]
    # The restarted server answers /metrics with its own restart counted.
    assert 'guild_service_restarts_total{app="svc",service="http"} 1.0' in scrape
    crash = [line for line in logs if line["event"] == "child_crashed"]
    assert [line["child"] for line in crash] == ["http"]
    assert "Invalid argument" in crash[0]["last_error"], crash[0]["last_error"]


def _break_listener(port: int) -> None:
    """Shut down this process's socket listening on ``port``: its next accept fails."""
    for name in os.listdir("/proc/self/fd"):
        try:
            sock = socket.socket(fileno=os.dup(int(name)))
        except OSError:  # not a socket (or closed meanwhile)
            continue
        with sock:
            listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
            if listening and sock.getsockname()[1] == port:
                sock.shutdown(socket.SHUT_RDWR)
                return
    raise AssertionError(f"nothing listens on port {port}")


async def _serves(client: httpx.AsyncClient, url: str) -> bool:
    try:
        return (await client.get(url)).status_code == 200
    except httpx.TransportError:  # refused while the server restarts
        return False
