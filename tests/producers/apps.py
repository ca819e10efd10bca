"""The worker side of the producer tests: an app with a few queues.

Run in-process (:func:`running_worker`) or as ``guild run tests.producers.apps:app``
(:func:`guild_run_process`); :func:`at_once` and :func:`race_one_key` are the
thread scaffolding the producer tests share.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import trio

import guild

app = guild.Guild("producers")


@app.worker("double", concurrency=8)
async def double(job: guild.Job) -> object:
    return job.payload * 2


@app.worker("thumbnails", concurrency=8)
async def thumbnail(job: guild.Job) -> object:
    return {"thumbnail": f"thumb-{job.payload['url']}"}


@app.worker("reject", concurrency=2)
async def reject(job: guild.Job) -> object:
    raise guild.Reject(f"refused {job.payload!r}")


@app.worker("sleepy", concurrency=4, graceful_timeout=0.1)
async def sleepy(job: guild.Job) -> object:
    await trio.sleep_forever()


@contextmanager
def running_worker(url: str) -> Iterator[None]:
    """``app.run(url)`` on a Trio loop in a thread, drained when the block ends."""
    stop = threading.Event()
    started = threading.Event()
    failure: list[BaseException] = []

    async def main() -> None:
        async def shutdown_trigger() -> None:
            await trio.to_thread.run_sync(stop.wait)

        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: app.run(
                    url, shutdown_trigger=shutdown_trigger, task_status=task_status
                )
            )
            started.set()

    def thread_main() -> None:
        try:
            trio.run(main)
        except BaseException as exc:
            failure.append(exc)
            started.set()

    thread = threading.Thread(target=thread_main, name="test worker")
    thread.start()
    started.wait(timeout=30)
    try:
        assert not failure, failure
        yield
    finally:
        stop.set()
        thread.join(timeout=60)
        assert not thread.is_alive()
        assert not failure, failure


ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def guild_run_process(url: str) -> Iterator[None]:
    """``guild run tests.producers.apps:app`` on ``url`` in another process; at the
    block's end it is sent SIGTERM and must drain and exit 0."""
    worker = subprocess.Popen(
        [sys.executable, "-m", "guild", "run", "tests.producers.apps:app"],
        cwd=ROOT,
        env={**os.environ, "GUILD_BROKER": url},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=60)
    assert worker.returncode == 0, stderr.decode()


def at_once(threads: int, produce: Callable[[int], None]) -> None:
    """``produce(index)`` in ``threads`` threads, released together by a barrier
    so their calls overlap; returns once every one has ended."""
    start = threading.Barrier(threads)

    def run(index: int) -> None:
        start.wait()
        produce(index)

    started = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in started)


def race_one_key(client: guild.Client, threads: int, key: str) -> list[str]:
    """The job ids ``threads`` threads got enqueueing on queue "keyed" with one
    ``key`` at once (payload: the thread's index)."""
    got: list[str] = []
    lock = threading.Lock()

    def produce(index: int) -> None:
        job = client.enqueue("keyed", index, key=key)
        with lock:
            got.append(job.id)

    at_once(threads, produce)
    return got
