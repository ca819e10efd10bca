"""``guild.loop_stall`` in guild.toml: Guild(loop_stall=...) set from the file,
checked as Guild() checks it, and named with file and key when wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

import guild
from guild.cli._target import apply_config
from guild.config import load_config
from guild.config._effective import effective
from tests.config._toml import write_app_toml


def test_it_loads_and_reaches_the_app(tmp_path: Path) -> None:
    config = load_config(write_app_toml(tmp_path, "loop_stall = 2\n"))
    assert config.loop_stall == 2.0 and isinstance(config.loop_stall, float)
    app = guild.Guild("stall")
    assert app.loop_stall == 5.0  # the app's own default, before the file
    apply_config(app, config)
    assert app.loop_stall == 2.0


def test_left_out_the_app_keeps_its_own(tmp_path: Path) -> None:
    config = load_config(write_app_toml(tmp_path, ""))
    assert config.loop_stall is None
    for own in (0.5, None):
        app = guild.Guild("stall", loop_stall=own)
        apply_config(app, config)
        assert app.loop_stall == own


def test_false_turns_the_watchdog_off(tmp_path: Path) -> None:
    config = load_config(write_app_toml(tmp_path, "loop_stall = false\n"))
    app = guild.Guild("stall")
    apply_config(app, config)
    assert app.loop_stall is None


def test_an_environment_can_turn_it_off(tmp_path: Path) -> None:
    path = write_app_toml(tmp_path, "loop_stall = 2\n\n[env.prod]\nguild.loop_stall = false\n")
    app = guild.Guild("stall")
    apply_config(app, load_config(path, "prod"))
    assert app.loop_stall is None


def test_an_environment_overrides_it(tmp_path: Path) -> None:
    path = write_app_toml(tmp_path, "loop_stall = 2.5\n\n[env.prod]\nguild.loop_stall = 0.25\n")
    assert load_config(path).loop_stall == 2.5
    assert load_config(path, "prod").loop_stall == 0.25


def test_config_show_names_its_origin(tmp_path: Path) -> None:
    shown = effective(write_app_toml(tmp_path, "loop_stall = 1.5\n"))
    assert shown.value("guild.loop_stall") == 1.5
    assert shown.settings["guild.loop_stall"].origin.describe() == "file"


@pytest.mark.parametrize(
    ("value", "got"),
    [
        ("0", "0"),
        ("-1.5", "-1.5"),
        ("nan", "nan"),
        ("inf", "inf"),
        ("true", "True"),
        ('"5"', "'5'"),
    ],
)
def test_bad_values_name_file_and_key(tmp_path: Path, value: str, got: str) -> None:
    path = write_app_toml(tmp_path, f"loop_stall = {value}\n")
    with pytest.raises(guild.ConfigError) as caught:
        load_config(path)
    expected = "expected a finite number of seconds > 0, or false"
    assert str(caught.value) == f"{path}: guild.loop_stall: {expected}, got {got}"


def test_a_bad_value_in_an_environment_is_named_there(tmp_path: Path) -> None:
    path = write_app_toml(tmp_path, "loop_stall = 2\n\n[env.prod]\nguild.loop_stall = 0\n")
    with pytest.raises(guild.ConfigError, match=r"env\.prod\.guild\.loop_stall: expected a finite"):
        load_config(path)
