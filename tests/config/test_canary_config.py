"""``[canary]`` in guild.toml: the ``guild.CanaryPolicy`` of ``guild run --canary``
and ``guild canary start``; a flag wins over ``[env.NAME]``, which wins over the
file, which wins over the default."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

import guild
from guild.cli import parser
from guild.cli._canary import policy_from
from guild.config import effective, load_config
from guild.config._layers import Origin
from tests.cli.conftest import run_guild
from tests.config._toml import write_toml

BASE = """\
[guild]
app = "myproject.jobs:app"

[canary]
stages = [0.1, 0.4, 1]
soak = 30
error_rate = 0.02
p95 = 2.5
min_jobs = 50

[env.prod.canary]
soak = 600
min_jobs = 200
"""

# The defaults of guild.CanaryPolicy, written out (docs/rollout.md).
DEFAULTS = {
    "canary.stages": [0.1, 0.5, 1.0],
    "canary.soak": 60.0,
    "canary.error_rate": 0.01,
    "canary.p95": 5.0,
    "canary.min_jobs": 20,
}


def test_defaults_written_out_match_the_policy() -> None:
    policy = guild.CanaryPolicy()
    assert {
        "canary.stages": list(policy.stages),
        "canary.soak": policy.soak,
        "canary.error_rate": policy.error_rate,
        "canary.p95": policy.p95,
        "canary.min_jobs": policy.min_jobs,
    } == DEFAULTS


def test_the_table_loads_every_policy_field(tmp_path: Path) -> None:
    config = load_config(write_toml(tmp_path, BASE))
    assert config.canary == {
        "stages": (0.1, 0.4, 1.0),
        "soak": 30.0,
        "error_rate": 0.02,
        "p95": 2.5,
        "min_jobs": 50,
    }


def test_no_table_changes_nothing(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[guild]\napp = "a:b"\n')
    assert load_config(path).canary == {}


def test_the_env_section_overlays_key_by_key(tmp_path: Path) -> None:
    config = load_config(write_toml(tmp_path, BASE), "prod")
    assert config.canary == {
        "stages": (0.1, 0.4, 1.0),
        "soak": 600.0,
        "error_rate": 0.02,
        "p95": 2.5,
        "min_jobs": 200,
    }


@pytest.mark.parametrize(
    ("line", "key", "expected"),
    [
        ("stages = [0.5, 0.2, 1.0]", "canary.stages", "rising"),
        ("stages = [0.1, 0.5]", "canary.stages", "ending at 1.0"),
        ("stages = []", "canary.stages", "an array of shares"),
        ("stages = [0, 1]", "canary.stages", "(0, 1]"),
        ('stages = "0.1,1"', "canary.stages", "an array of shares"),
        ("stages = [true, 1]", "canary.stages", "an array of shares"),
        ("soak = 0", "canary.soak", "> 0"),
        ('soak = "60s"', "canary.soak", "> 0"),
        ("soak = inf", "canary.soak", "> 0"),
        ("error_rate = 1.5", "canary.error_rate", "a fraction from 0 to 1"),
        ("error_rate = -0.1", "canary.error_rate", "a fraction from 0 to 1"),
        ("p95 = -1", "canary.p95", "> 0"),
        ("min_jobs = 0", "canary.min_jobs", "an integer > 0"),
        ("min_jobs = 2.5", "canary.min_jobs", "an integer > 0"),
        ("min_jobs = true", "canary.min_jobs", "an integer > 0"),
        ("soak_time = 60", "canary.soak_time", "min_jobs"),
    ],
)
def test_a_bad_value_names_file_and_key(tmp_path: Path, line: str, key: str, expected: str) -> None:
    path = write_toml(tmp_path, f'[guild]\napp = "a:b"\n\n[canary]\n{line}\n')
    with pytest.raises(guild.ConfigError) as caught:
        load_config(path)
    assert (caught.value.path, caught.value.key) == (str(path), key)
    assert expected in caught.value.expected
    assert str(caught.value).startswith(f"{path}: {key}: expected ")


def test_a_bad_value_in_an_env_section_is_named_there(tmp_path: Path) -> None:
    path = write_toml(tmp_path, BASE + "\n[env.staging.canary]\nmin_jobs = 0\n")
    # Found whichever environment is chosen.
    for env in (None, "prod", "staging"):
        with pytest.raises(guild.ConfigError) as caught:
            load_config(path, env)
        assert caught.value.key == "env.staging.canary.min_jobs"


def test_canary_is_not_a_table(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[guild]\napp = "a:b"\n\n[env.x]\ncanary = 3\n')
    with pytest.raises(guild.ConfigError) as caught:
        load_config(path, "x")
    assert caught.value.key == "env.x.canary"


def _run_policy(path: Path, *argv: str, env: str | None = None) -> guild.CanaryPolicy | None:
    """The policy ``guild run FILE --canary ARGV`` runs with, through its real parser."""
    args = parser().parse_args(["run", str(path), "--canary", *argv])
    return policy_from(args, "canary_", load_config(path, env))


def _start_policy(path: Path, *argv: str, env: str | None = None) -> guild.CanaryPolicy | None:
    args = parser().parse_args(["canary", "start", "orders", "--config", str(path), *argv])
    return policy_from(args, config=load_config(path, env))


@pytest.mark.parametrize("policy_of", [_run_policy, _start_policy])
def test_precedence_flag_then_env_then_file_then_default(tmp_path: Path, policy_of: Any) -> None:
    partial = """\
