"""ResultWorker against a real Slack-like HTTP server (hypercorn) and real brokers."""

from __future__ import annotations

import functools
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

import guild
from guild.observability import serve_http
from guild.testing._trio_fixtures import RunApp
from guild_workers.result import SlackSettings, open_result_worker
from guild_workers.slack_double import SlackDouble

TOKEN = "xoxb-test"


@pytest.fixture
async def slack(nursery: trio.Nursery) -> tuple[SlackDouble, str]:
    double = SlackDouble(token=TOKEN, unknown_channels=frozenset({"#nowhere", "gone"}))
    base = await double.serve(nursery)
    return double, base


def _settings(base: str, **changes: Any) -> SlackSettings:
    fields: dict[str, Any] = {
        "api_url": f"{base}/api",
        "token": TOKEN,
        "webhooks": {"ops": f"{base}/hooks/ops", "gone": f"{base}/hooks/gone"},
        "rate": 50.0,
        "burst": 1,
        "marker": "…",
    }
    fields.update(changes)
    return SlackSettings(**fields)


_ids = itertools.count()


def _job(**payload: Any) -> guild.Job:
    return guild.Job(queue="results", payload=payload, id=f"job-{next(_ids)}")


class TestPosting:
    async def test_web_api_and_webhook(self, slack: tuple[SlackDouble, str]) -> None:
        double, base = slack
        app = guild.Guild("t", broker=guild.MemoryBroker())
        with trio.fail_after(20):
            async with open_result_worker(app, settings=_settings(base)) as results:
                first = await results.handle(_job(channel="#ops", text="deployed"))
                second = await results.handle(_job(webhook="ops", text="hello"))
                stats = await results.statistics()
        assert [(r.channel, r.text, r.thread_ts) for r in double.posted()] == [
            ("#ops", "deployed", None),
            ("hook:ops", "hello", None),
        ]
        assert first == {
            "channel": "#ops",
            "parts": 1,
            "ts": [double.posted()[0].ts],
            "truncated": False,
        }
        assert second["channel"] == "hook:ops"
        assert stats == {
            "#ops": {"sent": 1.0, "parts": 1.0},
            "hook:ops": {"sent": 1.0, "parts": 1.0},
        }

    async def test_oversized_is_split_into_a_thread(self, slack: tuple[SlackDouble, str]) -> None:
        double, base = slack
        double.text_limit = 12
        app = guild.Guild("t", broker=guild.MemoryBroker())
        text = "line one\nline two\nline three"
        with trio.fail_after(20):
            async with open_result_worker(app, settings=_settings(base, text_limit=12)) as results:
                result = await results.handle(_job(channel="#ops", text=text))
                stats = await results.statistics()
        posted = double.posted("#ops")
        assert [r.text for r in posted] == ["line one\n", "line two\n", "line three"]
        head = posted[0].ts
        assert [r.thread_ts for r in posted] == [None, head, head]
        assert result["ts"] == [r.ts for r in posted]
        assert stats == {"#ops": {"sent": 1.0, "parts": 3.0, "split": 1.0}}

    async def test_oversized_is_truncated_by_config(self, slack: tuple[SlackDouble, str]) -> None:
        double, base = slack
        settings = _settings(base, text_limit=10, oversize="truncate", marker="…")
        app = guild.Guild("t", broker=guild.MemoryBroker())
        with trio.fail_after(20):
            async with open_result_worker(app, settings=settings) as results:
                result = await results.handle(_job(webhook="ops", text="0123456789abc"))
                stats = await results.statistics()
        assert [r.text for r in double.posted()] == ["012345678…"]
        assert result["truncated"] is True
        assert stats == {"hook:ops": {"sent": 1.0, "parts": 1.0, "truncated": 1.0}}

    async def test_posts_another_jobs_result(self, slack: tuple[SlackDouble, str]) -> None:
        double, base = slack
        broker = guild.MemoryBroker()
        app = guild.Guild("t", broker=broker)
        with trio.fail_after(20):
            async with open_result_worker(app, settings=_settings(base)) as results:
                with pytest.raises(guild.Retry):
                    await results.handle(_job(channel="#ops", job="not-finished"))
                await broker.enqueue([guild.Job(queue="work", payload=1, id="w1")])
                [delivery] = await broker.claim("work", consumer="c", limit=1, lease=10)
                await broker.ack([(delivery, guild.brokers.encode_result({"rows": 3}))])
                await results.handle(_job(channel="#ops", job="w1"))
        assert [r.text for r in double.posted()] == ['job `w1`: done\n```{\n  "rows": 3\n}```']


