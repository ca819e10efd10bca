"""Every example runs to completion as a real process and says what it did."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py")) + sorted((ROOT / "examples").glob("*/main.py"))

# What each example must print, so a silent no-op cannot pass.
EXPECTED = {
    "quickstart.py": ["processed 999 jobs", "succeeded on attempt 2", "dead letter"],
    "embedded.py": ["img9.png -> thumb-img9.png", "app drained"],
    "testing_demo.py": ["200 jobs", "0 lost", "2 kills"],
    "observability_demo.py": ["health: degraded (HTTP 200)", "emails: 95 done"],
    "fleet_demo.py": [
        "health: degraded, 2 processes up",
        "run processed 40 = ",
        "p50/p95/p99: ",
        "dead: 1; last failure: ValueError: asked to fail",
        "the run drained: exit code 0",
    ],
    "dashboard_demo.py": [
        "without the token: 401",
        "with ?token=: 200 at /, csrf cookie set: True",
        "dead letters: 1: RuntimeError: the card of order 1042 was declined",
        "requeue without X-Guild-CSRF: 403",
        "requeued 1; job now done: charged order 1042",
    ],
    "sandbox_demo.py": [
        "hello from the sandbox",
        "refused by rule 'shell'",
        "timed out after 0.5s",
    ],
    "cancel_demo.py": [
        "delayed job cancelled: True",
        "running job cancel requested: True",
        "yearly report: cancelled (cancelled) after",
        "cancelling it again: False",
        "handlers that ran: ['yearly']",
    ],
    "job_show_demo.py": [
        "running: in_flight, attempt 1, progress 50% (rows 500 of 1000)",
        "guild job show: status      in_flight",
        "guild job show: progress    50.0% rows 500 of 1000",
        "done: result {'rows': 1000}, progress 100%",
        "dead after 2 attempts: ValueError: bad address: nobody@",
        "traceback ends: ValueError: bad address: nobody@",
        "unknown id: no job with id 'nope'",
    ],
    "ratelimit_demo.py": ["10 calls admitted"],
    "cron_tz_demo.py": [
        "2026-03-29 03:00 CEST (01:00 UTC)\n  2026-03-30 02:30 CEST (00:30 UTC)",
        "2026-10-25 02:30 CEST (00:30 UTC)\n  2026-10-26 02:30 CET (01:30 UTC)",
        "job ran at 2026-03-29 01:30 CET (00:30 UTC)\n"
        "  job ran at 2026-03-29 03:00 CEST (01:00 UTC)\n"
        "  job ran at 2026-03-29 03:30 CEST (01:30 UTC)",
    ],
    "retention_demo.py": [
        "result: sent to ada@example.com",
        "done job's payload kept: null",
        "after 1 s, result still there: False",
        "after 1 s, dead letter still there: True",
        "guild purge: purged 1 job (dead) from emails",
        "dead letter after the purge: None",
    ],
    "ratelimit_redis_demo.py": ["10 calls through two limiters, at most 2 at once"],
    "worker_limits_demo.py": [
        "acme: 10 jobs",
        "globex: 2 jobs",
        "bad key: limit key function raised KeyError: 'tenant'",
        "12 admissions waited",
    ],
    "broker_health_demo.py": [
        "health: healthy (HTTP 200)",
        "after deleting the file: unhealthy (HTTP 503)",
        "broker check: BrokerFileReplaced: sqlite",
        "gave up",
    ],
    "custom_broker_check.py": ["conformance checks passed"],
    "priority_demo.py": [
        "ran: high-1(high), high-2(high), high-3(high), normal-1(normal)",
        "high before normal before low: True",
        "delayed high job ran before every low one: True",
        "guild job show: done high",
        "dead letter: high, requeued: ready high",
    ],
    "migrate_demo.py": [
        "guild stats on the old file -> exit 2: guild: error: the database",
        "has schema version 2, older than version",
        "pending (",
        "backup exists: True",
        "emails      3",
    ],
    "config_envs_demo.py": [
        'guild.broker = "sqlite:staging.db"',
        "production chosen by GUILD_ENV",
        "workers.emails.concurrency = 32 from env (env.production)",
        "workers.emails.timeout = 30.0 from file",
        "guild.processes = 2 from flag --processes",
        "unknown environment -> exit 2: guild: error: ",
    ],
    "producers_demo.py": [
        "memory:// refused",
        "sync: [1, 4, 9]",
        "sync: enqueue_and_wait: 36",
        "sync: cancelled 1, now cancelled",
        "sync: closed client refuses calls",
        "asyncio: 12 squared is 144",
        "trio: 9 squared is 81",
        "trio: enqueue_and_wait: 121",
        "trio: app.enqueue outside run: 49",
        "worker drained",
    ],
    "cli_contract_demo.py": [
        "-> exit 2: guild: error: PAYLOAD_JSON: not valid JSON (NaN is not JSON)",
        "-> exit 2: guild: error: no database at ",
        "database created by the errors: False",
        "banner: app shop on sqlite:///",
        "warning: periodic job 'nightly-report' goes to queue 'reports'",
        "drained: exit 0",
    ],
    "supervision_demo.py": [
        "charges: open (circuit open for 1s)",
        "charges: closed",
        "charges: 20 done, 0 dead; circuit closed",
    ],
    "supervisor_otp_demo.py": [
        "children started: ['database', 'poller']",
        "refused: supervisor 'mine' has a child named 'database' already (running)",
        "mailer failed its first start: smtp.example.com refused the connection",
        "gave up: supervisor 'mine' gave up: 3 restarts within 10s",
        "poller started 3 times",
    ],
    "workflow_demo.py": [
        "chord: done, sum of squares = 30",
        "undo charge: refund the card",
        "order saga: failed at 'ship': rejected: the carrier refused the parcel",
        "email    cancelled",
        "resumed: done; runs: first-app:first, first-app:pause, second-app:pause, second-app:last",
    ],
    "canary/main.py": [
        "mode healthy: promoted",
        "decision observe: soaking 10% -> soaking 50%",
        "decision observe: soaking 100% -> promoted 100%",
        "mode errors: rolled_back",
        "decision observe: soaking 10% -> rolled_back 0% (error rate",
        " 0 lost",
    ],
    "pipeline/main.py": [
        "package   done      after ['lint', 'test']",
        "package said: package: release-1.0.zip after lint, test",
        "posted to #builds: test ",
        "posted to #builds: package ",
        "posted to #builds: release / version:",
        "3 results posted to #builds",
    ],
    "result_worker_demo.py": [
        "posted 5 messages in 7 posts",
        "long message: 3 parts, 2 of them in the thread",
        "#ops answered 429 1 time(s); no post during the hold: True",
        "#nowhere: dead: rejected: #nowhere: slack error channel_not_found",
        "after reopening: #ops: parts=6, rate_limited=1, rate_limited_seconds=1, sent=4, split=1",
    ],
    "unix_socket_demo.py": [
        "worker on unix://, producer on redis+unix://: 7 squared is 49",
        "the job in db 0: False",
        "the job in db 3: True",
        "with a host: UnknownBrokerURL: a unix socket URL names a path, not a host",
    ],
    "task_worker_demo.py": [
        "command job: exit 0",
        "'report written'",
        "shell job: dead after 1 attempt",
        "rule 'shell'",
    ],
}


def _name(path: Path) -> str:
    return path.relative_to(ROOT / "examples").as_posix()


@pytest.mark.parametrize("path", EXAMPLES, ids=[_name(p) for p in EXAMPLES])
def test_example_runs(path: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for needle in EXPECTED.get(_name(path), []):
        assert needle in done.stdout, done.stdout
