"""`guild run --processes 2` as real processes: a SIGKILLed child is replaced, no job is lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import trio

import guild

from .._poll import until
from ..cli.conftest import ROOT, guild_cmd, run_guild

JOBS = 3000


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                found |= {int(p) for p in handle.read().split()}
        except FileNotFoundError:
            continue
    return found


def _start_fleet(url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "GUILD_TEST_JOB_SECONDS": "0.02"}
    env.pop("GUILD_BROKER", None)
    argv = ["run", "tests.cli.apps:slow", "--broker", url, "--processes", "2"]
    with log.open("ab") as sink:
        return subprocess.Popen(
            guild_cmd(*argv, "--log-format", "json"), cwd=ROOT, env=env, stdout=sink, stderr=sink
        )


async def _done(broker: guild.Broker, count: int) -> bool:
    return (await broker.stats(["work"]))["work"].done >= count


class TestProcessSupervisor:
    async def test_killed_child_is_replaced_and_nothing_is_lost(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path}/fleet.db"
        log = tmp_path / "fleet.log"
        with trio.fail_after(180):
            async with guild.open_broker(url) as broker:
                jobs = await broker.enqueue(
                    [guild.Job(queue="work", payload=i, max_attempts=5) for i in range(JOBS)]
                )
                parent = _start_fleet(url, log)
                try:
                    await until(lambda: len(_children(parent.pid)) == 2)
                    first = _children(parent.pid)
                    await until(lambda: _done(broker, 200))
                    victim = min(first)
                    os.kill(victim, signal.SIGKILL)
                    # Back to two children, one of them new.
                    while True:
                        now = _children(parent.pid)
                        if len(now) == 2 and victim not in now:
                            break
                        await trio.sleep(0.05)
                    assert len(now & first) == 1
                    await until(lambda: _done(broker, JOBS))
                    parent.send_signal(signal.SIGTERM)
                    code = await trio.to_thread.run_sync(parent.wait)
                finally:
                    if parent.poll() is None:
                        parent.kill()
                        parent.wait()
                assert code == 0, log.read_text()[-3000:]
                assert _children(parent.pid) == set()
                stats = (await broker.stats(["work"]))["work"]
                assert (stats.done, stats.dead, stats.ready, stats.in_flight) == (JOBS, 0, 0, 0)
                results = [await broker.get_result(job.id) for job in jobs]
                assert all(r is not None and r.ok for r in results)
                pids = {r.value["pid"] for r in results if r is not None}
                # Three processes did the work: the two first children and the replacement.
                assert len(pids) == 3
        text = log.read_text()
        assert '"event": "process_started"' in text or "process_started" in text


class TestTopSupervisorGivesUp:
    def test_guild_run_exits_non_zero_with_one_clear_line(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path}/doomed.db"
        enqueue = run_guild("enqueue", "doomed", "{}", "--broker", url)
        assert enqueue.returncode == 0, enqueue.stderr
        run = run_guild("run", "tests.cli.apps:doomed", "--broker", url, timeout=60)
        assert run.returncode == 1, run.stderr
        output = run.stdout + run.stderr
        assert "supervisor 'doomed' gave up: 3 restarts within 60s" in output
        assert "DependencyFailure: the database is gone" in output
        # The job was handed back, not lost: it waits for a healthy worker.
        stats = run_guild("stats", "--broker", url, "--json")
        queue = json.loads(stats.stdout)["doomed"]
        assert queue["dead"] == 0 and queue["ready"] + queue["delayed"] == 1


SLOW_IMPORT = """\
import os, time
import guild
open(os.path.join(os.environ["MARKS"], str(os.getpid())), "w").close()
time.sleep(60)  # still importing when the SIGTERM comes
app = guild.Guild("slow_import")
"""


def test_a_sigterm_while_children_start_is_a_clean_stop(tmp_path: Path) -> None:
    # The drain's SIGTERM reaches each child before it has set its handler: the
    # child dies of it, holding no job (nothing is claimed before the handler),
    # so the run stopped as asked: exit 0, not a failed drain.
    (tmp_path / "slow_import_app.py").write_text(SLOW_IMPORT)
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUILD_")}
    env.update(PYTHONPATH=f"{ROOT}{os.pathsep}{tmp_path}", MARKS=str(marks))
    argv = guild_cmd(
        "run", "slow_import_app:app", "--broker", f"sqlite:///{tmp_path}/s.db", "--processes", "2"
    )
    process = subprocess.Popen(argv, cwd=tmp_path, env=env, stderr=subprocess.PIPE)
    try:

        async def both_importing() -> None:
            with trio.fail_after(60):
                await until(lambda: len(os.listdir(marks)) == 2)

        trio.run(both_importing)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr.decode()
