"""The dashboard over real HTTP: a real server, httpx, trio-websocket, a SQLite broker.

Who may do what is in tests/observability/test_access.py (the pure rules);
here each rule is seen through the server: the token refused and accepted, a
cross-site action refused, and the actions changing the real broker.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import trio
import trio_websocket

import guild
from guild import Job, JobStatus
from guild.observability import JobFinished, JobProgressed, Outcome
from guild.observability._dashboard import Tracker, running

from .dashboard_app import Site, site
from .helpers import eventually

TOKEN = "correct-horse-battery-staple"


async def _state(client: httpx.AsyncClient) -> dict:
    response = await client.get("/api/state")
    assert response.status_code == 200, response.text
    return response.json()


async def _dead_letter(s: Site, client: httpx.AsyncClient) -> str:
    """Enqueue a flaky job while failing; wait for its dead letter; its id."""
    job = await s.app.enqueue("flaky", 7, broker=s.broker)
    letter = None
    while letter is None:
        letter = await s.broker.get_dead(job.id)
        await trio.sleep(0.02)
    return job.id


async def _handshake(s: Site, headers: dict[str, str]) -> int:
    """The status a websocket opening handshake to /events gets (101: accepted).

    Made by hand with httpx: trio-websocket leaves its socket open when a
    handshake is refused.
    """
    upgrade = {
        "connection": "Upgrade",
        "upgrade": "websocket",
        "sec-websocket-version": "13",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
        **headers,
    }
    async with httpx.AsyncClient(base_url=s.url) as client:
        return (await client.get("/events", headers=upgrade)).status_code


def _csrf(client: httpx.AsyncClient) -> dict[str, str]:
    return {"x-guild-csrf": client.cookies["guild_csrf"]}


class TestLoopback:
    """Bound to 127.0.0.1: no login, but actions still need the CSRF header."""

    async def test_page_assets_and_state(self, tmp_path: Path) -> None:
        with trio.fail_after(20):
            async with site(tmp_path) as s, httpx.AsyncClient(base_url=s.url) as client:
                page = await client.get("/")
                script = await client.get("/dashboard/app.js")
                style = await client.get("/dashboard/app.css")
                job = await s.app.enqueue("slow", 1, broker=s.broker)
                dead_id = await _dead_letter(s, client)
                await eventually(lambda: s.app.workers()["slow"].running == 1)
                body = await _state(client)
                while body["running"][0]["progress"] is None:  # written within 0.25 s
                    await trio.sleep(0.05)
                    body = await _state(client)
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert '<script src="/dashboard/app.js"' in page.text
        # No asset from anywhere else: the page loads its own script and style only.
        assert "http" not in page.text.replace("http-equiv", "")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert "guild_csrf=" in page.headers["set-cookie"]
        assert "SameSite=Strict" in page.headers["set-cookie"]
        assert script.status_code == 200 and "new WebSocket" in script.text
        assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")
        assert body["app"] == "shop"
        assert body["login"] is False
        assert body["queues"]["slow"]["in_flight"] == 1
        assert body["queues"]["flaky"]["dead"] == 1
        assert body["workers"]["slow"]["circuit"] == "closed"
        assert body["workers"]["slow"]["concurrency"] == 4
        assert [r["id"] for r in body["running"]] == [job.id]
        assert body["running"][0]["worker"] == "slow"
        assert body["running"][0]["progress"] == {"fraction": 0.5, "message": "half packed"}
        (failure,) = body["failures"]
        assert failure["id"] == dead_id and failure["outcome"] == "dead"
        assert "the warehouse refused parcel 7" in failure["error"]
        (letter,) = body["dead"]
        assert letter["id"] == dead_id
        assert "ConnectionError: the warehouse refused parcel 7" in letter["traceback"]
        assert body["workflows"] == []  # SQLite keeps workflows; there are none

    async def test_workflows_show_their_steps(self, tmp_path: Path) -> None:
        with trio.fail_after(20):
            async with site(tmp_path) as s, httpx.AsyncClient(base_url=s.url) as client:
                flow = guild.chain(
                    guild.Step("pack", "slow", 1), guild.Step("ship", "slow", 2), name="order"
                )
                workflow_id = await s.app.submit(flow)
                await eventually(lambda: s.app.workers()["slow"].running == 1)
                body = await _state(client)
        (shown,) = body["workflows"]
        assert shown["id"] == workflow_id
        assert (shown["name"], shown["status"]) == ("order", "running")
        assert shown["steps"] == [
            {"name": "pack", "state": "running"},
            {"name": "ship", "state": "pending"},
        ]

    async def test_actions_need_the_csrf_header(self, tmp_path: Path) -> None:
        with trio.fail_after(20):
            async with site(tmp_path) as s, httpx.AsyncClient(base_url=s.url) as client:
                await client.get("/")
                dead_id = await _dead_letter(s, client)
                ids = {"ids": [dead_id]}
                bare = await client.post("/api/dead/requeue", json=ids)
                wrong = await client.post(
                    "/api/dead/requeue", json=ids, headers={"x-guild-csrf": "guess"}
                )
                cross = await client.post(
                    "/api/dead/requeue",
                    json=ids,
                    headers={**_csrf(client), "origin": "https://evil.example"},
                )
                fetched = await client.post(
                    "/api/dead/requeue",
                    json=ids,
                    headers={**_csrf(client), "sec-fetch-site": "cross-site"},
                )
                still_dead = await s.broker.get_dead(dead_id)
                s.failing = False
                own = f"{s.url}"
                done = await client.post(
                    "/api/dead/requeue", json=ids, headers={**_csrf(client), "origin": own}
                )
                result = await s.broker.get_result(dead_id, wait=10)
        for refused in (bare, wrong, cross, fetched):
            assert refused.status_code == 403, refused.text
        assert "x-guild-csrf" in bare.json()["error"]
        assert "evil.example" in cross.json()["error"]
        assert still_dead is not None
        assert done.status_code == 200, done.text
        assert done.json() == {"requeued": 1}
        assert result is not None and result.status is JobStatus.DONE
        assert result.value == "delivered"

    async def test_cancel_a_delayed_and_a_running_job(self, tmp_path: Path) -> None:
        with trio.fail_after(20):
            async with site(tmp_path) as s, httpx.AsyncClient(base_url=s.url) as client:
                await client.get("/")
                later = await s.app.enqueue("slow", 1, delay=3600, broker=s.broker)
                now = await s.app.enqueue("slow", 2, broker=s.broker)
                await eventually(lambda: s.app.workers()["slow"].running == 1)
                answer = await client.post(
                    "/api/jobs/cancel",
                    json={"ids": [later.id, now.id, "no-such-job"]},
                    headers=_csrf(client),
                )
                delayed = await s.broker.get_result(later.id, wait=5)
                running = await s.broker.get_result(now.id, wait=5)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"cancelled": [later.id, now.id]}
        assert delayed is not None and delayed.status is JobStatus.CANCELLED
        assert running is not None and running.status is JobStatus.CANCELLED

    async def test_bad_action_bodies(self, tmp_path: Path) -> None:
        with trio.fail_after(20):
            async with site(tmp_path) as s, httpx.AsyncClient(base_url=s.url) as client:
                await client.get("/")
                headers = {**_csrf(client), "content-type": "application/json"}
                answers = [
                    await client.post("/api/jobs/cancel", content=body, headers=headers)
                    for body in (b"not json", b"[]", b'{"ids": "x"}', b'{"ids": [""]}')
                ]
                get = await client.get("/api/jobs/cancel")
        assert [a.status_code for a in answers] == [400, 400, 400, 400]
        assert "JSON" in answers[0].json()["error"]
        assert "non-empty strings" in answers[3].json()["error"]
        assert get.status_code == 405

    async def test_a_foreign_host_header_is_refused(self, tmp_path: Path) -> None:
        """DNS rebinding: a page on evil.example that resolves to 127.0.0.1."""
        with trio.fail_after(20):
            async with site(tmp_path) as s, httpx.AsyncClient(base_url=s.url) as client:
                page = await client.get("/", headers={"host": "evil.example"})
                localhost = await client.get("/", headers={"host": f"localhost:{s.port}"})
        assert page.status_code == 403
        assert "evil.example" in page.json()["error"]
        assert localhost.status_code == 200

    async def test_events_refuse_a_foreign_origin(self, tmp_path: Path) -> None:
        with trio.fail_after(20):
            async with site(tmp_path) as s:
                url = f"ws://127.0.0.1:{s.port}/events"
                refused = await _handshake(s, {"origin": "https://evil.example"})
                async with trio_websocket.open_websocket_url(
                    url, extra_headers=[("origin", s.url)]
                ) as ws:
                    (hello,) = json.loads(await ws.get_message())
        assert refused == 403
        assert hello["type"] == "hello"


class TestNonLoopback:
    """Bound to 0.0.0.0: the dashboard, /events and the actions need the token."""

    async def test_no_token_configured_refuses_the_dashboard(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("GUILD_HTTP_TOKEN", raising=False)
        with trio.fail_after(20):
            async with (
                site(tmp_path, host="0.0.0.0") as s,
                httpx.AsyncClient(base_url=s.url) as client,
            ):
                page = await client.get("/")
                state = await client.get("/api/state")
                health = await client.get("/health")
                metrics = await client.get("/metrics")
        assert page.status_code == 403 and state.status_code == 403
        assert "GUILD_HTTP_TOKEN" in page.json()["error"]
        # Probes and scrapers keep working.
        assert health.status_code == 200 and metrics.status_code == 200

    async def test_the_token_is_refused_and_accepted(self, tmp_path: Path) -> None:
        with trio.fail_after(20):
            async with site(tmp_path, host="0.0.0.0", token=TOKEN) as s:
                async with httpx.AsyncClient(base_url=s.url) as anonymous:
                    bare = [
                        await anonymous.get("/"),
                        await anonymous.get("/dashboard/app.js"),
                        await anonymous.get("/api/state"),
                        await anonymous.get("/?token=wrong"),
                        await anonymous.get("/api/state", headers={"authorization": "Bearer x"}),
                        await anonymous.post("/health/acknowledge"),
                    ]
                    forged = await anonymous.get(
                        "/api/state", headers={"cookie": "guild_session=abc.def"}
                    )
                    bearer = await anonymous.get(
                        "/api/state", headers={"authorization": f"Bearer {TOKEN}"}
                    )
                async with httpx.AsyncClient(base_url=s.url) as browser:
                    login = await browser.get(f"/?token={TOKEN}")
                    page = await browser.get("/")
                    state = await browser.get("/api/state")
                    dead_id = await _dead_letter(s, browser)
                    no_csrf = await browser.post("/api/dead/requeue", json={"ids": [dead_id]})
                    requeued = await browser.post(
                        "/api/dead/requeue", json={"ids": [dead_id]}, headers=_csrf(browser)
                    )
        for refused in bare:
            assert refused.status_code == 401, (refused.request.url, refused.text)
        assert TOKEN not in bare[0].text
        assert forged.status_code == 401
        assert bearer.status_code == 200 and bearer.json()["login"] is True
        assert login.status_code == 303 and login.headers["location"] == "/"
        assert "HttpOnly" in login.headers["set-cookie"]
        assert TOKEN not in login.headers["set-cookie"]
        assert page.status_code == 200 and state.status_code == 200
        assert no_csrf.status_code == 403
        assert requeued.status_code == 200 and requeued.json() == {"requeued": 1}

    async def test_the_token_comes_from_the_environment(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("GUILD_HTTP_TOKEN", TOKEN)
        with trio.fail_after(20):
            async with (
                site(tmp_path, host="0.0.0.0") as s,
                httpx.AsyncClient(base_url=s.url) as client,
            ):
                bare = await client.get("/api/state")
                bearer = await client.get(
                    "/api/state", headers={"authorization": f"Bearer {TOKEN}"}
                )
        assert (bare.status_code, bearer.status_code) == (401, 200)

    async def test_events_need_the_token(self, tmp_path: Path) -> None:
        with trio.fail_after(20):
            async with site(tmp_path, host="0.0.0.0", token=TOKEN) as s:
                url = f"ws://127.0.0.1:{s.port}/events"
                refused = await _handshake(s, {})
                wrong = await _handshake(s, {"authorization": "Bearer nope"})
                async with httpx.AsyncClient(base_url=s.url) as browser:
                    await browser.get(f"/?token={TOKEN}")
                    session = browser.cookies["guild_session"]
                for headers in (
                    [("authorization", f"Bearer {TOKEN}")],
                    [("cookie", f"guild_session={session}")],
                ):
                    async with trio_websocket.open_websocket_url(url, extra_headers=headers) as ws:
                        (hello,) = json.loads(await ws.get_message())
                        assert hello["type"] == "hello"
                        job = await s.app.enqueue("slow", 3, broker=s.broker)
                        seen: list[dict] = []
                        while not any(e.get("task_id") == job.id for e in seen):
                            seen.extend(json.loads(await ws.get_message()))
                        s.release(job.id)
        assert (refused, wrong) == (403, 403)
        assert any(e["type"] == "job_started" for e in seen)


class TestRedaction:
    async def test_health_hides_exception_messages(self, tmp_path: Path) -> None:
        with trio.fail_after(20):
            async with site(tmp_path, redact=True) as s, httpx.AsyncClient(base_url=s.url) as c:
                s.app.instruments.emit(
                    "worker_state_changed",
                    _state_changed("flaky", "open", "OSError: password=hunter2 rejected"),
                )
                redacted = (await c.get("/health")).json()
            async with site(tmp_path) as s, httpx.AsyncClient(base_url=s.url) as c:
                s.app.instruments.emit(
                    "worker_state_changed",
                    _state_changed("flaky", "open", "OSError: password=hunter2 rejected"),
                )
                plain = (await c.get("/health")).json()
        assert "hunter2" not in json.dumps(redacted)
        assert redacted["workers"]["flaky"]["last_error"] == "redacted"
        assert redacted["checks"]["worker:flaky:state"]["detail"] == "redacted"
        assert redacted["workers"]["flaky"]["state"] == "open"
        assert plain["workers"]["flaky"]["last_error"] == "OSError: password=hunter2 rejected"


def _state_changed(worker: str, state: str, error: str):  # -> WorkerStateChanged
    from .helpers import state as build

    return build(worker, state, error=error)


class TestTracker:
    """What the dashboard remembers from events, fed by hand."""

    def test_failures_newest_first_and_bounded(self) -> None:
        tracker = Tracker(failures=2, clock=lambda: 100.0)
        for n, outcome in enumerate([Outcome.RETRY, Outcome.DONE, Outcome.DEAD, Outcome.RETRY]):
            job = Job(queue="q", id=f"job-{n}", attempt=1)
            tracker.job_finished(
                JobFinished(worker="w", job=job, outcome=outcome, duration=0.1, error=f"E{n}")
            )
        assert [(f["id"], f["outcome"], f["error"]) for f in tracker.failures()] == [
            ("job-3", "retry", "E3"),
            ("job-2", "dead", "E2"),
        ]

    def test_progress_of_running_jobs_only(self) -> None:
        tracker = Tracker()
        jobs = {name: Job(queue="q", id=name, attempt=1) for name in ("a", "b", "c")}
        for name, job in jobs.items():
            tracker.job_progress(
                JobProgressed(worker="w", job=job, fraction=0.25, message=name, at=0.0)
            )
        tracker.job_finished(
            JobFinished(worker="w", job=jobs["a"], outcome=Outcome.DONE, duration=0.1)
        )
        rows = running({"w": [(jobs["b"], 2.0)], "v": [(jobs["c"], 5.0)]}, 1000.0, tracker)
        # "a" finished; "c" and "b" run, oldest first; nothing else is kept.
        assert rows == [
            {
                "id": "c",
                "worker": "v",
                "queue": "q",
                "attempt": 1,
                "started": 995.0,
                "progress": {"fraction": 0.25, "message": "c"},
            },
            {
                "id": "b",
                "worker": "w",
                "queue": "q",
                "attempt": 1,
                "started": 998.0,
                "progress": {"fraction": 0.25, "message": "b"},
            },
        ]
        assert tracker.progress({"b"}) == {"b": {"fraction": 0.25, "message": "b"}}
        assert tracker.progress(set()) == {}