[guild]
app = "a:b"

[canary]
soak = 30
min_jobs = 50

[env.prod.canary]
min_jobs = 200
"""
    path = write_toml(tmp_path, partial)
    prefix = "--canary-" if policy_of is _run_policy else "--"
    assert policy_of(path) == guild.CanaryPolicy(
        stages=(0.1, 0.5, 1.0), soak=30.0, error_rate=0.01, p95=5.0, min_jobs=50
    )
    assert policy_of(path, env="prod") == guild.CanaryPolicy(
        stages=(0.1, 0.5, 1.0), soak=30.0, error_rate=0.01, p95=5.0, min_jobs=200
    )
    flagged = policy_of(path, f"{prefix}min-jobs", "7", f"{prefix}soak", "9", env="prod")
    assert flagged == guild.CanaryPolicy(
        stages=(0.1, 0.5, 1.0), soak=9.0, error_rate=0.01, p95=5.0, min_jobs=7
    )


def test_no_file_table_and_no_flag_leaves_the_stored_policy(tmp_path: Path) -> None:
    # None: a resumed rollout keeps the policy it was started with.
    path = write_toml(tmp_path, '[guild]\napp = "a:b"\n')
    assert _run_policy(path) is None
    assert _start_policy(path) is None


def test_effective_reports_each_canary_origin(tmp_path: Path) -> None:
    path = write_toml(tmp_path, BASE.replace("p95 = 2.5\n", "").replace("error_rate = 0.02\n", ""))
    found = effective(path, env="prod", flags={"--canary-p95": 1.5}, environ={})
    got = {key: (found.value(key), found.settings[key].origin) for key in DEFAULTS}
    assert got == {
        "canary.stages": ([0.1, 0.4, 1], Origin("file", str(path))),
        "canary.soak": (600, Origin("env", "env.prod")),
        "canary.error_rate": (0.01, Origin("default")),
        "canary.p95": (1.5, Origin("flag", "--canary-p95")),
        "canary.min_jobs": (200, Origin("env", "env.prod")),
    }


def test_config_show_json_lists_canary_keys_with_origin(tmp_path: Path) -> None:
    path = write_toml(tmp_path, BASE.replace("error_rate = 0.02\n", ""))
    done = run_guild(
        "config", "show", str(path), "--env", "prod", "--canary-p95", "4", "--json", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    settings = json.loads(done.stdout)["settings"]
    got = {key: settings[key] for key in DEFAULTS}
    assert got == {
        "canary.stages": {"value": [0.1, 0.4, 1], "source": "file", "from": str(path)},
        "canary.soak": {"value": 600, "source": "env", "from": "env.prod"},
        "canary.error_rate": {"value": 0.01, "source": "default", "from": ""},
        "canary.p95": {"value": 4.0, "source": "flag", "from": "--canary-p95"},
        "canary.min_jobs": {"value": 200, "source": "env", "from": "env.prod"},
    }


def test_config_show_names_a_bad_canary_key(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[guild]\napp = "a:b"\n\n[canary]\nerror_rate = 2\n')
    done = run_guild("config", "show", str(path), cwd=tmp_path)
    assert done.returncode != 0
    assert f"{path}: canary.error_rate: expected a fraction from 0 to 1, got 2" in done.stderr


def test_canary_start_applies_the_file_on_a_real_broker(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/guild.db"
    path = write_toml(tmp_path, BASE.replace("[guild]\n", f'[guild]\nbroker = "{url}"\n'))

    async def create() -> None:
        async with guild.open_broker(url):
            pass

    trio.run(create)
    done = run_guild(
        "canary", "start", "orders", "--config", str(path), "--env", "prod", cwd=tmp_path
    )
    assert (done.returncode, done.stdout.strip()) == (0, "orders: soaking at 10%"), done.stderr
    done = run_guild("canary", "--broker", url, "--json", "status", "orders", cwd=tmp_path)
    (status,) = json.loads(done.stdout)
    assert status["policy"] == {
        "stages": [0.1, 0.4, 1.0],
        "soak": 600.0,
        "error_rate": 0.02,
        "p95": 2.5,
        "min_jobs": 200,
    }
    # Rolled back, then started again with a flag: the flag wins over the file.
    assert run_guild("canary", "--broker", url, "rollback", "orders", cwd=tmp_path).returncode == 0
    done = run_guild(
        "canary", "start", "orders", "--config", str(path), "--min-jobs", "3", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    done = run_guild("canary", "--broker", url, "--json", "status", "orders", cwd=tmp_path)
    (status,) = json.loads(done.stdout)
    assert (status["policy"]["soak"], status["policy"]["min_jobs"]) == (30.0, 3)


def test_canary_start_env_needs_a_config(tmp_path: Path) -> None:
    done = run_guild("canary", "start", "orders", "--env", "prod", cwd=tmp_path)
    assert done.returncode == 2
    assert "--env: give the guild.toml with --config" in done.stderr
