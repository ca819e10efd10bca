"""The dashboard of a `guild run --processes 2 --http`: the parent answers for the run.

A real parent and two real children over SQLite: each child holds one job that
runs until the test releases it, so the whole run's ``/api/state`` must show
both, and the actions sent to the parent must reach jobs whichever child runs
them.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

import guild
from guild.observability._fleet import Member, dashboard_workers

from .test_fleet import ROOT, free_port, health_of, report, start, until_both_report


def test_the_worker_table_is_the_runs_and_says_each_process() -> None:
    members = [
        Member(index=0, pid=10, up=True, report=report([0.1], active=1, concurrency=2)),
        Member(index=1, pid=11, up=True, report=report([0.2], active=2, state="open")),
        Member(index=2, pid=None, up=False, error="not started yet"),
    ]
    body, _ = health_of(members)
    (name,) = dashboard_workers(body, members)
    row = dashboard_workers(body, members)[name]
    assert name == "w"
    # The worst state wins, and so its circuit; running and concurrency add up.
    assert (row["state"], row["circuit"], row["active"], row["concurrency"]) == (
        "open",
        "open",
        3,
        4,
    )
    assert {i: (p["state"], p["active"]) for i, p in row["processes"].items()} == {
        "0": ("running", 1),
        "1": ("open", 2),
    }


async def get_state(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/api/state")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def settled(state: dict[str, Any], fail_id: str) -> bool:
    """Both held jobs running and the failing job dead."""
    return len(state["running"]) == 2 and [d["id"] for d in state["dead"] or []] == [fail_id]


@pytest.mark.slow
async def test_the_parent_shows_and_acts_for_every_process(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/fleet.db"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "run.log"
    release = tmp_path / "release"
    env = {**os.environ, "GUILD_TEST_RELEASE": str(release), "PYTHONPATH": str(ROOT)}
    env.pop("GUILD_BROKER", None)
    argv = [sys.executable, "-m", "guild", "run", "tests.observability.fleet_hold_app:app"]
    argv += ["--broker", url, "--processes", "2", "--http", f"127.0.0.1:{port}"]
    argv += ["--log-format", "json"]
    parent = start(argv, env, log)
    try:
        with trio.fail_after(120):
            await until_both_report(base, parent, log)
            await scenario(url, base, release)
        parent.send_signal(signal.SIGTERM)
        code = await trio.to_thread.run_sync(parent.wait)
        assert code == 0, log.read_text()[-3000:]
    finally:
        release.touch()
        if parent.poll() is None:
            parent.kill()
            parent.wait()


async def scenario(url: str, base: str, release: Path) -> None:
    held = [guild.Job(queue="hold", payload=i) for i in range(2)]
    failing = guild.Job(queue="fail", payload="x", max_attempts=1)
    async with guild.open_broker(url) as broker:
        await broker.enqueue([*held, failing])
    held_ids = {job.id for job in held}
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        state = await get_state(client)
        while not settled(state, failing.id):
            await trio.sleep(0.1)
            state = await get_state(client)

        # Concurrency 1 and no prefetch a child: each child holds one of the two.
        assert {row["id"] for row in state["running"]} == held_ids
        assert sorted(row["process"] for row in state["running"]) == [0, 1]
        assert all(row["worker"] == "hold" for row in state["running"])
        pids = {index: p["pid"] for index, p in state["processes"].items()}
        assert set(pids) == {"0", "1"} and len(set(pids.values())) == 2
        hold = state["workers"]["hold"]
        assert (hold["active"], hold["concurrency"], hold["circuit"]) == (2, 2, "closed")
        assert {i: w["active"] for i, w in hold["processes"].items()} == {"0": 1, "1": 1}
        assert set(state["workers"]) == {"hold", "fail"}
        assert state["queues"]["hold"]["in_flight"] == 2
        assert [(f["id"], f["outcome"]) for f in state["failures"]] == [(failing.id, "dead")]
        assert "asked to fail" in state["failures"][0]["error"]

        # The same rules as one process: an action without the CSRF pair is refused.
        refused = await client.post("/api/dead/requeue", json={"ids": [failing.id]})
        assert refused.status_code == 403, refused.text
        page = await client.get("/")
        assert page.status_code == 200
        csrf = {"x-guild-csrf": client.cookies["guild_csrf"]}
        requeued = await client.post("/api/dead/requeue", json={"ids": [failing.id]}, headers=csrf)
        assert (requeued.status_code, requeued.json()) == (200, {"requeued": 1})
        # A dead job runs again only once requeued: a second failure proves it was.
        while len(state["failures"]) < 2:
            await trio.sleep(0.1)
            state = await get_state(client)
        assert [f["id"] for f in state["failures"]] == [failing.id, failing.id]
        assert state["failures"][0]["time"] >= state["failures"][1]["time"]

        # Cancel, through the parent, the job one child holds.
        victim = next(row for row in state["running"] if row["process"] == 1)
        cancelled = await client.post(
            "/api/jobs/cancel", json={"ids": [victim["id"]]}, headers=csrf
        )
        assert (cancelled.status_code, cancelled.json()) == (200, {"cancelled": [victim["id"]]})
        while victim["id"] in {row["id"] for row in state["running"]}:
            await trio.sleep(0.1)
            state = await get_state(client)
        assert [row["id"] for row in state["running"]] == list(held_ids - {victim["id"]})

        release.touch()
        while state["running"]:
            await trio.sleep(0.1)
            state = await get_state(client)
    async with guild.open_broker(url) as broker:
        stats = await broker.stats(["hold"])
    assert (stats["hold"].done, stats["hold"].cancelled) == (1, 1)
