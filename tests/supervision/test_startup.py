"""Start-up reports: the parent of `guild run --processes N` spawns at once,
imports nothing of the app, and hears from each child that it is ready or why
it cannot start. Real processes throughout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

import guild
from guild.supervision._processes import StartFailed, StartupReport, supervise_processes

from .._poll import until
from ..cli.conftest import ROOT, guild_cmd

pytestmark = pytest.mark.slow

# A child's body: report as $CHILD_PLAN says for its index, then act on it.
CHILD = """
import os, sys, time
from guild.supervision._processes import StartupReport
plan = os.environ["CHILD_PLAN"].split(",")[int(os.environ["GUILD_PROCESS_INDEX"])]
report = StartupReport.from_environ()
assert report is not None
if plan == "ready":
    report.ready({"hello": os.getpid()})
    time.sleep(600)
elif plan == "fail":
    report.failed({"why": "no"})
    sys.exit(2)
elif plan == "fail-after-gate":
    while not os.path.exists(os.environ["CHILD_GATE"]):
        time.sleep(0.01)
    report.failed({"why": "late"})
    sys.exit(2)
elif plan == "silent-exit":
    sys.exit(3)
else:  # "hang": never reports
    time.sleep(600)
"""


def _argv() -> list[str]:
    return [sys.executable, "-c", CHILD]


def _env(plan: str, **more: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "CHILD_PLAN": plan, **more}


async def _restarting(
    count: int, env: dict[str, str], on_ready: Callable[[int, int, Any], None]
) -> tuple[int, list[int]]:
    """Supervise ``count`` children allowed two quick restarts: the exit code, and
    the index of each child spawned, in order (a restart spawns its index again)."""
    started: list[int] = []
    with trio.fail_after(60):
        code = await supervise_processes(
            _argv(),
            count,
            grace=5,
            max_restarts=2,
            backoff=guild.Backoff(initial=0.01, maximum=0.01),
            env=env,
            on_started=lambda index, pid: started.append(index),
            on_ready=on_ready,
        )
    return code, started


class TestReports:
    async def test_a_failed_start_stops_the_fleet_without_a_restart(self) -> None:
        started: list[int] = []
        with trio.fail_after(60), pytest.raises(StartFailed) as failed:
            await supervise_processes(
                _argv(),
                2,
                grace=5,
                env=_env("hang,fail"),
                on_started=lambda index, pid: started.append(index),
                on_ready=lambda index, pid, value: None,
            )
        assert (failed.value.index, failed.value.report) == (1, {"why": "no"})
        # Each spawned once: the failed one was not restarted, the other was stopped.
        assert sorted(started) == [0, 1]

    async def test_ready_reports_reach_on_ready(self) -> None:
        heard: dict[int, Any] = {}
        async with trio.open_nursery() as nursery:
            pids = await nursery.start(
                lambda task_status: supervise_processes(
                    _argv(),
                    2,
                    grace=5,
                    env=_env("ready,ready"),
                    on_ready=lambda index, pid, value: heard.update({index: (pid, value)}),
                    task_status=task_status,
                )
            )
            with trio.fail_after(60):
                await until(lambda: len(heard) == 2)
            nursery.cancel_scope.cancel()
        assert {pid for pid, _ in heard.values()} == set(pids)
        assert all(value == {"hello": pid} for pid, value in heard.values())

    async def test_a_child_that_dies_without_a_word_is_restarted(self) -> None:
        code, started = await _restarting(1, _env("silent-exit"), lambda index, pid, value: None)
        assert code == 1  # gave up, as without reports
        assert started == [0, 0, 0]

    async def test_once_one_was_ready_a_failed_start_is_a_death(self, tmp_path: Path) -> None:
        gate = tmp_path / "gate"
        # Child 1 fails only once child 0's ready was heard.
        code, started = await _restarting(
            2,
            _env("ready,fail-after-gate", CHILD_GATE=str(gate)),
            lambda index, pid, value: gate.touch(),
        )
        assert code == 1  # restarted until the supervisor gave up: no StartFailed
        assert started.count(1) == 3

    def test_no_report_is_owed_without_the_variable(self) -> None:
        assert StartupReport.from_environ({}) is None
        assert StartupReport.from_environ({"GUILD_STARTUP_FD": "x"}) is None


def _guild(cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUILD_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(cwd)])
    return subprocess.run(
        guild_cmd(*args),
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _start(argv: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as sink:
        return subprocess.Popen(argv, cwd=cwd, env=env, stderr=sink)


class TestGuildRun:
    @pytest.mark.parametrize("as_json", [False, True])
    def test_an_app_that_cannot_import_is_one_line_and_exit_2(
        self, tmp_path: Path, as_json: bool
    ) -> None:
        (tmp_path / "boom_app.py").write_text('raise RuntimeError("boom at import")\n')
        url = f"sqlite:///{tmp_path}/jobs.db"
        flags = ["--json"] if as_json else []
        done = _guild(tmp_path, "run", "boom_app:app", "--broker", url, "--processes", "2", *flags)
        assert done.returncode == 2 and done.stdout == ""
        (line,) = done.stderr.splitlines()
        if as_json:
            error = json.loads(line)
            assert (error["type"], error["exit_code"]) == ("ConfigError", 2)
            assert "boom at import" in error["error"]
        else:
            assert line.startswith("guild: error: ") and "boom at import" in line

    async def test_the_parent_never_imports_the_app_and_both_children_work(
        self, tmp_path: Path
    ) -> None:
        # The app notes each process that imports it.
        imports = tmp_path / "imports"
        (tmp_path / "noted_app.py").write_text(
            "import os\n"
            "from tests.cli.apps import slow as app\n"
            f"with open({str(imports)!r}, 'a') as f:\n"
            "    f.write(f'{os.getpid()}\\n')\n"
        )
        url = f"sqlite:///{tmp_path}/jobs.db"
        log = tmp_path / "run.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("GUILD_")}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(tmp_path)])
        env["GUILD_TEST_JOB_SECONDS"] = "0.05"
        argv = guild_cmd("run", "noted_app:app", "--broker", url, "--processes", "2", "--json")
        async with guild.open_broker(url) as broker:
            jobs = await broker.enqueue([guild.Job(queue="work", payload=i) for i in range(400)])
            parent = _start([*argv, "--log-format", "json"], tmp_path, env, log)
            try:
                with trio.fail_after(120):
                    await until(lambda: _done(broker))
                parent.send_signal(signal.SIGTERM)
                code = await trio.to_thread.run_sync(parent.wait, 60)
            finally:
                if parent.poll() is None:
                    parent.kill()
                    parent.wait()
            results = [await broker.get_result(job.id) for job in jobs]
        assert code == 0, log.read_text()[-3000:]
        importers = [int(p) for p in imports.read_text().split()]
        assert parent.pid not in importers and len(importers) == 2
        workers = {r.value["pid"] for r in results if r is not None and r.ok}
        assert workers == set(importers)
        lines = [json.loads(line) for line in log.read_text().splitlines()]
        banners = [i for i, line in enumerate(lines) if line.get("event") == "guild_started"]
        assert len(banners) == 1 and lines[banners[0]]["processes"] == 2
        # The parent's own lines come after the banner: they were held until then.
        parent_lines = [
            i
            for i, line in enumerate(lines)
            if line.get("message") == "child_starting"
            and line["metadata"]["supervisor"] == "processes"
        ]
        assert parent_lines and min(parent_lines) > banners[0]


async def _done(broker: guild.Broker) -> bool:
    return (await broker.stats(["work"]))["work"].done >= 400
