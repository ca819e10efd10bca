"""Usage examples checked by mypy --strict only (never run): the public API types well."""

from __future__ import annotations

import trio

import guild

app = guild.Guild("typed")


@app.worker("emails", concurrency=4, timeout=5.0, max_attempts=3)
async def send(job: guild.Job) -> dict[str, str]:
    return {"sent": str(job.payload)}


async def produce(broker: guild.Broker) -> guild.Result | None:
    job: guild.Job = await app.enqueue("emails", {"to": "a@example.com"}, key="k", broker=broker)
    jobs: list[guild.Job] = await app.enqueue_many("emails", [1, 2, 3], broker=broker)
    assert len(jobs) == 3
    return await broker.get_result(job.id, wait=1.0)


async def embed() -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(app.run, guild.MemoryBroker())
        nursery.cancel_scope.cancel()


policy: guild.RetryPolicy = guild.RetryPolicy(base=0.5, factor=3.0, max_delay=60.0, jitter=0.1)
decision: guild.RetryAt | guild.Dead = policy.decide(guild.Job(queue="q", attempt=1), 0.0, 0.5)
schedule: guild.Cron = guild.Cron("*/5 * * * *")
zoned: guild.Cron = guild.Cron("0 9 * * mon-fri", tz="Europe/Paris")


@app.worker("orders")
async def order_step(job: guild.Job) -> int:
    step: guild.StepInput = guild.StepInput.of(job)
    return len(step.results)


async def workflows(broker: guild.Broker) -> str:
    saga: guild.Workflow = guild.chain(
        guild.Step("reserve", "orders", {"sku": "B-42"}, compensate="release"),
        guild.group(guild.Step("ship", "orders"), guild.Step("email", "orders")),
        compensations={"release": guild.Compensation("orders", "release")},
    )
    workflow_id: str = await app.submit(saga, broker=broker)
    view: guild.WorkflowView = await app.workflow(workflow_id, wait=1.0, broker=broker)
    step: guild.StepView = view.step("reserve")
    undo: guild.CompensationView | None = step.compensation
    cancelled: bool = await app.cancel_workflow(workflow_id, broker=broker)
    listed: list[guild.WorkflowView] = await app.workflows(statuses=["running"], broker=broker)
    assert undo is None or cancelled or listed
    return view.status
