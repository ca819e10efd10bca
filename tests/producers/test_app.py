"""app.enqueue / app.result outside app.run: tutorial §3 in a producer script."""

from __future__ import annotations

import pytest

import guild

from .apps import running_worker


async def test_tutorial_section_3_as_written(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The tutorial's app has no broker: a producer script uses $GUILD_BROKER, as `guild run` does.
    monkeypatch.setenv("GUILD_BROKER", url)
    app = guild.Guild("myproject")
    with running_worker(url):
        job = await app.enqueue("thumbnails", {"url": "a.png"}, key="thumb:a.png", delay=0.1)
        again = await app.enqueue("thumbnails", {"url": "a.png"}, key="thumb:a.png")
        assert again.id == job.id
        result = await app.result(job, wait=30)  # a guild.Result, or None if not done in time
    assert result is not None and result.value == {"thumbnail": "thumb-a.png"}


async def test_a_broker_url_given_per_call(url: str) -> None:
    app = guild.Guild("producer")
    with running_worker(url):
        jobs = await app.enqueue_many("double", [1, 2], broker=url)
        results = [await app.result(job, wait=30, broker=url) for job in jobs]
    assert [r.value for r in results if r is not None] == [2, 4]


async def test_an_open_broker_given_per_call(sqlite_url: str) -> None:
    app = guild.Guild("producer")
    async with guild.open_broker(sqlite_url) as broker:
        job = await app.enqueue("nobody-serves-this", 1, broker=broker)
        assert await app.result(job, broker=broker) is None


async def test_the_apps_own_url_is_used_outside_run(sqlite_url: str) -> None:
    app = guild.Guild("producer", broker=sqlite_url)
    job = await app.enqueue("nobody-serves-this", 1)
    async with guild.open_broker(sqlite_url) as broker:
        assert (await broker.stats(["nobody-serves-this"]))["nobody-serves-this"].ready == 1
    assert await app.result(job) is None


async def test_memory_outside_run_is_refused() -> None:
    app = guild.Guild("producer", broker="memory://")
    with pytest.raises(guild.UnknownBrokerURL, match="memory:// lives inside one process"):
        await app.enqueue("q", 1)


@pytest.mark.parametrize("delay", [-1.0, float("nan"), float("inf")])
async def test_a_bad_delay_is_refused_as_the_client_refuses_it(
    sqlite_url: str, delay: float
) -> None:
    app = guild.Guild("producer", broker=sqlite_url)
    with pytest.raises(ValueError, match="delay must be a finite number of seconds >= 0"):
        await app.enqueue("q", 1, delay=delay)
    async with guild.open_broker(sqlite_url) as broker:
        assert (await broker.stats(["q"]))["q"].ready == 0
