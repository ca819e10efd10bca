"""The ``guild`` command holds the garbage collector off while it starts, and
leaves it running, with what start-up built frozen, once the command is at work."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests._first_job import ROOT, probe_env

_RUN_APP = """
import gc, json
import guild

app = guild.Guild("collector")

@app.worker("q")
async def handle(job: guild.Job) -> None:
    with open({report!r}, "w") as out:
        json.dump({{"enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}}, out)
"""


def run_python(code: str) -> list[str]:
    """The words of the last line ``code`` prints (``--version`` prints one before)."""
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.splitlines()[-1].split()


class TestCommandStartUp:
    def test_the_package_import_freezes_what_it_built_and_collects_again(self) -> None:
        enabled, frozen = run_python(
            """
            import gc
            import guild.cli
            print(gc.isenabled(), gc.get_freeze_count())
            """
        )
        assert enabled == "True"
        # trio's, structlog's and guild's modules and classes: tens of thousands.
        assert int(frozen) > 10_000

    def test_a_collector_the_host_turned_off_stays_off_and_nothing_is_frozen(self) -> None:
        assert run_python(
            """
            import gc
            gc.disable()
            import guild.cli
            try:
                guild.cli.main(["--version"])
            except SystemExit:
                pass
            print(gc.isenabled(), gc.get_freeze_count())
            """
        ) == ["False", "0"]

    def test_a_command_that_ends_early_leaves_the_collector_running(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path}/jobs.db"
        assert run_python(
            f"""
            import gc, sys
            from guild.cli import main
            try:
                main(["--version"])
            except SystemExit:
                pass
            after_version = gc.isenabled()
            sys.path.insert(0, {str(tmp_path)!r})
            code = main(["run", "no_such_module:app", "--broker", {url!r}])
            print(after_version, code, gc.isenabled())
            """
        ) == ["True", "2", "True"]


def test_guild_run_collects_while_its_jobs_run(tmp_path: Path) -> None:
    # A real `guild run`: its one handler reports the collector's state.
    report = tmp_path / "collector.json"
    (tmp_path / "collector_app.py").write_text(textwrap.dedent(_RUN_APP.format(report=str(report))))
    url = f"sqlite:///{tmp_path}/jobs.db"
    env = probe_env(tmp_path)
    subprocess.run(
        [sys.executable, "-m", "guild", "enqueue", "q", "1", "--broker", url],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        check=True,
        timeout=60,
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "guild", "run", "collector_app:app", "--broker", url],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not report.exists() or not report.read_text().endswith("}"):
            assert worker.poll() is None, worker.communicate()[1].decode()
            assert time.monotonic() < deadline, "the job did not run within 60 s"
            time.sleep(0.05)
        seen = json.loads(report.read_text())
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err.decode()
    assert seen["enabled"] is True
    # The app's import (guild's runtime) was frozen too, beyond the package's.
    assert seen["frozen"] > 10_000
