"""guild.toml loading: good files load, every bad one names file, key and expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

import guild
from guild.config import load_config

GOOD = """
[guild]
app = "mypkg.jobs:app"
broker = "sqlite:jobs.db"
processes = 2

[supervisor]
strategy = "rest_for_one"
max_restarts = 5
period = 10

[workers.emails]
concurrency = 4
timeout = 2.5
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "guild.toml"
    path.write_text(text)
    return path


class TestLoadConfig:
    """A valid file becomes typed attrs values."""

    def test_good_file(self, tmp_path: Path) -> None:
        config = load_config(_write(tmp_path, GOOD))
        assert config.app == "mypkg.jobs:app"
        assert config.broker == "sqlite:jobs.db"
        assert config.processes == 2
        assert config.supervisor.strategy == "rest_for_one"
        assert config.supervisor.period == 10.0
        assert config.workers == {"emails": {"concurrency": 4, "timeout": 2.5}}


class TestConfigErrors:
    """Each mistake is a ConfigError naming the file, the key and what was expected."""

    @pytest.mark.parametrize(
        ("text", "key", "expected"),
        [
            ('[guild]\napp = "x:y"\nprocesses = "two"\n', "guild.processes", "an integer > 0"),
            ('[guild]\napp = "x:y"\nprocesses = 0\n', "guild.processes", "an integer > 0"),
            ('[guild]\napp = "x:y"\nprocesses = true\n', "guild.processes", "an integer > 0"),
            ('[guild]\napp = "nocolon"\n', "guild.app", "module:attribute"),
            ("[guild]\n", "guild.app", "module:attribute"),
            ('[guild]\napp = "x:y"\ncolour = 1\n', "guild.colour", "one of"),
            (
                '[guild]\napp = "x:y"\n[supervisor]\nstrategy = "one_for_none"\n',
                "supervisor.strategy",
                "one_for_one | one_for_all | rest_for_one",
            ),
            (
                '[guild]\napp = "x:y"\n[workers.a]\nconcurrency = -3\n',
                "workers.a.concurrency",
                "an integer > 0",
            ),
            ('[guild]\napp = "x:y"\n[workers.a]\ntimout = 3\n', "workers.a.timout", "one of"),
            ('[guild]\napp = "x:y"\n[workers]\na = 3\n', "workers.a", "a table"),
            ('[guild\napp = "x:y"\n', "(syntax)", "valid TOML"),
            ("[extra]\n", "extra", "one of"),
        ],
    )
    def test_bad_values_are_named(self, tmp_path: Path, text: str, key: str, expected: str) -> None:
        path = _write(tmp_path, text)
        with pytest.raises(guild.ConfigError) as info:
            load_config(path)
        assert info.value.path == str(path)
        assert info.value.key == key
        assert expected in info.value.expected
        assert str(path) in str(info.value) and key in str(info.value)

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(guild.ConfigError, match="an existing TOML file"):
            load_config(tmp_path / "nope.toml")


class TestApplyConfig:
    """The [supervisor] table overrides only the keys it names."""

    def test_keys_left_out_keep_the_apps_own_options(self, tmp_path: Path) -> None:
        from guild.cli._target import apply_config

        backoff = guild.Backoff(initial=2.0)
        app = guild.Guild(
            "mine",
            supervision=guild.SupervisorOptions(max_restarts=9, period=99.0, backoff=backoff),
        )
        config = load_config(
            _write(tmp_path, '[guild]\napp = "x:y"\n[supervisor]\nstrategy = "one_for_all"\n')
        )
        apply_config(app, config)
        assert app.supervision == guild.SupervisorOptions(
            strategy=guild.Strategy.ONE_FOR_ALL, max_restarts=9, period=99.0, backoff=backoff
        )
        untouched = guild.Guild("defaults")
        apply_config(untouched, load_config(_write(tmp_path, '[guild]\napp = "x:y"\n')))
        assert untouched.supervision == guild.SupervisorOptions()
