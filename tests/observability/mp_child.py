"""One `guild run` child, for the multiprocess metrics test (run as a real process).

    PROMETHEUS_MULTIPROC_DIR=dir python mp_child.py PORT JOBS

Runs JOBS real jobs through the app on its own memory broker, then serves
/metrics on PORT (shared with its sibling through SO_REUSEPORT) and prints
``ready`` once its job counts are flushed.
"""

from __future__ import annotations

import functools
import sys

import trio

import guild
from guild import Job, MemoryBroker
from guild.observability import configure_logging, observe, serve_http


async def main(port: int, jobs: int) -> None:
    configure_logging(stream=sys.stderr)  # stdout carries only "ready"
    broker = MemoryBroker()
    app = guild.Guild("mp", broker=broker)
    finished = trio.Event()
    seen = 0

    @app.worker("work", concurrency=4)
    async def work(job: Job) -> None:
        nonlocal seen
        seen += 1
        if seen == jobs:
            finished.set()

    observability = observe(app, logs=False)
    await broker.enqueue([Job(queue="work", payload=i) for i in range(jobs)])
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(app.run, broker))
        await finished.wait()
        await trio.sleep(0.2)  # the last acks and their events
        await nursery.start(functools.partial(serve_http, app, port=port))
        observability.metrics.flush()
        print("ready", flush=True)


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]), int(sys.argv[2]))
