"""A SQLite broker whose disk fills up mid-run, on a real filesystem: a 2 MiB tmpfs.

A producer's enqueue fails with :class:`guild.BrokerUnavailable` naming the file;
the worker waits the full disk out as an outage (no crash, no restart), keeps the
results of the jobs that finished meanwhile, and runs every job exactly once when
room is made. Mounting needs root (as CI runs); elsewhere the test is skipped.
"""

from __future__ import annotations

import collections
import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest
import trio

import guild

from .._state_log import StateLog
from ..observability.helpers import eventually

QUEUE = "work"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    where = tmp_path / "disk"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(directory: Path) -> Path:
    """A file that takes every free byte of ``directory``'s filesystem."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as out:
        while _wrote(out):
            pass
    return filler


def _wrote(out: BinaryIO) -> bool:
    try:
        out.write(b"\0" * 65536)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        return False
    return True


def _result(n: int) -> object:
    # The four jobs that finish on the full disk leave results larger than the
    # log the broker reuses once checkpointed: storing them needs room.
    return n * 2 if n >= 4 else {"n": n * 2, "padding": "x" * 200_000}


async def test_a_full_disk_is_waited_out_and_loses_nothing(small_disk: Path) -> None:
    url = f"sqlite:///{small_disk / 'jobs.db'}"
    log = StateLog()
    app = guild.Guild(
        "disk-full",
        instruments=[log],
        supervision=guild.SupervisorOptions(
            max_restarts=1, period=600.0, backoff=guild.Backoff(initial=0.05, maximum=0.05)
        ),
    )
    runs: collections.Counter[int] = collections.Counter()
    release = trio.Event()

    @app.worker(QUEUE, concurrency=4, lease=120.0, timeout=None)
    async def work(job: guild.Job) -> object:
        runs[job.payload] += 1
        if job.payload < 4:
            await release.wait()
        return _result(job.payload)

    with trio.fail_after(60):
        async with guild.open_broker(url) as direct:
            jobs = await direct.enqueue([guild.Job(queue=QUEUE, payload=n) for n in range(40)])
            async with app.open(url):
                await eventually(lambda: sum(runs.values()) == 4)
                filler = await trio.to_thread.run_sync(_fill, small_disk)
                # Larger than the log it reuses once checkpointed (the broker
                # checkpoints early on a disk this small): it needs room the disk lacks.
                with pytest.raises(guild.BrokerUnavailable) as refused:
                    await direct.enqueue(
                        [guild.Job(queue=QUEUE, payload=f"{n:04}" * 1000) for n in range(40, 400)]
                    )
                assert str(refused.value).startswith(f"sqlite {small_disk / 'jobs.db'}: ")
                # Four jobs finish on a full disk: their acks must wait, not vanish.
                release.set()
                await eventually(lambda: app.workers()[QUEUE].broker_error is not None)
                await trio.sleep(1.0)
                filler.unlink()
                for job in jobs:
                    result = await direct.get_result(job.id, wait=30)
                    assert result is not None and result.value == _result(job.payload)
                await eventually(lambda: app.workers()[QUEUE].broker_error is None)
            stats = (await direct.stats([QUEUE]))[QUEUE]
            assert (stats.done, stats.ready, stats.in_flight, stats.dead) == (40, 0, 0, 0)
    assert runs == collections.Counter(range(40)), "a job ran twice or never"
    assert log.count("crashed") == 0, log.errors()
    assert log.count("gave_up") == 0
