"""Every example runs to completion as a real process and says what it did."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))

# What each example must print, so a silent no-op cannot pass.
EXPECTED = {
    "quickstart.py": ["processed 999 jobs", "succeeded on attempt 2", "dead letter"],
    "embedded.py": ["img9.png -> thumb-img9.png", "app drained"],
    "testing_demo.py": ["200 jobs", "0 lost", "2 kills"],
    "observability_demo.py": ["health: degraded (HTTP 200)", "emails: 95 done"],
    "sandbox_demo.py": [
        "hello from the sandbox",
        "refused by rule 'shell'",
        "timed out after 0.5s",
    ],
    "ratelimit_demo.py": ["10 calls admitted"],
    "ratelimit_redis_demo.py": ["10 calls through two limiters, at most 2 at once"],
    "broker_health_demo.py": [
        "health: healthy (HTTP 200)",
        "after deleting the file: unhealthy (HTTP 503)",
        "broker check: BrokerFileReplaced: sqlite",
        "gave up",
    ],
    "custom_broker_check.py": ["conformance checks passed"],
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
    "task_worker_demo.py": [
        "command job: exit 0",
        "'report written'",
        "shell job: dead after 1 attempt",
        "rule 'shell'",
    ],
}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
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
    for needle in EXPECTED.get(path.name, []):
        assert needle in done.stdout, done.stdout
