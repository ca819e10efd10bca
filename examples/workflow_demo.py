"""Workflows: a DAG of jobs, a saga that undoes itself, and a resume after a stop.

Three workflows on one SQLite file (``workflow_demo.db`` in the current
directory; pass ``memory`` to use the memory broker instead):

1. a chord: four squares side by side, then their sum;
2. an order saga: reserve stock and charge the card, then ship and email side
   by side; shipping fails, so the email still running is cancelled and the
   charge and the reservation are undone, last completed first;
3. a chain whose app stops halfway; a second app on the same file (a restarted
   process) finishes it without running a completed step again.

    python examples/workflow_demo.py [memory]
"""

from __future__ import annotations

import sys

import trio

import guild
from guild import Compensation, Step, StepInput, chain, chord, group

runs: list[str] = []
pausing = trio.Event()


def make_app(name: str, *, stop_at: str | None = None) -> guild.Guild:
    app = guild.Guild(name, workflow_poll=0.2)

    @app.worker("math", concurrency=8, timeout=10)
    async def math(job: guild.Job) -> int:
        step = StepInput.of(job)
        if step.step == "sum":
            return sum(step.results.values())
        return int(step.input) ** 2

    # A short grace: when the app stops, a step still running is handed back at once.
    @app.worker("orders", concurrency=8, timeout=10, max_attempts=2, graceful_timeout=0.5)
    async def orders(job: guild.Job) -> object:
        step = StepInput.of(job)
        runs.append(f"{name}:{step.step}")
        if step.step == "ship":
            raise guild.Reject("the carrier refused the parcel")
        if step.step == "email":
            await trio.sleep_forever()  # a slow mail server: cancelled by the failure
        if step.step == "pause" and stop_at == "pause":
            pausing.set()
            await trio.sleep_forever()  # this app stops while the step runs
        return {"step": step.step, "after": sorted(step.results)}

    @app.worker("undo", timeout=10)
    async def undo(job: guild.Job) -> str:
        step = StepInput.of(job)
        print(f"  undo {step.step}: {step.input} (its result was {step.results[step.step]})")
        return "undone"

    return app


async def finished(app: guild.Guild, workflow_id: str) -> guild.WorkflowView:
    view = await app.workflow(workflow_id, wait=30)
    assert view.finished, view
    return view


async def main(broker: guild.Broker | str) -> None:
    durable = isinstance(broker, str)
    app = make_app("app")
    squares = chord(
        group(*(Step(f"square{n}", "math", n) for n in range(1, 5))),
        Step("sum", "math"),
        name="sum of squares",
    )
    saga = chain(
        Step("reserve", "orders", {"sku": "B-42"}, compensate="release"),
        Step("charge", "orders", {"eur": 30}, compensate="refund"),
        group(Step("ship", "orders"), Step("email", "orders")),
        compensations={
            "release": Compensation("undo", "release the stock"),
            "refund": Compensation("undo", "refund the card"),
        },
        name="order 1",
    )
    with trio.fail_after(60):
        async with app.open(broker):
            view = await finished(app, await app.submit(squares))
            print(f"chord: {view.status}, sum of squares = {view.step('sum').result}")

            print("order saga:")
            view = await finished(app, await app.submit(saga))
            print(f"order saga: {view.status} at {view.failed_step!r}: {view.error}")
            for step in view.steps:
                undo = step.compensation.state if step.compensation else "-"
                print(f"  {step.name:8} {step.state:10} undo: {undo}")

    if not durable:
        return  # the resume needs a file that outlives the app
    later = chain(Step("first", "orders"), Step("pause", "orders"), Step("last", "orders"))
    first = make_app("first-app", stop_at="pause")
    with trio.fail_after(60):
        async with first.open(broker):
            await first.submit(later)
            await pausing.wait()
        print(f"stopped with {later.id} running; a new app takes over")
        second = make_app("second-app")
        async with second.open(broker):
            view = await finished(second, later.id)
    print(f"resumed: {view.status}; runs: {', '.join(runs[-4:])}")


if __name__ == "__main__":
    chosen = sys.argv[1] if len(sys.argv) > 1 else "sqlite:workflow_demo.db"
    trio.run(main, guild.MemoryBroker() if chosen == "memory" else chosen)
