"""The fault simulator on a small app: crashes, an outage and two kills; nothing lost.

python examples/testing_demo.py
"""

from __future__ import annotations

import trio

import guild
from guild.testing import FaultPlan, Simulator

app = guild.Guild("demo", supervision=guild.SupervisorOptions(max_restarts=5, period=10.0))


@app.worker("work", concurrency=4, max_attempts=5, lease=5.0, retry=guild.RetryPolicy(base=1.0))
async def work(job: guild.Job) -> int:
    await trio.sleep(0.2)
    return int(job.payload) + 1


if __name__ == "__main__":
    plan = FaultPlan(crash_rate=0.2, slow_rate=0.1, outages=((30.0, 15.0),), kills=(5.0, 50.0))
    report = Simulator(app, plan, seed=2026).run_sync({"work": list(range(200))})
    report.check()
    print(
        f"simulated {report.elapsed:.0f}s: {report.jobs} jobs, {report.done} done,"
        f" {report.dead} dead, {len(report.lost)} lost; {report.handler_calls} handler calls,"
        f" {report.kills} kills, {report.app_restarts} app restarts"
    )