class TestFailures:
    async def test_4xx_rejects_with_the_body(self, slack: tuple[SlackDouble, str]) -> None:
        double, base = slack
        app = guild.Guild("t", broker=guild.MemoryBroker())
        with trio.fail_after(20):
            async with open_result_worker(app, settings=_settings(base)) as results:
                with pytest.raises(guild.Reject, match=r"#nowhere: slack error channel_not_found"):
                    await results.handle(_job(channel="#nowhere", text="x"))
                with pytest.raises(guild.Reject, match=r"hook:gone: HTTP 404: channel_not_found"):
                    await results.handle(_job(webhook="gone", text="x"))
                double.answer_next("#ops", 403)
                with pytest.raises(guild.Reject, match=r"HTTP 403: .*\"error\""):
                    await results.handle(_job(channel="#ops", text="x"))
                stats = await results.statistics()
        assert stats == {
            "#nowhere": {"failed": 1.0},
            "hook:gone": {"failed": 1.0},
            "#ops": {"failed": 1.0},
        }

    @pytest.mark.parametrize(
        ("payload", "reason"),
        [
            ({"text": "x"}, "channel or webhook"),
            ({"channel": "#a", "webhook": "ops", "text": "x"}, "channel or webhook"),
            ({"webhook": "nope", "text": "x"}, "no webhook named 'nope'"),
            ({"channel": "#a"}, "text or job"),
            ({"channel": "#a", "text": 3}, "text must be text"),
            ({"channel": "", "text": "x"}, "channel must be non-empty"),
        ],
    )
    async def test_bad_payloads_are_rejected(
        self, slack: tuple[SlackDouble, str], payload: dict[str, Any], reason: str
    ) -> None:
        _, base = slack
        app = guild.Guild("t", broker=guild.MemoryBroker())
        async with open_result_worker(app, settings=_settings(base)) as results:
            with pytest.raises(guild.Reject, match=reason):
                await results.handle(_job(**payload))

    async def test_5xx_asks_for_a_retry(self, slack: tuple[SlackDouble, str]) -> None:
        double, base = slack
        double.answer_next("#ops", 502)
        app = guild.Guild("t", broker=guild.MemoryBroker())
        with trio.fail_after(20):
            async with open_result_worker(app, settings=_settings(base)) as results:
                with pytest.raises(guild.Retry) as info:
                    await results.handle(_job(channel="#ops", text="x"))
                stats = await results.statistics()
        assert info.value.after is None  # the worker's backoff decides
        assert stats == {"#ops": {"retried": 1.0}}

    async def test_a_retried_job_does_not_post_its_parts_again(
        self, slack: tuple[SlackDouble, str]
    ) -> None:
        double, base = slack
        app = guild.Guild("t", broker=guild.MemoryBroker())
        job = _job(channel="#ops", text="aaaa bbbb cccc")
        with trio.fail_after(20):
            async with open_result_worker(app, settings=_settings(base, text_limit=5)) as results:
                # Part 1 posts; part 2 meets a 500: the run ends asking for a retry.
                double.rate_limit_every("#never", 1, 1, 1.0)
                double.answer_next("#ops", 200)
                double.answer_next("#ops", 500)
                with pytest.raises(guild.Retry):
                    await results.handle(job)
                assert [r.text for r in double.posted()] == ["aaaa "]
                result = await results.handle(job)
                stats = await results.statistics()
        posted = double.posted("#ops")
        assert [r.text for r in posted] == ["aaaa ", "bbbb ", "cccc"]
        assert [r.thread_ts for r in posted] == [None, posted[0].ts, posted[0].ts]
        assert result["ts"] == [r.ts for r in posted]
        assert stats == {"#ops": {"parts": 3.0, "retried": 1.0, "sent": 1.0, "split": 1.0}}


class TestThroughTheApp:
    async def test_dead_letter_and_retry_with_backoff(
        self, slack: tuple[SlackDouble, str], run_app: RunApp
    ) -> None:
        double, base = slack
        broker = guild.MemoryBroker()
        app = guild.Guild("t")
        async with open_result_worker(app, settings=_settings(base), concurrency=4):
            app.configure("results", retry=guild.RetryPolicy(base=0.05, jitter=0.0))
            double.answer_next("#ops", 503, times=2)
            await run_app(app, broker)
            with trio.fail_after(20):
                bad = await app.enqueue("results", {"channel": "#nowhere", "text": "x"})
                good = await app.enqueue("results", {"channel": "#ops", "text": "y"})
                done = await app.result(good, wait=15)
                dead = await app.result(bad, wait=15)
                letter = await broker.get_dead(bad.id)
        assert done is not None and done.ok and done.attempts == 3
        assert dead is not None and dead.status is guild.JobStatus.DEAD
        assert letter is not None and "channel_not_found" in letter.error
        assert [r.status for r in double.received if r.channel == "#ops"] == [503, 503, 200]


