"""``guild status`` and ``guild top`` against a real server."""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import re

import pytest
import trio

import guild
from guild import MemoryBroker
from guild.cli import _status, _top
from guild.observability import JobStarted, Outcome, observe, serve_http

from .conftest import Served
from .helpers import finished, state


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="guild")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _status.register(subparsers)
    _top.register(subparsers)
    return parser.parse_args(argv)


class TestStatus:
    """``guild status`` prints the verdict and per-worker figures; its exit code is the verdict."""

    async def test_healthy_table(self, served: Served, capsys: pytest.CaptureFixture[str]) -> None:
        served.app.instruments.emit("worker_state_changed", state("emails", "running"))
        for _ in range(3):
            served.app.instruments.emit("job_finished", finished("emails"))
        with trio.fail_after(10):
            code = await _status.status(parse("status", "--url", served.url))
        out = capsys.readouterr().out
        assert code == 0
        assert out.startswith("shop: healthy")
        row = next(line for line in out.splitlines() if line.startswith("emails"))
        assert row.split()[:5] == ["emails", "emails", "running", "0", "3"]

    async def test_degraded_and_unhealthy_exit_codes(
        self, served: Served, capsys: pytest.CaptureFixture[str]
    ) -> None:
        served.app.instruments.emit("job_finished", finished("emails", Outcome.DEAD))
        with trio.fail_after(10):
            assert await _status.status(parse("status", "--url", served.url)) == 1
            assert "worker:emails:error_rate: degraded" in capsys.readouterr().out
            served.app.instruments.emit("worker_state_changed", state("emails", "open"))
            assert await _status.status(parse("status", "--url", served.url, "--json")) == 2
        assert '"status": "unhealthy"' in capsys.readouterr().out

    async def test_unreachable_server(self, capsys: pytest.CaptureFixture[str]) -> None:
        with trio.fail_after(10):
            # Port 1 on loopback: nothing listens there, the connection is refused.
            code = await _status.status(parse("status", "--url", "http://127.0.0.1:1"))
        assert code == 3
        # The failure is an error: on stderr, with stdout left for the answer.
        out, err = capsys.readouterr()
        assert out == "" and "cannot read" in err


# Saturday 2026-03-28 12:34:56 UTC, as the app's wall clock.
_NOW = dt.datetime(2026, 3, 28, 12, 34, 56, tzinfo=dt.UTC).timestamp()
# Written out: the next aligned hour; Paris skips 02:00-03:00 that night (CET to
# CEST), so 02:30 fires as the clock jumps to 03:00 +02:00; the next 5th minute.
_UPCOMING = [
    {"name": "hourly", "queue": "reports", "seconds": 3600.0, "next": "2026-03-28T13:00:00+00:00"},
    {
        "name": "nightly",
        "queue": "cleanup",
        "cron": "30 2 * * *",
        "tz": "Europe/Paris",
        "next": "2026-03-29T03:00:00+02:00",
    },
    {
        "name": "poll",
        "queue": "emails",
        "cron": "*/5 * * * *",
        "tz": "UTC",
        "next": "2026-03-28T12:35:00+00:00",
    },
]


