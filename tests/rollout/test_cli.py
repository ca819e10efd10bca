"""``guild canary`` as an operator runs it: real processes on a real SQLite file."""

from __future__ import annotations

import json
from pathlib import Path

import trio

import guild
from tests.cli.conftest import run_guild


def canary(url: str, *args: str) -> tuple[int, str, str]:
    done = run_guild("canary", "--broker", url, *args)
    return done.returncode, done.stdout, done.stderr


async def opened(url: str) -> None:
    async with guild.open_broker(url):
        pass


def test_an_operator_walks_a_rollout_by_hand(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/guild.db"
    code, _, err = canary(url, "status")
    assert code == 2 and "no database" in err  # reading never creates one
    trio.run(opened, url)
    code, out, _ = canary(url, "status")
    assert (code, out.strip()) == (0, "no canary rollouts")

    code, out, err = canary(url, "start", "orders", "--soak", "30", "--stages", "0.2,0.6,1")
    assert (code, out.strip()) == (0, "orders: soaking at 20%"), err
    code, out, err = canary(url, "start", "orders")
    assert code == 1
    assert "cannot start a canary rollout that is soaking: it is rolling out already" in err

    assert canary(url, "promote", "orders")[1].strip() == "orders: soaking at 60%"
    assert canary(url, "pause", "orders")[1].strip() == "orders: paused at 60%"
    code, out, _ = canary(url, "--json", "status", "orders")
    (status,) = json.loads(out)
    assert (status["phase"], status["share"], status["lane"]) == ("paused", 0.6, "orders@canary")
    assert status["policy"]["stages"] == [0.2, 0.6, 1.0] and status["policy"]["soak"] == 30
    assert [(d["event"], d["to_share"]) for d in status["decisions"]] == [
        ("start", 0.2),
        ("promote", 0.6),
        ("pause", 0.6),
    ]

    # Jobs waiting in the lane go back to the queue on a rollback.
    async def fill_lane() -> None:
        async with guild.open_broker(url) as broker:
            await broker.enqueue([guild.Job(queue="orders@canary", payload=i) for i in range(7)])

    trio.run(fill_lane)
    code, out, err = canary(url, "rollback", "orders")
    assert code == 0, err
    assert out.strip() == (
        "orders: rolled_back at 0%; 7 waiting jobs handed back to orders, 0 dead ones requeued there"
    )

    async def counts() -> dict[str, int]:
        async with guild.open_broker(url) as broker:
            stats = await broker.stats(["orders", "orders@canary"])
            return {q: s.ready for q, s in stats.items()}

    assert trio.run(counts) == {"orders": 7, "orders@canary": 0}
    # A second rollback refuses nothing: it sweeps the lane again.
    code, out, _ = canary(url, "rollback", "orders")
    assert code == 0 and "0 waiting jobs" in out
    code, _, err = canary(url, "promote", "orders")
    assert code == 1 and "rolled_back" in err


def test_bad_policy_flags_are_usage_errors(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/guild.db"
    code, _, err = canary(url, "start", "orders", "--stages", "0.5,0.2,1")
    assert code == 2 and "canary policy: stages must rise, got [0.5, 0.2, 1.0]" in err
    code, _, err = canary(url, "start", "orders", "--soak", "-1")
    assert code == 2 and "expected seconds above 0" in err
    # The refused starts made no database: promoting there names the missing file.
    code, _, err = canary(url, "promote", "orders")
    assert code == 2 and f"no database at {tmp_path}/guild.db" in err, err

    async def make_database() -> None:
        async with guild.open_broker(url):
            pass

    trio.run(make_database)
    code, _, err = canary(url, "promote", "orders")
    assert code == 1 and "no rollout was started" in err
