"""Faults of the SQLite broker's files under an open broker, made for real on disk.

The database file itself deleted or replaced is in
tests/observability/test_broker_health.py (TestSqliteFileReplaced).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import trio

import guild
from guild._codec import encode_result


async def test_a_deleted_write_ahead_log_is_refused_and_its_jobs_kept(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    wal = Path(f"{path}-wal")
    with trio.fail_after(20):
        async with guild.open_broker(f"sqlite:{path}") as broker:
            await broker.enqueue([guild.Job(queue="q", payload=n) for n in range(3)])
            (delivery,) = await broker.claim("q", consumer="c", limit=1, lease=30.0)
            await broker.ack([(delivery, encode_result("ok"))])
            assert wal.exists()
            os.unlink(wal)
            # Going on would commit to a log no other connection sees, while every
            # other connection fails on the shared memory's count of its frames.
            with pytest.raises(guild.BrokerFileReplaced, match="write-ahead log") as caught:
                await broker.stats(["q"])
            assert caught.value.path == str(path)
            with pytest.raises(guild.BrokerFileReplaced):
                await broker.enqueue([guild.Job(queue="q", payload=3)])
        # Closed: its log went into the file. Read with sqlite3 itself, not guild.
        db = sqlite3.connect(path)
        try:
            rows = db.execute("SELECT status FROM jobs ORDER BY status").fetchall()
        finally:
            db.close()
        assert rows == [("done",), ("ready",), ("ready",)]
        async with guild.open_broker(f"sqlite:{path}") as again:
            stats = (await again.stats(["q"]))["q"]
            assert (stats.ready, stats.in_flight, stats.done) == (2, 0, 1)


# Run in a private mount namespace on a 1 MB tmpfs (see below). The log grows by
# a few pages at each claim and ack; a file takes the last 256 KB until the disk
# is full; then the file goes, and the broker must go on in the room freed.
_FULL_DISK_SCRIPT = """
import os, sys, trio, guild
from guild._codec import encode_result
from guild.brokers.sqlite import SqliteBroker

directory = sys.argv[1]
path = os.path.join(directory, "jobs.db")
ballast = os.path.join(directory, "ballast")

async def round_trip(broker):
    (job,) = await broker.enqueue([guild.Job(queue="q", payload="x" * 100)])
    (delivery,) = await broker.claim("q", consumer="c", limit=1, lease=30.0)
    await broker.ack([(delivery, encode_result("y" * 100))])

async def main():
    broker = await SqliteBroker.open(path)
    with open(ballast, "wb") as f:
        f.write(b"\\0" * 256 * 1024)
    try:
        for _ in range(10_000):
            await round_trip(broker)
    except guild.BrokerUnavailable as error:
        assert "full" in str(error), error
        print("full", flush=True)
    else:
        raise AssertionError("the disk never filled")
    os.unlink(ballast)
    done = 0
    try:
        for _ in range(300):
            await round_trip(broker)
            done += 1
    except guild.BrokerUnavailable as error:
        print(f"full again after {done}: {error}", flush=True)
        raise SystemExit(1)
    await broker.aclose()
    print(f"went on: {done}", flush=True)

trio.run(main)
"""


def _in_small_tmpfs(script: str, directory: Path) -> subprocess.CompletedProcess[str]:
    """``script`` run in a mount namespace of its own with ``directory`` a 1 MB
    tmpfs: root, or a user namespace, is needed; without either the test skips."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("no unshare(1) to mount a small tmpfs")
    inner = (
        f'mount -t tmpfs -o size=1m tmpfs "$1" || exit 77; echo mounted;'
        f' exec "{sys.executable}" -c "$2" "$1"'
    )
    for flags in (["-m"], ["-rm"]):
        done = subprocess.run(
            [unshare, *flags, "sh", "-c", inner, "sh", str(directory), script],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": str(Path(guild.__file__).parent.parent)},
        )
        if done.stdout.startswith("mounted\n"):
            done.stdout = done.stdout.removeprefix("mounted\n")
            return done
    pytest.skip(f"cannot mount a tmpfs in a namespace here: {done.stderr.strip()}")


def test_a_full_disk_freed_again_is_written_to_again(tmp_path: Path) -> None:
    directory = tmp_path / "small"
    directory.mkdir()
    done = _in_small_tmpfs(_FULL_DISK_SCRIPT, directory)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert done.stdout.splitlines() == ["full", "went on: 300"], done.stdout
