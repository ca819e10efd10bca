"""The worker side of the producer tests: an app with a few queues.

Run in-process (:func:`running_worker`) or as ``guild run tests.producers.apps:app``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

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
