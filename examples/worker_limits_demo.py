"""Per-tenant limits on a worker: 5 jobs per second and 2 at once for each tenant.

python examples/worker_limits_demo.py                 # in-process limits, memory broker
python examples/worker_limits_demo.py redis://host:6379/0   # limits shared through Redis

A tenant that floods the queue waits for its own limit; the other tenant's jobs
run meanwhile. A job whose key cannot be read goes to the dead letters; the
worker carries on. The time each job waited is a metric
(``guild_job_limit_wait_seconds``).
"""

from __future__ import annotations

import sys
from collections import defaultdict

import trio
from prometheus_client import CollectorRegistry

import guild
from guild.observability import PrometheusInstrument


def tenant(job: guild.Job) -> str:
    payload = job.payload
    assert isinstance(payload, dict)
    return str(payload["tenant"])


async def main(broker: guild.Broker | str) -> None:
    metrics = PrometheusInstrument("demo", registry=CollectorRegistry())
    app = guild.Guild("demo", instruments=[metrics])
    started: dict[str, list[float]] = defaultdict(list)
    origin = trio.current_time()

    @app.worker("sync", limit=guild.Limit(rate="5/s", concurrency=2, key=tenant))
    async def sync(job: guild.Job) -> None:
        started[tenant(job)].append(trio.current_time() - origin)
        await trio.sleep(0.1)  # the pretend call to the tenant's API

    async with app.open(broker):
        jobs = await app.enqueue_many(
            "sync", [*[{"tenant": "acme"}] * 10, *[{"tenant": "globex"}] * 2, {"no": "tenant"}]
        )
        for job in jobs:
            await app.result(job, wait=30)
        dead = await app.broker.get_dead(jobs[-1].id)

    for name, times in sorted(started.items()):
        print(f"{name}: {len(times)} jobs, started at", " ".join(f"{t:.1f}s" for t in times))
    print("bad key:", dead.error if dead is not None else "not dead?")
    labels = {"app": "demo", "worker": "sync"}
    count = metrics.registry.get_sample_value("guild_job_limit_wait_seconds_count", labels)
    total = metrics.registry.get_sample_value("guild_job_limit_wait_seconds_sum", labels)
    print(f"{count:.0f} admissions waited {total:.1f}s in all")


if __name__ == "__main__":
    trio.run(main, sys.argv[1] if len(sys.argv) > 1 else guild.MemoryBroker())