class TestRateLimits:
    async def test_a_429_holds_the_channel_for_every_job(
        self, slack: tuple[SlackDouble, str]
    ) -> None:
        double, base = slack
        double.answer_next("#ops", 429, retry_after=0.5)
        app = guild.Guild("t", broker=guild.MemoryBroker())
        with trio.fail_after(20):
            # 10/s: the next admission comes 100 ms after the refused one, long
            # after its 429 came back (a request already sent cannot be held).
            async with open_result_worker(app, settings=_settings(base, rate=10.0)) as results:
                async with trio.open_nursery() as nursery:
                    for i in range(5):
                        nursery.start_soon(results.handle, _job(channel="#ops", text=f"m{i}"))
                    nursery.start_soon(results.handle, _job(channel="#other", text="free"))
                stats = await results.statistics()
        ops = [r for r in double.received if r.channel == "#ops"]
        [refused] = [r for r in ops if r.status == 429]
        assert sorted(r.text for r in double.posted("#ops")) == [f"m{i}" for i in range(5)]
        # Nobody posted on #ops during the hold; #other was not held.
        later = [r for r in ops if r is not refused]
        assert all(r.at >= refused.at + 0.5 - 0.02 for r in later), [
            r.at - refused.at for r in later
        ]
        assert all(r.held_until == 0.0 for r in double.received)
        assert double.posted("#other")[0].at < refused.at + 0.5
        assert stats["#ops"]["rate_limited"] == 1.0
        assert stats["#ops"]["rate_limited_seconds"] == 0.5
        assert stats["#ops"]["sent"] == 5.0


class TestStatistics:
    """The per-channel figures live in the broker: they outlast the process and
    show in `guild stats` and /metrics."""

    async def test_survive_a_restart_and_show_in_stats_and_metrics(
        self, slack: tuple[SlackDouble, str], tmp_path: Path, nursery: trio.Nursery
    ) -> None:
        double, base = slack
        url = f"sqlite:///{tmp_path}/results.db"
        double.answer_next("#ops", 429, retry_after=0.2)
        with trio.fail_after(30):
            for run in range(2):  # two runs of the app, as two deployments would
                app = guild.Guild("t")
                async with (
                    guild.open_broker(url) as broker,
                    open_result_worker(app, settings=_settings(base, text_limit=5)),
                    app.open(broker),
                ):
                    await app.result(
                        await app.enqueue("results", {"channel": "#ops", "text": f"run {run} ok"}),
                        wait=20,
                    )
                    await app.result(
                        await app.enqueue("results", {"channel": "#nowhere", "text": "x"}),
                        wait=20,
                    )
            expected = {
                "#ops": {
                    "sent": 2.0,
                    "parts": 4.0,  # "run 0 ok" in parts of 5: "run ", "0 ok"
                    "split": 2.0,
                    "rate_limited": 1.0,
                    "rate_limited_seconds": 0.2,
                },
                "#nowhere": {"failed": 2.0},
            }
            async with guild.open_broker(url) as broker:
                assert isinstance(broker, guild.Ledger)
                assert await broker.get_counts("delivery:results") == expected
                app = guild.Guild("t", broker=broker)
                port = await nursery.start(functools.partial(serve_http, app, port=0))
                async with httpx.AsyncClient() as client:
                    metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
        assert [r.text for r in double.posted("#ops")] == ["run ", "0 ok", "run ", "1 ok"]
        found = {
            (s.labels["key"], s.labels["name"]): s.value
            for family in text_string_to_metric_families(metrics)
            for s in family.samples
            if s.name == "guild_ledger_count" and s.labels["namespace"] == "delivery:results"
        }
        assert found == {
            (key, name): value
            for key, numbers in expected.items()
            for name, value in numbers.items()
        }
        guild_cli = [sys.executable, "-m", "guild", "stats", "--broker", url]
        with trio.fail_after(60):
            shown = await trio.run_process([*guild_cli, "--counts", "--json"], capture_stdout=True)
            plain = await trio.run_process(guild_cli, capture_stdout=True)
        assert json.loads(shown.stdout) == {"delivery:results": expected}
        table = plain.stdout.decode().splitlines()
        assert table[-3:] == [
            "delivery:results  failed  parts  rate_limited  rate_limited_seconds  sent  split",
            "#nowhere               2      0             0                     0     0      0",
            "#ops                   0      4             1                   0.2     2      2",
        ]
