"""``guild run --processes 2`` with stdout or stderr closed, or with a reader that
has gone, still drains and exits 0 on SIGTERM, SIGINT and SIGHUP; under
``nohup`` (SIGHUP ignored) a hang-up is still ignored.

Each run is a real process tree on a real SQLite file; the signal is sent once
each child has run a job, so every process is past installing its handlers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

import guild

from .conftest import ROOT, guild_cmd

GUARD = 120
"""Seconds after which a run that has not exited is a hang (a drain takes about one)."""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUILD_")}
    env["PYTHONPATH"] = str(ROOT)
    env["GUILD_TEST_JOB_SECONDS"] = "0.05"  # long enough that one child cannot take every job
    return env


def _every_child_ran_a_job(url: str) -> None:
    """Run jobs until each of the two children has run one (the app's handler
    returns its pid): both are past start-up, their own signal handlers set, so a
    SIGTERM the parent forwards drains them rather than killing one mid-import."""

    async def until_two_pids() -> None:
        seen: set[int] = set()
        with trio.fail_after(GUARD):
            async with guild.open_broker(url) as broker:
                while len(seen) < 2:
                    batch = [guild.Job(queue="work", payload=n) for n in range(60)]
                    for job in await broker.enqueue(batch):
                        result = await broker.get_result(job.id, wait=GUARD)
                        assert result is not None
                        seen.add(result.value["pid"])

    trio.run(until_two_pids)


def _close(fd: int) -> Callable[[], None]:
    return lambda: os.close(fd)


def _ignore_hang_up() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as nohup does


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stream", "how", "signum"),
    [
        ("stderr", "closed", signal.SIGTERM),
        ("stderr", "reader gone", signal.SIGTERM),
        ("stdout", "closed", signal.SIGTERM),
        ("stdout", "reader gone", signal.SIGINT),
        ("stderr", "closed", signal.SIGINT),
        ("stderr", "reader gone", signal.SIGHUP),
        ("stdout", "closed", signal.SIGHUP),
    ],
)
def test_a_run_with_a_stream_gone_drains_on_a_signal(
    tmp_path: Path, stream: str, how: str, signum: signal.Signals
) -> None:
    url = f"sqlite:///{tmp_path}/guild.db"
    fd = 1 if stream == "stdout" else 2
    argv = guild_cmd("run", "tests.cli.apps:slow", "--broker", url, "--processes", "2")
    kept = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    write = -1
    if how == "reader gone":
        read, write = os.pipe()
        os.close(read)
        kept[stream] = write
    process = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=_env(),
        stdin=subprocess.DEVNULL,
        stdout=kept["stdout"],
        stderr=kept["stderr"],
        preexec_fn=_close(fd) if how == "closed" else None,
    )
    try:
        if write != -1:
            os.close(write)
        _every_child_ran_a_job(url)
        process.send_signal(signum)
        assert process.wait(timeout=GUARD) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # Every child drained too: none is left holding the database.
    children = subprocess.run(
        ["pgrep", "-f", "--", f"--broker {url}"], capture_output=True, check=False
    ).stdout
    assert children == b""


@pytest.mark.slow
def test_a_hang_up_is_ignored_under_nohup(tmp_path: Path) -> None:
    """SIGHUP ignored when the run starts (``nohup guild run``) stays ignored: the
    run drains on the SIGTERM that follows, and says that signal was the one."""
    url = f"sqlite:///{tmp_path}/guild.db"
    log = tmp_path / "run.log"
    argv = guild_cmd(
        "run", "tests.cli.apps:slow", "--broker", url, "--processes", "2", "--log-format", "json"
    )
    with log.open("wb") as sink:
        process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=sink,
            preexec_fn=_ignore_hang_up,
        )
    try:
        _every_child_ran_a_job(url)
        process.send_signal(signal.SIGHUP)
        _every_child_ran_a_job(url)  # still serving after the hang-up
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=GUARD) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    draining = [line["metadata"]["signal"] for line in lines if line["message"] == "draining"]
    # The parent's line, then one from each child it forwarded SIGTERM to.
    assert draining == ["SIGTERM"] * 3, draining