class TestStatusPeriodic:
    """``guild status`` lists each periodic job with its next fire, by the app's clock."""

    async def test_next_fires_in_json_and_table(
        self, nursery: trio.Nursery, capsys: pytest.CaptureFixture[str]
    ) -> None:
        clock = [_NOW]
        app = guild.Guild("shop", broker=MemoryBroker(), wall_clock=lambda: clock[0])
        app.periodic("*/5 * * * *", "emails", name="poll")
        app.periodic(3600, "reports", name="hourly")
        app.periodic(guild.Cron("30 2 * * *", tz="Europe/Paris"), "cleanup", name="nightly")
        observe(app, buffer=64, logs=False)
        port = await nursery.start(functools.partial(serve_http, app, port=0))
        url = f"http://127.0.0.1:{port}"
        with trio.fail_after(10):
            await _status.status(parse("status", "--url", url, "--json"))
            assert json.loads(capsys.readouterr().out)["periodic"] == _UPCOMING

            await _status.status(parse("status", "--url", url))
            lines = capsys.readouterr().out.splitlines()
            at = lines.index(next(line for line in lines if line.startswith("periodic")))
            assert [re.split(r"\s{2,}", line) for line in lines[at : at + 4]] == [
                ["periodic", "queue", "schedule", "next"],
                ["hourly", "reports", "every 3600 s", "2026-03-28 13:00:00 UTC"],
                [
                    "nightly",
                    "cleanup",
                    "cron '30 2 * * *' Europe/Paris",
                    "2026-03-29 03:00:00 +02:00",
                ],
                ["poll", "emails", "cron '*/5 * * * *' UTC", "2026-03-28 12:35:00 UTC"],
            ]

            # On a tick, the next one is the one after it.
            clock[0] = dt.datetime(2026, 3, 28, 13, tzinfo=dt.UTC).timestamp()
            await _status.status(parse("status", "--url", url, "--json"))
            hourly, _, poll = json.loads(capsys.readouterr().out)["periodic"]
            assert (hourly["next"], poll["next"]) == (
                "2026-03-28T14:00:00+00:00",
                "2026-03-28T13:05:00+00:00",
            )

    async def test_an_app_without_schedules_has_no_periodic(
        self, served: Served, capsys: pytest.CaptureFixture[str]
    ) -> None:
        with trio.fail_after(10):
            await _status.status(parse("status", "--url", served.url, "--json"))
        assert "periodic" not in json.loads(capsys.readouterr().out)


class TestTop:
    """``guild top`` folds the /events feed into one row per worker."""

    async def test_a_frame_shows_workers_and_counts(
        self, served: Served, capsys: pytest.CaptureFixture[str], nursery: trio.Nursery
    ) -> None:
        served.app.instruments.emit("worker_state_changed", state("emails", "running"))

        async def traffic() -> None:
            while True:
                started = JobStarted(worker="emails", job=finished("emails").job, at=0.0)
                served.app.instruments.emit("job_started", started)
                served.app.instruments.emit(
                    "job_finished", finished("emails", Outcome.RETRY, job=started.job)
                )
                await trio.sleep(0.01)

        nursery.start_soon(traffic)
        with trio.fail_after(10):
            code = await _top.top(parse("top", "--url", served.url, "--interval", "0.5", "--once"))
        out = capsys.readouterr().out
        assert code == 0
        assert out.startswith("shop: 1 workers")
        row = next(line for line in out.splitlines() if line.startswith("emails")).split()
        assert row[:3] == ["emails", "emails", "running"]
        finished_count, failed = int(row[5]), int(row[6])
        assert finished_count == failed > 0

    def test_view_counts_in_flight_jobs(self) -> None:
        view = _top.TopView()
        view.apply(
            {
                "type": "hello",
                "app": "a",
                "workers": {"w": {"queue": "q", "state": "running", "active": 2}},
            }
        )
        view.apply({"type": "job_started", "worker": "w", "queue": "q", "task_id": "t1"})
        view.apply(
            {"type": "job_finished", "worker": "w", "queue": "q", "task_id": "x", "outcome": "done"}
        )
        view.apply({"type": "worker_state", "worker": "w", "state": "crashed"})
        row = view.frame(elapsed=2.0).splitlines()[-1].split()
        assert row == ["w", "q", "crashed", "0.5", "2", "1", "0"]

    async def test_unreachable_server(self, capsys: pytest.CaptureFixture[str]) -> None:
        with trio.fail_after(10):
            code = await _top.top(parse("top", "--url", "http://127.0.0.1:1", "--once"))
        assert code == 3
        out, err = capsys.readouterr()
        # The handshake error says nothing itself: the line names its cause.
        assert out == "" and "cannot watch ws://127.0.0.1:1/events" in err
        assert "HandshakeError: OSError: all attempts to connect to 127.0.0.1:1 failed" in err
