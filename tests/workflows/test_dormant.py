"""A running app whose broker holds no workflow yet loads no coordinator
(guild._app._await_workflow): the first workflow still runs, whether this app
submits it (the coordinator starts at once) or another producer stores it (the
app's next look finds it).

A real SQLite file, the real clock, each test bounded by ``trio.fail_after``.
"""

from __future__ import annotations

from pathlib import Path

import trio

import guild
from guild import Job, Step, StepInput, Workflow


def make_app(runs: list[str], *, poll: float) -> guild.Guild:
    app = guild.Guild("dormant", workflow_poll=poll)

    @app.worker("q", timeout=30)
    async def handler(job: Job) -> str:
        step = StepInput.of(job)
        runs.append(step.step)
        return step.step + "".join(str(v) for v in step.results.values())

    return app


CHAIN = [Step("a", "q"), Step("b", "q", after="a"), Step("c", "q", after="b")]


class TestFirstWorkflow:
    async def test_submitted_by_the_app_runs_without_waiting_for_a_look(
        self, tmp_path: Path
    ) -> None:
        # An hour between looks: only the submit's wake-up can start the coordinator.
        runs: list[str] = []
        app = make_app(runs, poll=3600)
        workflow = Workflow(CHAIN)
        with trio.fail_after(30):
            async with (
                guild.open_broker(f"sqlite:///{tmp_path}/guild.db") as broker,
                app.open(broker),
            ):
                workflow_id = await app.submit(workflow)
                view = await app.workflow(workflow_id, wait=25)
        assert view.status == "done"
        assert runs == ["a", "b", "c"]
        assert view.step("c").result == "cba"

    async def test_stored_by_another_producer_is_found_by_the_next_look(
        self, tmp_path: Path
    ) -> None:
        runs: list[str] = []
        app = make_app(runs, poll=0.2)
        # Another producer: its own app object and broker connection, no worker,
        # no coordinator of its own (workflow_poll=None).
        producer = guild.Guild("producer", workflow_poll=None)
        workflow = Workflow(CHAIN)
        with trio.fail_after(30):
            async with (
                guild.open_broker(f"sqlite:///{tmp_path}/guild.db") as broker,
                guild.open_broker(f"sqlite:///{tmp_path}/guild.db") as other,
                app.open(broker),
            ):
                await producer.submit(workflow, queues=["q"], broker=other)
                view = await app.workflow(workflow.id, wait=25)
        assert view.status == "done"
        assert runs == ["a", "b", "c"]
