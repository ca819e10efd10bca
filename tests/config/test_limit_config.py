"""[workers.NAME.limit] in guild.toml: loaded, checked (file and key named), applied."""

from __future__ import annotations

from pathlib import Path

import pytest

import guild
from guild.cli._target import apply_config
from guild.config import load_config
from guild.ratelimit import Rate

HEAD = '[guild]\napp = "x:y"\n'


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "guild.toml"
    path.write_text(HEAD + text)
    return path


def _tenant(job: guild.Job) -> str:
    return str(job.payload)


def _app() -> guild.Guild:
    app = guild.Guild("mine")

    @app.worker("keyed", limit=guild.Limit(rate="1/s", key=_tenant))
    async def keyed(job: guild.Job) -> None:
        pass

    @app.worker("plain")
    async def plain(job: guild.Job) -> None:
        pass

    return app


class TestLoad:
    def test_a_limit_table(self, tmp_path: Path) -> None:
        config = load_config(
            _write(
                tmp_path,
                "[workers.keyed]\nconcurrency = 4\n[workers.keyed.limit]\n"
                'rate = "600/min"\nconcurrency = 2\nburst = 5\nmax_idle_keys = 100\n',
            )
        )
        assert config.workers == {
            "keyed": {
                "concurrency": 4,
                "limit": {
                    "rate": Rate(rate=600.0, period=60.0),
                    "concurrency": 2,
                    "burst": 5,
                    "max_idle_keys": 100,
                },
            }
        }

    @pytest.mark.parametrize(
        ("text", "key", "expected"),
        [
            ('rate = "10"', "workers.w.limit.rate", 'a rate string such as "10/s"'),
            ('rate = "10/fortnight"', "workers.w.limit.rate", 'a rate string such as "10/s"'),
            ("rate = 10", "workers.w.limit.rate", 'a rate string such as "10/s"'),
            ("concurrency = 0", "workers.w.limit.concurrency", "an integer > 0"),
            ("concurrency = 1.5", "workers.w.limit.concurrency", "an integer > 0"),
            ("burst = true", "workers.w.limit.burst", "an integer > 0"),
            ("key = 'tenant'", "workers.w.limit.key", "one of"),
        ],
    )
    def test_bad_values_name_file_and_key(
        self, tmp_path: Path, text: str, key: str, expected: str
    ) -> None:
        path = _write(tmp_path, f"[workers.w.limit]\n{text}\n")
        with pytest.raises(guild.ConfigError) as info:
            load_config(path)
        assert info.value.path == str(path)
        assert info.value.key == key
        assert expected in info.value.expected

    def test_limit_must_be_a_table(self, tmp_path: Path) -> None:
        with pytest.raises(guild.ConfigError) as info:
            load_config(_write(tmp_path, '[workers.w]\nlimit = "10/s"\n'))
        assert (info.value.key, info.value.expected) == ("workers.w.limit", "a table")


class TestApply:
    def test_the_file_changes_numbers_and_keeps_the_key_function(self, tmp_path: Path) -> None:
        app = _app()
        apply_config(
            app,
            load_config(_write(tmp_path, '[workers.keyed.limit]\nrate = "5/s"\nconcurrency = 3\n')),
        )
        assert app.specs["keyed"].limit == guild.Limit(
            rate=Rate(rate=5.0), concurrency=3, key=_tenant
        )

    def test_a_worker_without_a_limit_gets_a_worker_wide_one(self, tmp_path: Path) -> None:
        app = _app()
        apply_config(app, load_config(_write(tmp_path, "[workers.plain.limit]\nconcurrency = 2\n")))
        assert app.specs["plain"].limit == guild.Limit(concurrency=2)

    def test_an_incomplete_limit_names_the_table(self, tmp_path: Path) -> None:
        path = _write(tmp_path, "[workers.plain.limit]\nburst = 2\n")
        with pytest.raises(guild.ConfigError) as info:
            apply_config(_app(), load_config(path))
        assert (info.value.path, info.value.key) == (str(path), "workers.plain.limit")
        assert "needs a rate" in info.value.expected
