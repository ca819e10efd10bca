"""Job priorities: high jobs are claimed before normal ones, normal before low,
and each level in the order its jobs became ready.

Nine jobs wait on a SQLite queue before its worker starts: three of each level,
enqueued low first. The worker (one job at a time) runs every high one first,
then the normal ones, then the low ones. A high job delayed by a moment keeps
its priority: when it comes due it runs before the low ones still waiting.
What the broker reports keeps it too: ``job_info`` (``guild job show``), a dead
letter (``guild dlq show``), and the job requeued from it (``guild dlq requeue``).

    python examples/priority_demo.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import trio

import guild
from guild import Priority

app = guild.Guild("priorities")
ran: list[str] = []
finished = trio.Event()
TOTAL = 10


@app.worker("reports", concurrency=1)
async def report(job: guild.Job) -> None:
    ran.append(f"{job.payload}({job.priority.name.lower()})")
    await trio.sleep(0.1)  # stands in for the work: the delayed job comes due meanwhile
    if len(ran) == TOTAL:
        finished.set()


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:{Path(tmp) / 'jobs.db'}"
        for level in (Priority.LOW, Priority.NORMAL, Priority.HIGH):
            names = [f"{level.name.lower()}-{n}" for n in range(1, 4)]
            await app.enqueue_many("reports", names, priority=level, broker=url)
        # From the shell: guild enqueue reports '"urgent"' --priority high --delay 0.3
        urgent_job = await app.enqueue("reports", "urgent", priority="high", delay=0.3, broker=url)
        async with app.open(url):
            with trio.fail_after(30):
                await finished.wait()
        async with guild.open_broker(url) as broker:
            info = await broker.job_info(urgent_job.id)
            assert info is not None
            print("guild job show:", info.status.value, info.priority.name.lower())
            # No worker takes "archive": this process claims the job and gives up on it.
            (doomed,) = await broker.enqueue(
                [guild.Job(queue="archive", payload="ledger", priority=Priority.HIGH)]
            )
            (held,) = await broker.claim("archive", consumer="demo", limit=1, lease=30)
            await broker.dead(held, error="disk full")
            (letter,) = await broker.list_dead("archive")
            await broker.requeue_dead([doomed.id])
            again = await broker.job_info(doomed.id)
            assert again is not None
            print(
                f"dead letter: {letter.job.priority.name.lower()},"
                f" requeued: {again.status.value} {again.priority.name.lower()}"
            )
    print("ran:", ", ".join(ran))
    first = [r for r in ran if not r.startswith("urgent")]
    print("high before normal before low:", first == sorted(first, key=_rank))
    urgent = ran.index("urgent(high)")
    print("delayed high job ran before every low one:", urgent < ran.index("low-1(low)"))


def _rank(name: str) -> int:
    return ["high", "normal", "low"].index(name.split("(")[1].rstrip(")"))


if __name__ == "__main__":
    trio.run(main)
