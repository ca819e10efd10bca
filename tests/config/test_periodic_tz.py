"""`tz` in [periodic.NAME]: loaded, checked, applied to the app, shown by `guild config show`."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

import guild
from guild.cli._target import apply_config
from guild.config import load_config
from tests.cli.conftest import run_guild

HEAD = '[guild]\napp = "x:y"\n'


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "guild.toml"
    path.write_text(HEAD + text)
    return path


def _applied(tmp_path: Path, text: str, app: guild.Guild | None = None) -> guild.Guild:
    app = app or guild.Guild("p")
    apply_config(app, load_config(_write(tmp_path, text)))
    return app


class TestLoad:
    def test_tz_is_loaded_beside_its_cron(self, tmp_path: Path) -> None:
        text = '[periodic.morning]\nschedule = "0 9 * * 1-5"\ntz = "Europe/Paris"\nqueue = "q"\n'
        config = load_config(_write(tmp_path, text))
        assert config.periodic == {
            "morning": {"schedule": "0 9 * * 1-5", "tz": "Europe/Paris", "queue": "q"}
        }

    def test_tz_in_an_environment(self, tmp_path: Path) -> None:
        text = (
            '[periodic.morning]\nschedule = "0 9 * * *"\nqueue = "q"\n'
            '[env.us.periodic.morning]\ntz = "America/New_York"\n'
        )
        assert "tz" not in load_config(_write(tmp_path, text)).periodic["morning"]
        assert load_config(_write(tmp_path, text), "us").periodic["morning"]["tz"] == (
            "America/New_York"
        )

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ('schedule = "0 9 * * *"\ntz = "Europe/Pariss"\n', "'Europe/Pariss' is unknown"),
            ('schedule = "0 9 * * *"\ntz = ""\n', "an IANA time zone name"),
            ('schedule = "0 9 * * *"\ntz = 1\n', "an IANA time zone name"),
            ('schedule = 60\ntz = "Europe/Paris"\n', "no time zone beside a schedule in seconds"),
        ],
    )
    def test_a_bad_tz_names_the_file_and_key(
        self, tmp_path: Path, text: str, expected: str
    ) -> None:
        path = _write(tmp_path, "[periodic.morning]\n" + text + 'queue = "q"\n')
        with pytest.raises(guild.ConfigError) as info:
            load_config(path)
        assert (info.value.path, info.value.key) == (str(path), "periodic.morning.tz")
        assert expected in str(info.value)
        assert str(info.value).startswith(f"{path}: periodic.morning.tz: expected ")


class TestApply:
    def test_a_new_schedule_runs_in_its_zone(self, tmp_path: Path) -> None:
        app = _applied(
            tmp_path, '[periodic.m]\nschedule = "30 2 * * *"\ntz = "Europe/Paris"\nqueue = "q"\n'
        )
        schedule = app.schedules["m"].schedule
        assert schedule == guild.Cron("30 2 * * *", tz="Europe/Paris")
        # 02:30 does not exist in Paris on 2026-03-29: it fires at the jump, 01:00 UTC.
        after = dt.datetime(2026, 3, 28, 12, tzinfo=dt.UTC)
        assert schedule.next_fire(after) == dt.datetime(2026, 3, 29, 1, tzinfo=dt.UTC)

    def test_tz_alone_changes_the_zone_of_the_apps_cron(self, tmp_path: Path) -> None:
        app = guild.Guild("p")
        app.periodic("0 9 * * *", "q", name="m")
        _applied(tmp_path, '[periodic.m]\ntz = "Asia/Kolkata"\n', app)
        assert app.schedules["m"].schedule == guild.Cron("0 9 * * *", tz="Asia/Kolkata")

    def test_a_new_expression_keeps_the_apps_zone(self, tmp_path: Path) -> None:
        app = guild.Guild("p")
        app.periodic(guild.Cron("0 9 * * *", tz="Asia/Kolkata"), "q", name="m")
        _applied(tmp_path, '[periodic.m]\nschedule = "0 10 * * *"\n', app)
        assert app.schedules["m"].schedule == guild.Cron("0 10 * * *", tz="Asia/Kolkata")

    def test_tz_for_an_interval_schedule_is_refused(self, tmp_path: Path) -> None:
        app = guild.Guild("p")
        app.periodic(60, "q", name="m")
        with pytest.raises(guild.ConfigError) as info:
            _applied(tmp_path, '[periodic.m]\ntz = "Europe/Paris"\n', app)
        assert info.value.key == "periodic.m.tz"
        assert "every 60 seconds" in info.value.expected


class TestConfigShow:
    def test_tz_is_shown_with_its_origin(self, tmp_path: Path) -> None:
        path = _write(
            tmp_path, '[periodic.m]\nschedule = "0 9 * * *"\ntz = "Europe/Paris"\nqueue = "q"\n'
        )
        done = run_guild("config", "show", str(path), "--json", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["settings"]["periodic.m.tz"] == {
            "value": "Europe/Paris",
            "source": "file",
            "from": str(path),
        }
