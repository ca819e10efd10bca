"""Producers from any Python: a worker on a Trio loop, fed from sync code, asyncio and Trio.

Run it in an empty directory: it makes producers.db there.
"""

from __future__ import annotations

import asyncio
import threading

import trio

import guild

URL = "sqlite:producers.db"
app = guild.Guild("demo")


@app.worker("squares", concurrency=4)
async def square(job: guild.Job) -> int:
    value: int = job.payload
    return value * value


def run_worker(stop: threading.Event) -> None:
    async def until_stopped() -> None:
        await trio.to_thread.run_sync(stop.wait)

    trio.run(lambda: app.run(URL, shutdown_trigger=until_stopped))


def from_sync_code() -> None:
    with guild.Client(URL) as client:
        jobs = client.enqueue_many("squares", [1, 2, 3])
        values = [result.value for job in jobs if (result := client.result(job, wait=30))]
        print(f"sync: {values}")
        # Enqueue and wait in one call (one round trip on a single Redis).
        answer = client.enqueue_and_wait("squares", 6, wait=30)
        print(f"sync: enqueue_and_wait: {answer.value if answer else None}")
        later = client.enqueue("squares", 4, delay=3600)
        print(f"sync: a delayed job is {client.status(later).value}")
        print(f"sync: cancelled {len(client.cancel(later))}, now {client.status(later).value}")
    try:
        client.enqueue("squares", 5)
    except guild.BrokerClosed:
        print("sync: closed client refuses calls")


async def from_asyncio() -> None:
    async with guild.AsyncClient(URL) as client:
        job = await client.enqueue("squares", 12)
        result = await client.result(job, wait=30)
        print(f"asyncio: 12 squared is {result.value if result else None}")


async def from_trio() -> None:
    async with guild.AsyncClient(URL) as client:
        job = await client.enqueue("squares", 9)
        result = await client.result(job, wait=30)
        print(f"trio: 9 squared is {result.value if result else None}")
        result = await client.enqueue_and_wait("squares", 11, wait=30)
        print(f"trio: enqueue_and_wait: {result.value if result else None}")
    # Outside app.run the app enqueues through a URL too.
    job = await app.enqueue("squares", 7, broker=URL)
    result = await app.result(job, wait=30, broker=URL)
    print(f"trio: app.enqueue outside run: {result.value if result else None}")


def main() -> None:
    try:
        guild.Client("memory://")
    except guild.UnknownBrokerURL:
        print("memory:// refused: its jobs would vanish with the process")
    stop = threading.Event()
    worker = threading.Thread(target=run_worker, args=(stop,))
    worker.start()
    try:
        from_sync_code()
        asyncio.run(from_asyncio())
        trio.run(from_trio)
    finally:
        stop.set()
        worker.join()
    print("worker drained")


if __name__ == "__main__":
    main()
