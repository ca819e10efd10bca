"""A real app on a real SQLite broker behind a real server, for the dashboard tests.

``slow`` jobs report half their progress, then wait until the test lets them go
(``Site.release``); ``flaky``
jobs fail for good (one attempt) while ``Site.failing`` is set, and succeed once
it is cleared, so a requeued dead letter can finish.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio

import guild
from guild import Job
from guild.brokers._protocol import Broker
from guild.observability import serve_http


@attrs.define
class Site:
    app: guild.Guild
    broker: Broker
    port: int
    gates: dict[str, trio.Event]
    failing: bool = True
    closing: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def release(self, job_id: str) -> None:
        self.gates.setdefault(job_id, trio.Event()).set()


@asynccontextmanager
async def site(
    tmp_path: Path,
    *,
    host: str = "127.0.0.1",
    token: str | None = None,
    redact: bool = False,
) -> AsyncIterator[Site]:
    """The app running and served on ``host`` (port 0), for the ``async with`` block."""
    app = guild.Guild("shop")
    gates: dict[str, trio.Event] = {}
    holder: list[Site] = []

    @app.worker("slow", concurrency=4)
    async def slow(job: Job) -> str:
        guild.progress(0.5, "half packed")
        if not holder[0].closing:
            await gates.setdefault(job.id, trio.Event()).wait()
        return "shipped"

    @app.worker("flaky", concurrency=4, max_attempts=1)
    async def flaky(job: Job) -> str:
        if holder[0].failing:
            raise ConnectionError(f"the warehouse refused parcel {job.payload}")
        return "delivered"

    async with (
        guild.open_broker(f"sqlite:///{tmp_path / 'dashboard.db'}") as broker,
        trio.open_nursery() as nursery,
    ):
        port = await nursery.start(
            functools.partial(serve_http, app, host=host, port=0, token=token, redact_errors=redact)
        )
        holder.append(Site(app=app, broker=broker, port=port, gates=gates))
        async with app.open(broker):
            try:
                yield holder[0]
            finally:
                holder[0].closing = True
                for event in gates.values():
                    event.set()
        nursery.cancel_scope.cancel(reason="test over")
