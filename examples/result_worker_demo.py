"""The ResultWorker: job results posted to a Slack-like server, within its limits.

Starts its own Slack-compatible server (``guild_workers.slack_double``), then
runs a ResultWorker on the SQLite broker: a short message, one too long for a
single post (split into a thread), a webhook post, another job's result, a 429
burst that holds the channel, and a channel that does not exist (dead-lettered
with Slack's answer). The per-channel statistics are read back after the broker
is closed and reopened: they live in the database.

    python examples/result_worker_demo.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import trio

import guild
from guild_workers.result import SlackSettings, open_result_worker
from guild_workers.slack_double import SlackDouble

app = guild.Guild("results-demo")


@app.worker("reports")
async def report(job: guild.Job) -> dict[str, int]:
    return {"rows": 42, "errors": 0}


async def main() -> None:
    path = Path(tempfile.mkdtemp(prefix="guild-results-")) / "results.db"
    slack = SlackDouble(token="xoxb-demo", text_limit=200, unknown_channels=frozenset({"#nowhere"}))
    async with trio.open_nursery() as nursery:
        base = await slack.serve(nursery)
        settings = SlackSettings(
            api_url=f"{base}/api",
            token="xoxb-demo",
            webhooks={"alerts": f"{base}/hooks/alerts"},
            rate=5.0,  # posts per second per channel
            text_limit=200,  # characters per post (Slack's own limit is 40,000)
        )
        # Slack refuses the second post on #ops with 429, Retry-After: 1.
        slack.answer_next("#ops", 200)
        slack.answer_next("#ops", 429, retry_after=1.0)
        async with (
            guild.open_broker(f"sqlite:///{path}") as broker,
            open_result_worker(app, settings=settings),
            app.open(broker),
        ):
            long_text = "\n".join(f"line {n}: " + "all systems nominal " * 2 for n in range(12))
            done = await app.enqueue("reports", None)
            jobs = [
                await app.enqueue("results", {"channel": "#ops", "text": "deploy started"}),
                await app.enqueue("results", {"channel": "#ops", "text": "deploy finished"}),
                await app.enqueue("results", {"channel": "#ops", "text": long_text}),
                await app.enqueue("results", {"webhook": "alerts", "text": "disk at 91%"}),
                await app.enqueue("results", {"channel": "#ops", "job": done.id}),
            ]
            missing = await app.enqueue("results", {"channel": "#nowhere", "text": "hello?"})
            results = [await app.result(job, wait=30) for job in jobs]
            dead = await app.result(missing, wait=30)
        nursery.cancel_scope.cancel()
    assert all(r is not None and r.ok for r in results), results
    assert dead is not None
    print(f"posted {len(results)} messages in {len(slack.posted())} posts")
    [split] = [r for r in results if r is not None and r.value["parts"] > 1]
    thread = [p for p in slack.posted() if p.thread_ts == split.value["ts"][0]]
    print(f"long message: {split.value['parts']} parts, {len(thread)} of them in the thread")
    refused = [r for r in slack.received if r.status == 429]
    print(f"#ops answered 429 {len(refused)} time(s); no post during the hold:"
          f" {all(r.held_until == 0 for r in slack.received)}")  # fmt: skip
    print(f"#nowhere: {dead.status.value}: {dead.error}")
    # The statistics outlive the process's broker connection: reopen and read.
    async with guild.open_broker(f"sqlite:///{path}") as broker:
        assert isinstance(broker, guild.Ledger)
        stats = await broker.get_counts("delivery:results")
    for channel, counts in sorted(stats.items()):
        shown = ", ".join(f"{name}={value:g}" for name, value in sorted(counts.items()))
        print(f"after reopening: {channel}: {shown}")


if __name__ == "__main__":
    trio.run(main)
