"""`guild run` says where it is at start: version, app, broker, queues, HTTP address;
and warns of periodic jobs that no worker of the app will take."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
from pathlib import Path

import httpx
import pytest
import trio

import guild
from guild.brokers._url import display_url
from guild.cli._banner import banner, render, unserved_schedules

from .apps import quick, sandboxed, scheduled
from .conftest import ROOT, guild_cmd

VERSION = re.findall(r'__version__ = "(.+)"', (ROOT / "guild" / "_version.py").read_text())[0]
"""The version as the source file states it, read without importing guild."""

SCHEDULED_QUEUES = [
    {"queue": "mail", "worker": "mailer", "concurrency": 2},
    {"queue": "reports", "worker": "reports", "concurrency": 3},
]
WARNING = (
    "periodic job 'nightly-cleanup' goes to queue 'cleanup', which no worker of this app"
    " serves: its jobs will wait for another app"
)


class TestFacts:
    """The banner's facts and text, from an app with two workers and two schedules."""

    def test_facts(self) -> None:
        facts = banner(
            scheduled, broker="sqlite:///srv/jobs.db", http=("127.0.0.1", 8123), processes=1
        )
        assert facts == {
            "event": "guild_started",
            "version": VERSION,
            "app": "scheduled",
            "broker": "sqlite:///srv/jobs.db",
            "processes": 1,
            "queues": SCHEDULED_QUEUES,
            "http": "http://127.0.0.1:8123",
        }

    def test_text(self) -> None:
        facts = banner(scheduled, broker="memory://", http=("::1", 9000), processes=4)
        assert render(facts).splitlines() == [
            f"guild {VERSION} running app 'scheduled' in 4 processes",
            "  broker:  memory://",
            "  queues:  mail (concurrency 2, worker mailer), reports (concurrency 3)",
            "  http:    http://[::1]:9000",
        ]

    def test_the_sandbox_a_worker_holds_is_named(self) -> None:
        facts = banner(sandboxed, broker="memory://", http=None, processes=1)
        assert facts["sandbox"] == "none"
        assert render(facts).splitlines()[-1] == "  sandbox: none isolation"
        assert "sandbox" not in banner(quick, broker="memory://", http=None, processes=1)

    def test_only_the_unserved_schedule_is_reported(self) -> None:
        assert [(p.name, p.queue) for p in unserved_schedules(scheduled)] == [
            ("nightly-cleanup", "cleanup")
        ]
        assert unserved_schedules(quick) == []


class TestPeriodic:
    """Given the time, the banner lists each periodic job's next fire, in its zone."""

    def test_next_fires_in_the_zone(self) -> None:
        app = guild.Guild("zoned")
        app.periodic(3600, "reports", name="hourly")
        app.periodic(guild.Cron("30 2 * * *", tz="Europe/Paris"), "cleanup", name="nightly")
        app.periodic(guild.Cron("0 9 * * 1-5", tz="America/New_York"), "mail", name="opening")
        # 2026-03-28 12:00 UTC: Paris skips 02:00-03:00 the next night, so 02:30
        # fires as the clock jumps to 03:00 CEST; New York is on EDT (UTC-4) since
        # 2026-03-08, and the 28th is a Saturday.
        now = dt.datetime(2026, 3, 28, 12, tzinfo=dt.UTC)
        facts = banner(app, broker="memory://", http=None, processes=1, now=now)
        assert facts["periodic"] == [
            {
                "name": "hourly",
                "queue": "reports",
                "seconds": 3600.0,
                "next": "2026-03-28T13:00:00+00:00",
            },
            {
                "name": "nightly",
                "queue": "cleanup",
                "cron": "30 2 * * *",
                "tz": "Europe/Paris",
                "next": "2026-03-29T03:00:00+02:00",
            },
            {
                "name": "opening",
                "queue": "mail",
                "cron": "0 9 * * 1-5",
                "tz": "America/New_York",
                "next": "2026-03-30T09:00:00-04:00",
            },
        ]
        assert render(facts).splitlines()[4:] == [
            "  periodic: hourly (every 3600 s) to reports, next 2026-03-28 13:00 UTC",
            "            nightly (cron '30 2 * * *' Europe/Paris) to cleanup,"
            " next 2026-03-29 03:00 +02:00",
            "            opening (cron '0 9 * * 1-5' America/New_York) to mail,"
            " next 2026-03-30 09:00 -04:00",
        ]

    def test_without_the_time_no_schedules_are_listed(self) -> None:
        assert "periodic" not in banner(scheduled, broker="memory://", http=None, processes=1)


