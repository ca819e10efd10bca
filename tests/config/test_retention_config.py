"""Retention set in guild.toml and in Guild(...) reaches the broker the app opens."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

import guild
from guild import Retention
from guild.cli._target import apply_config
from guild.config import load_config
from tests.config._toml import write_app_toml


class TestRetentionTable:
    def test_keys_load(self, tmp_path: Path) -> None:
        text = '[retention]\nresults = 60\ndone = 7200.5\ndead = "forever"\nkeep_payload = true\n'
        config = load_config(write_app_toml(tmp_path, text))
        assert config.retention == {
            "results": 60.0,
            "done": 7200.5,
            "dead": None,
            "keep_payload": True,
        }

    def test_an_environment_overrides_one_key(self, tmp_path: Path) -> None:
        text = "[retention]\nresults = 60\n\n[env.prod.retention]\ndead = 604800\n"
        path = write_app_toml(tmp_path, text)
        assert load_config(path).retention == {"results": 60.0}
        assert load_config(path, "prod").retention == {"results": 60.0, "dead": 604800.0}

    @pytest.mark.parametrize(
        ("text", "key", "expected"),
        [
            ("[retention]\nresults = 0\n", "retention.results", "a finite number > 0"),
            ("[retention]\ndone = -3\n", "retention.done", "a finite number > 0"),
            ("[retention]\ndone = inf\n", "retention.done", "a finite number > 0"),
            ('[retention]\ndead = "never"\n', "retention.dead", '"forever"'),
            ("[retention]\nkeep_payload = 1\n", "retention.keep_payload", "true or false"),
            ("[retention]\nresult = 5\n", "retention.result", "one of dead, done"),
            ('[retention]\ndone = "1h"\n', "retention.done", "a finite number > 0"),
            ("[env.prod.retention]\ndone = 0\n", "env.prod.retention.done", "> 0"),
        ],
    )
    def test_bad_values_name_file_and_key(
        self, tmp_path: Path, text: str, key: str, expected: str
    ) -> None:
        path = write_app_toml(tmp_path, text)
        with pytest.raises(guild.ConfigError) as caught:
            load_config(path)
        message = str(caught.value)
        assert message.startswith(f"{path}: {key}: expected "), message
        assert expected in message

    def test_the_table_changes_the_apps_retention(self, tmp_path: Path) -> None:
        app = guild.Guild(retention=Retention(results=10, done=20, dead=30))
        config = load_config(write_app_toml(tmp_path, "[retention]\ndone = 99\n"))
        apply_config(app, config)
        assert app.retention == Retention(results=10, done=99, dead=30)

    def test_a_bad_combination_is_refused_at_load(self, tmp_path: Path) -> None:
        # Every key is checked alone by the loader; none can make a bad Retention.
        config = load_config(write_app_toml(tmp_path, '[retention]\ndead = "forever"\n'))
        app = guild.Guild()
        apply_config(app, config)
        assert app.retention.dead is None


async def test_the_apps_retention_reaches_the_broker_it_opens(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Under MockClock: a result is read at once, and gone after the app's 5 s."""
    app = guild.Guild(retention=Retention(results=5, done=5))

    @app.worker("q")
    async def double(job: guild.Job) -> int:
        return int(job.payload) * 2

    async with app.open("memory://"):
        job = await app.enqueue("q", 21)
        result = await app.result(job, wait=5)
        assert result is not None and result.value == 42
        await trio.sleep(4)
        assert await app.result(job) is not None
        await trio.sleep(2)
        assert await app.result(job) is None


async def test_the_url_wins_over_the_app(autojump_clock: trio.testing.MockClock) -> None:
    app = guild.Guild(retention=Retention(results=5, done=5))

    @app.worker("q")
    async def one(job: guild.Job) -> int:
        return 1

    async with app.open("memory://?result_ttl=100&done_ttl=100"):
        job = await app.enqueue("q")
        assert await app.result(job, wait=5) is not None
        await trio.sleep(50)
        assert await app.result(job) is not None
