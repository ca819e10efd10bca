"""The dashboard at /, behind a token, driven the way its page drives it.

    python examples/dashboard_demo.py

An app on a SQLite broker serves HTTP on 0.0.0.0 (every address), so the
dashboard needs a token. A "charge" job fails for good and becomes a dead
letter. The script is refused without the token, logs in with ?token= (which
answers a session cookie), reads the state, is refused a requeue without the
CSRF header, then requeues the dead letter with it, and the job succeeds.
Open http://127.0.0.1:PORT/?token=... in a browser while it sleeps at the end
(pass --linger SECONDS) to see the page itself.
"""

from __future__ import annotations

import functools
import secrets
import sys

import httpx
import trio

import guild
from guild.observability import serve_http

app = guild.Guild("billing")
card_declined = True


@app.worker("charge", max_attempts=1)
async def charge(job: guild.Job) -> str:
    if card_declined:
        raise RuntimeError(f"the card of order {job.payload['order']} was declined")
    return f"charged order {job.payload['order']}"


async def main(linger: float) -> None:
    global card_declined
    token = secrets.token_urlsafe(16)
    async with guild.open_broker("sqlite:dashboard-demo.db") as broker, trio.open_nursery() as n:
        port = await n.start(
            functools.partial(serve_http, app, host="0.0.0.0", port=0, token=token)
        )
        url = f"http://127.0.0.1:{port}"
        async with (
            app.open(broker),
            httpx.AsyncClient(base_url=url, follow_redirects=True) as client,
        ):
            job = await app.enqueue("charge", {"order": 1042})
            dead = await broker.get_result(job.id, wait=10)  # says DEAD once it is one
            assert dead is not None and dead.status is guild.JobStatus.DEAD

            refused = await client.get("/api/state")
            print(f"without the token: {refused.status_code} ({refused.json()['error']})")

            page = await client.get(f"/?token={token}")  # a session cookie, then 303 to /
            print(
                f"with ?token=: {page.status_code} at {page.url.path},"
                f" csrf cookie set: {'guild_csrf' in client.cookies}"
            )
            state = (await client.get("/api/state")).json()
            (letter,) = state["dead"]
            print(f"dead letters: {len(state['dead'])}: {letter['error']}")

            ids = {"ids": [letter["id"]]}
            bare = await client.post("/api/dead/requeue", json=ids)
            print(f"requeue without X-Guild-CSRF: {bare.status_code}")

            card_declined = False
            csrf = {"x-guild-csrf": client.cookies["guild_csrf"]}
            answer = (await client.post("/api/dead/requeue", json=ids, headers=csrf)).json()
            result = await broker.get_result(job.id, wait=10)
            assert result is not None
            print(f"requeued {answer['requeued']}; job now {result.status.value}: {result.value}")
            if linger:
                print(f"open {url}/?token={token}", flush=True)
                await trio.sleep(linger)
        n.cancel_scope.cancel()


if __name__ == "__main__":
    linger = float(sys.argv[sys.argv.index("--linger") + 1]) if "--linger" in sys.argv else 0.0
    trio.run(main, linger)