class TestDisplayUrl:
    """What the banner shows of a broker URL: an absolute SQLite path, no password."""

    @pytest.mark.parametrize(
        ("url", "shown"),
        [
            ("redis://:s3cret@cache:6379/2", "redis://:***@cache:6379/2"),
            ("rediss://ops:p%40ss@cache/0", "rediss://ops:***@cache/0"),
            ("redis://cache:6379/0?password=s3cret&db=1", "redis://cache:6379/0?password=***&db=1"),
            ("redis+cluster://u:pw@node1:7000", "redis+cluster://u:***@node1:7000"),
            ("redis://cache:6379/0", "redis://cache:6379/0"),
            ("memory://", "memory://"),
            ("sqlite:///srv/jobs.db?synchronous=FULL", "sqlite:///srv/jobs.db?synchronous=FULL"),
            ("sqlite:////srv/jobs.db", "sqlite:///srv/jobs.db"),
        ],
    )
    def test_shown(self, url: str, shown: str) -> None:
        assert display_url(url) == shown

    def test_a_relative_sqlite_path_is_shown_absolute(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        assert display_url("sqlite:jobs.db") == f"sqlite://{tmp_path}/jobs.db"


async def _lines(log: Path, count: int) -> list[str]:
    while True:
        lines = log.read_text().splitlines()
        if len(lines) >= count:
            return lines[:count]
        await trio.sleep(0.05)


def _start(
    tmp_path: Path, log: Path, target: str, options: tuple[str, ...]
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUILD_")}
    env["PYTHONPATH"] = str(ROOT)
    # stderr goes to a file: a pipe nobody reads could fill up and stall the app.
    with log.open("wb") as sink:
        return subprocess.Popen(
            guild_cmd("run", target, "--log-level", "warning", *options),
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )


async def _run_until_banner(
    tmp_path: Path,
    *options: str,
    lines: int,
    target: str = "tests.cli.apps:scheduled",
    health_out: dict[str, object] | None = None,
) -> list[str]:
    """Start `guild run` on ``target`` in ``tmp_path``, return its first stderr
    lines, then stop it with SIGINT (it must drain and exit 0)."""
    log = tmp_path / "stderr.log"
    process = _start(tmp_path, log, target, options)
    try:
        with trio.fail_after(60):
            found = await _lines(log, lines)
            if "--http" in options:
                address = json.loads(found[0])["http"]
                async with httpx.AsyncClient() as client:
                    health = await client.get(address + "/health")
                assert health.json()["app"] == target.rpartition(":")[2]
                if health_out is not None:
                    health_out.update(health.json())
    finally:
        process.send_signal(signal.SIGINT)
        code = await trio.to_thread.run_sync(process.wait)
    assert code == 0, log.read_text()
    return found


@pytest.mark.slow
async def test_json_banner_of_a_real_run(tmp_path: Path) -> None:
    first, second = await _run_until_banner(
        tmp_path, "--broker", "sqlite:jobs.db", "--http", "127.0.0.1:0", "--json", lines=2
    )
    facts = json.loads(first)
    port = int(facts.pop("http").rpartition(":")[2])
    assert port > 0  # the port bound, not the 0 asked for
    periodic = facts.pop("periodic")
    # The next fires depend on when the test runs: their form is checked, and
    # their values by TestPeriodic below.
    assert [{k: v for k, v in p.items() if k != "next"} for p in periodic] == [
        {"name": "hourly-report", "queue": "reports", "seconds": 3600.0},
        {"name": "nightly-cleanup", "queue": "cleanup", "cron": "0 3 * * *", "tz": "UTC"},
    ]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:00:00\+00:00", periodic[0]["next"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT03:00:00\+00:00", periodic[1]["next"])
    assert facts == {
        "event": "guild_started",
        "version": VERSION,
        "app": "scheduled",
        "broker": f"sqlite://{tmp_path}/jobs.db",
        "processes": 1,
        "queues": SCHEDULED_QUEUES,
    }
    assert json.loads(second) == {"warning": WARNING}


@pytest.mark.slow
async def test_human_banner_of_a_real_run(tmp_path: Path) -> None:
    found = await _run_until_banner(tmp_path, "--broker", f"sqlite:///{tmp_path}/j.db", lines=7)
    assert found[:4] + found[6:] == [
        f"guild {VERSION} running app 'scheduled'",
        f"  broker:  sqlite://{tmp_path}/j.db",
        "  queues:  mail (concurrency 2, worker mailer), reports (concurrency 3)",
        "  http:    off (--http HOST:PORT to serve /health, /metrics)",
        f"guild: warning: {WARNING}",
    ]
    day = r"\d{4}-\d\d-\d\d"
    assert re.fullmatch(
        rf"  periodic: hourly-report \(every 3600 s\) to reports, next {day} \d\d:00 UTC",
        found[4],
    )
    assert re.fullmatch(
        rf"            nightly-cleanup \(cron '0 3 \* \* \*' UTC\) to cleanup, next {day} 03:00 UTC",
        found[5],
    )


@pytest.mark.slow
async def test_a_real_run_names_the_sandbox_isolation(tmp_path: Path) -> None:
    health: dict[str, object] = {}
    (line,) = await _run_until_banner(
        tmp_path,
        "--broker",
        "memory://",
        "--http",
        "127.0.0.1:0",
        "--json",
        lines=1,
        target="tests.cli.apps:sandboxed",
        health_out=health,
    )
    facts = json.loads(line)
    assert (facts["app"], facts["sandbox"]) == ("sandboxed", "none")
    # /health says it too (tests.cli.apps:sandboxed asks for isolate="never").
    assert health["sandbox"] == {"isolation": "none"}
