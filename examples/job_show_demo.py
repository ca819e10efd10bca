"""Looking at one job: its status, attempts, timings, worker, progress, last error.

An import job reports its progress with ``guild.progress``; ``app.job(id)`` and
``guild job show ID`` (run here as another process, reading the same SQLite
file) both show it while the job runs, then its result. A job that fails every
time ends dead, and its last error keeps its traceback.

    python examples/job_show_demo.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import trio

import guild

app = guild.Guild("imports")
go_on = trio.Event()


@app.worker("imports", timeout=60)
async def import_rows(job: guild.Job) -> dict[str, int]:
    total = job.payload["rows"]
    for done in range(0, total // 2 + 1, 100):
        # As often as you like: the worker writes at most 4 a second, and the last.
        guild.progress(done / total, f"rows {done} of {total}")
    await go_on.wait()  # stands in for the slow second half
    guild.progress(1.0, f"rows {total} of {total}")
    return {"rows": total}


def check_address(address: str) -> None:
    if address.endswith("@"):
        raise ValueError(f"bad address: {address}")


@app.worker("emails", max_attempts=2, retry=guild.RetryPolicy(base=0.05, jitter=0.0))
async def send_email(job: guild.Job) -> None:
    check_address(job.payload["to"])


async def main(url: str) -> None:
    async with app.open(url):
        job = await app.enqueue("imports", {"rows": 1000})
        with trio.fail_after(10):
            info = await app.job(job)
            while info.progress is None or info.progress.fraction < 0.5:
                await trio.sleep(0.05)
                info = await app.job(job)
        progress = info.progress
        print(
            f"running: {info.status.value}, attempt {info.attempts},"
            f" progress {progress.fraction:.0%} ({progress.message})"
        )

        # Another process sees the same: the CLI reads the broker, not this one.
        shown = await trio.to_thread.run_sync(
            lambda: subprocess.run(
                [sys.executable, "-m", "guild", "job", "show", job.id, "--broker", url],
                capture_output=True,
                text=True,
                check=True,
            )
        )
        for line in shown.stdout.splitlines():
            if line.startswith(("status", "progress")):
                print("guild job show:", line.split(" (at ")[0])

        go_on.set()
        await app.result(job, wait=10)
        info = await app.job(job)
        assert info.progress is not None
        print(f"done: result {info.result}, progress {info.progress.fraction:.0%}")

        mail = await app.enqueue("emails", {"to": "nobody@"})
        await app.result(mail, wait=10)
        info = await app.job(mail)
        print(f"dead after {info.attempts} attempts: {info.error}")
        assert info.traceback is not None
        print("traceback ends:", info.traceback.strip().splitlines()[-1])

        try:
            await app.job("nope")
        except guild.UnknownJob as error:
            print("unknown id:", error)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as directory:
        trio.run(main, f"sqlite:///{Path(directory) / 'jobs.db'}")
