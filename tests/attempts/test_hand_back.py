"""`guild run --processes N --grace S`: the jobs of a child killed after its grace
go back at once, their runs not counted, instead of waiting out their leases."""

from __future__ import annotations

import signal
from pathlib import Path

import trio

import guild

from .conftest import enqueue_lines, start_guild

JOBS = 4


class TestKilledChildHandsBack:
    async def test_jobs_are_ready_at_once_and_uncounted(
        self, broker_url: str, tmp_path: Path
    ) -> None:
        ids = enqueue_lines(broker_url, "stuck", list(range(JOBS)))
        began = tmp_path / "began"
        began.mkdir()
        log = tmp_path / "fleet.log"
        argv = ["run", "tests.attempts.apps:stuck", "--broker", broker_url]
        argv += ["--processes", "2", "--grace", "0.5"]
        parent = start_guild(*argv, log=log, env={"GUILD_TEST_STARTED_DIR": str(began)})
        try:
            with trio.fail_after(60):
                while len(list(began.iterdir())) < JOBS:
                    assert parent.poll() is None, log.read_text()[-3000:]
                    await trio.sleep(0.05)
                parent.send_signal(signal.SIGTERM)
                code = await trio.to_thread.run_sync(parent.wait)
        finally:
            if parent.poll() is None:
                parent.kill()
                parent.wait()
        # A child had to be killed: not a clean drain.
        assert code == 1, log.read_text()[-3000:]
        assert sorted(p.name for p in began.iterdir()) == sorted(ids)
        async with guild.open_broker(broker_url) as broker:
            # The leases (120 s) have far to run: only the hand-back explains this.
            stats = (await broker.stats(["stuck"]))["stuck"]
            assert (stats.ready, stats.in_flight, stats.dead) == (JOBS, 0, 0)
            back = await broker.claim("stuck", consumer="test", limit=JOBS, lease=30)
        assert sorted(d.job.id for d in back) == sorted(ids)
        # Uncounted: the next run is each job's first.
        assert [(d.job.attempt, d.interrupted) for d in back] == [(1, False)] * JOBS
        assert "jobs_handed_back" in log.read_text()
