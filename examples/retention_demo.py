"""Retention and purge: how long finished jobs are kept, and deleting them now.

The app keeps results and done jobs for one second and dead letters for an
hour (``guild.Retention``; the same can be said in ``guild.toml``'s
``[retention]`` or in the broker URL, ``sqlite:jobs.db?result_ttl=1``). A done
job's payload is dropped when it finishes. After the second, the result is
gone; the dead letter is not, until ``guild purge emails --status dead``
deletes it.

    python examples/retention_demo.py
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
from pathlib import Path

import trio

import guild

app = guild.Guild("retention", retention=guild.Retention(results=1, done=1, dead=3600))


@app.worker("emails", max_attempts=1)
async def send(job: guild.Job) -> str:
    if job.payload["to"] == "nobody@":
        raise ValueError(f"bad address: {job.payload['to']}")
    return f"sent to {job.payload['to']}"


async def main(directory: Path) -> None:
    url = f"sqlite:///{directory}/jobs.db"
    good = await app.enqueue("emails", {"to": "ada@example.com"}, broker=url)
    bad = await app.enqueue("emails", {"to": "nobody@"}, broker=url)
    async with app.open(url):
        result = await app.result(good, wait=10, broker=url)
        assert result is not None
        print(f"result: {result.value}")
        dead = await app.result(bad, wait=10, broker=url)
        assert dead is not None
        print(f"dead: {dead.error}")
    with sqlite3.connect(directory / "jobs.db") as db:
        (payload,) = db.execute("SELECT payload FROM jobs WHERE id = ?", (good.id,)).fetchone()
    print(f"done job's payload kept: {payload}")
    await trio.sleep(1.2)
    print(f"after 1 s, result still there: {await app.result(good, broker=url) is not None}")
    print(f"after 1 s, dead letter still there: {await app.result(bad, broker=url) is not None}")
    purge = await trio.run_process(
        [sys.executable, "-m", "guild", "purge", "emails", "--status", "dead", "--broker", url],
        capture_stdout=True,
        capture_stderr=True,
    )
    print(f"guild purge: {purge.stdout.decode().strip()}")
    print(f"dead letter after the purge: {await app.result(bad, broker=url)}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="guild-retention-") as tmp:
        trio.run(main, Path(tmp))
