"""A release pipeline: a PM project whose commands run in the sandbox and whose
results are posted to a Slack-like server.

One process, one command, on the SQLite default (``$GUILD_BROKER``, else
``guild.db`` in the current directory):

    python examples/pipeline/main.py

It starts a local server that answers like Slack's Web API
(:class:`guild_workers.slack_double.SlackDouble`), then one app with three
workers of ``guild_workers``:

* the PMWorker (queue ``pm``) runs ``project.toml`` as a workflow: ``lint`` and
  ``test`` side by side, ``package`` after both, the inline action ``version``
  beside them, and ``announce`` once ``test``, ``package`` and ``version`` are done;
* the TaskWorker (queue ``tasks``) runs each command phase in the sandbox;
* the ResultWorker (queue ``results``) posts what ``announce`` asks for: each
  of the phases it runs after, to ``#builds``, within the channel's rate.

It exits 0 once the project is done and its three results are posted; 1 if
the project failed (its error says which phase, and which rollbacks ran).
"""

from __future__ import annotations

import sys
from pathlib import Path

import trio

import guild
from guild_workers.pm import PhaseContext, add_pm_worker, project_workflow_id
from guild_workers.result import SlackSettings, add_result_worker
from guild_workers.slack_double import SlackDouble
from guild_workers.task import add_task_worker

HERE = Path(__file__).resolve().parent
TOKEN = "xoxb-pipeline-demo"


def make_app(slack_api: str) -> guild.Guild:
    app = guild.Guild("pipeline", workflow_poll=0.2)
    pm = add_pm_worker(app, project_dir=HERE)
    add_task_worker(app, concurrency=4)
    add_result_worker(app, settings=SlackSettings(api_url=slack_api, token=TOKEN, rate=5.0))

    @pm.action("version")
    async def version(ctx: PhaseContext) -> dict[str, str]:
        return {"project": ctx.project, "version": ctx.args["base"]}

    return app


async def main() -> int:
    slack = SlackDouble(token=TOKEN)
    async with trio.open_nursery() as nursery:
        base = await slack.serve(nursery)
        app = make_app(f"{base}/api")
        with trio.fail_after(100):
            async with app.open():  # the default broker: $GUILD_BROKER, else sqlite:guild.db
                job = await app.enqueue("pm", {"file": "project.toml"})
                print(f"project submitted: pm job {job.id}, workflow {project_workflow_id(job.id)}")
                result = await app.result(job, wait=90)
                view = await app.workflow(project_workflow_id(job.id))
        nursery.cancel_scope.cancel()
    assert result is not None
    for step in view.steps:
        took = (step.finished_at or 0) - (step.started_at or 0)
        print(f"  {step.name:<9} {step.state:<9} after {list(step.after)} ({took:.2f}s)")
    if not result.ok:
        print(f"project failed: {result.error}")
        return 1
    posted = slack.posted("#builds")
    phases = result.value["phases"]
    print(f"project {result.value['status']}: {', '.join(result.value['completed'])}")
    # A command phase's result names its task job: the ResultWorker posts that job's result.
    by_job = {v["task_job"]: name for name, v in phases.items() if "task_job" in v}
    for message in posted:
        first = message.text.splitlines()[0]
        job_id = first.split("`")[1] if first.startswith("job `") else None
        print(f"posted to #builds: {by_job.get(job_id, first)!s:<18} {len(message.text)} chars")
    print(f"package said: {phases['package']['stdout'].strip()}")
    print(f"{len(posted)} results posted to #builds")
    return 0 if len(posted) == 3 else 1


if __name__ == "__main__":
    sys.exit(trio.run(main))
