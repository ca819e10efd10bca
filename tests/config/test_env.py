"""[env.NAME] sections, the new tables, and `guild config show` with each value's origin."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

import guild
from guild.cli._run import _thresholds
from guild.cli._target import apply_config
from guild.config import Origin, effective, load_config
from guild.config._effective import choose_env
from guild.config._layers import overlay
from guild.observability import Thresholds
from guild.sandbox import Sandbox, SandboxPolicy

ROOT = Path(__file__).resolve().parents[2]

TWO_ENVS = """
[guild]
app = "mypkg.jobs:app"
broker = "sqlite:base.db"
log_level = "debug"

[supervisor]
max_restarts = 5
period = 30

[workers.emails]
concurrency = 4
timeout = 30.0
max_attempts = 5

[workers.reports]
concurrency = 1

[health]
error_rate = 0.05

[periodic.cleanup]
schedule = "0 3 * * *"
queue = "reports"
payload = { kind = "cleanup", days = 30 }

[env.staging]
guild.broker = "sqlite:staging.db"
workers.emails.concurrency = 8

[env.production.guild]
broker = "redis://:s3cret@redis.internal:6379/0"
processes = 4
log_format = "json"

[env.production.workers.emails]
concurrency = 32

[env.production.health]
p95_latency = 2.0

[env.production.periodic.cleanup]
payload = { kind = "cleanup" }
"""


def _write(tmp_path: Path, text: str, name: str = "guild.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


class TestOverlay:
    """A nested table in an env section overrides only the keys it names."""

    def test_production_overrides_only_the_keys_it_names(self, tmp_path: Path) -> None:
        config = load_config(_write(tmp_path, TWO_ENVS), "production")
        assert config.env == "production"
        assert config.broker == "redis://:s3cret@redis.internal:6379/0"
        assert config.processes == 4
        assert config.log_level == "debug"  # base, untouched by [env.production.guild]
        assert config.log_format == "json"
        assert config.workers == {
            "emails": {"concurrency": 32, "timeout": 30.0, "max_attempts": 5},
            "reports": {"concurrency": 1},
        }
        assert config.health == {"error_rate": 0.05, "p95_latency": 2.0}
        assert config.supervisor.max_restarts == 5
        # A payload is one JSON value: replaced whole, never merged key by key.
        assert config.periodic == {
            "cleanup": {"schedule": "0 3 * * *", "queue": "reports", "payload": {"kind": "cleanup"}}
        }

    def test_staging_and_base(self, tmp_path: Path) -> None:
        path = _write(tmp_path, TWO_ENVS)
        staging = load_config(path, "staging")
        assert staging.broker == "sqlite:staging.db"
        assert staging.processes == 1
        assert staging.workers["emails"] == {"concurrency": 8, "timeout": 30.0, "max_attempts": 5}
        base = load_config(path)
        assert base.env is None
        assert base.broker == "sqlite:base.db"
        assert base.workers["emails"] == {"concurrency": 4, "timeout": 30.0, "max_attempts": 5}
        assert base.periodic["cleanup"]["payload"] == {"kind": "cleanup", "days": 30}

    def test_overlay_function(self) -> None:
        base = {"a": {"b": 1, "c": {"d": 2, "e": 3}}, "f": [1, 2]}
        top = {"a": {"c": {"e": 30}}, "f": [9], "g": "new"}
        assert overlay(base, top) == {"a": {"b": 1, "c": {"d": 2, "e": 30}}, "f": [9], "g": "new"}
        assert base == {"a": {"b": 1, "c": {"d": 2, "e": 3}}, "f": [1, 2]}  # unchanged


def _reference_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """The merge as the docs state it, written independently: flatten both to
    dotted leaves, let the top's leaves win, and where the top puts a non-table
    over a table (or a table over a non-table) the whole subtree is the top's."""
    out: dict[str, Any] = {}
    for key in list(base) + [k for k in top if k not in base]:
        if key not in top:
            out[key] = base[key]
        elif key not in base:
            out[key] = top[key]
        elif type(base[key]) is dict and type(top[key]) is dict:
            out[key] = _reference_merge(base[key], top[key])
        else:
            out[key] = top[key]
    return out


_keys = st.sampled_from(["a", "b", "c", "d"])
_tables = st.recursive(
    st.integers() | st.text(max_size=3) | st.lists(st.integers(), max_size=2),
    lambda inner: st.dictionaries(_keys, inner, max_size=4),
    max_leaves=12,
)
_roots = st.dictionaries(_keys, _tables, max_size=4)


@given(base=_roots, top=_roots)
def test_overlay_equals_reference_merge(base: dict[str, Any], top: dict[str, Any]) -> None:
    merged = overlay(base, top)
    assert merged == _reference_merge(base, top)
    for key, value in top.items():  # reading back what the top set gives the top's value
        if not isinstance(value, dict):
            assert merged[key] == value


@given(
    concurrency=st.integers(1, 1000),
    timeout=st.floats(0.1, 1000.0),
    overrides=st.fixed_dictionaries(
        {}, optional={"concurrency": st.integers(1, 1000), "timeout": st.floats(0.1, 1000.0)}
    ),
)
def test_env_section_read_back_equals_reference(
    tmp_path_factory: pytest.TempPathFactory,
    concurrency: int,
    timeout: float,
    overrides: dict[str, Any],
) -> None:
    lines = [f"{k} = {v!r}" for k, v in overrides.items()]
    text = (
        f'[guild]\napp = "x:y"\n[workers.a]\nconcurrency = {concurrency}\ntimeout = {timeout!r}\n'
        "[env.e.workers.a]\n" + "\n".join(lines) + "\n"
    )
    path = _write(tmp_path_factory.mktemp("hyp"), text)
    expected = {"concurrency": concurrency, "timeout": timeout} | overrides
    assert load_config(path, "e").workers == {"a": expected}


class TestEnvErrors:
    def test_unknown_env_names_the_file_and_the_environments(self, tmp_path: Path) -> None:
        path = _write(tmp_path, TWO_ENVS)
        with pytest.raises(guild.ConfigError) as info:
            load_config(path, "prod")
        assert info.value.path == str(path)
        assert info.value.key == "env"
        assert str(info.value) == (
            f"{path}: env: expected an environment the file defines"
            " (production, staging), got 'prod'"
        )

    def test_unknown_env_in_a_file_without_any(self, tmp_path: Path) -> None:
        path = _write(tmp_path, '[guild]\napp = "x:y"\n')
        with pytest.raises(guild.ConfigError, match=r"none: the file has no \[env.NAME\]"):
            load_config(path, "staging")

    @pytest.mark.parametrize(
        ("section", "key", "expected"),
        [
            (
                "[env.production.workers.emails]\nconcurrency = 0\n",
                "env.production.workers.emails.concurrency",
                "an integer > 0",
            ),
            ("[env.production]\nguild.procs = 2\n", "env.production.guild.procs", "one of"),
            (
                "[env.production.health]\nerror_rate = 2.0\n",
                "env.production.health.error_rate",
                "a fraction from 0 to 1",
            ),
            ("[env.production]\nextra = 1\n", "env.production.extra", "one of"),
            ("[env]\nproduction = 3\n", "env.production", "a table"),
            ("[env.production.env.x]\n", "env.production.env", "no [env] table"),
        ],
    )
    def test_error_in_a_section_names_the_key_as_written(
        self, tmp_path: Path, section: str, key: str, expected: str
    ) -> None:
        # Found whichever environment is chosen: production's typo fails staging too.
        path = _write(tmp_path, '[guild]\napp = "x:y"\n[env.staging]\n' + section)
        for env in (None, "staging"):
            with pytest.raises(guild.ConfigError) as info:
                load_config(path, env)
            assert (info.value.path, info.value.key) == (str(path), key)
            assert expected in info.value.expected


class TestNewTables:
    @pytest.mark.parametrize(
        ("text", "key", "expected"),
        [
            ('[guild]\nlog_level = "loud"\n', "guild.log_level", "debug | info | warning"),
            ('[guild]\nlog_format = "xml"\n', "guild.log_format", "auto | json | console"),
            ("[health]\nqueue_length = -1\n", "health.queue_length", "an integer >= 0"),
            ("[health]\nwindow = 0\n", "health.window", "a finite number > 0"),
            ("[health]\nmin_jobs = 1.5\n", "health.min_jobs", "an integer > 0"),
            ("[health]\nlatency = 1\n", "health.latency", "one of"),
            (
                '[sandbox]\nisolate = "sometimes"\n',
                "sandbox.isolate",
                "auto | bwrap | kernel | never",
            ),
            ('[sandbox]\nallow = "python3"\n', "sandbox.allow", "an array of strings"),
            ("[sandbox]\nmemory = -1\n", "sandbox.memory", "an integer > 0"),
            ("[sandbox]\nkill_grace = -1\n", "sandbox.kill_grace", "a finite number >= 0"),
            ('[sandbox]\nkeep_dir = "yes"\n', "sandbox.keep_dir", "true or false"),
            ('[periodic.x]\nschedule = "* * *"\n', "periodic.x.schedule", "a cron expression"),
            ("[periodic.x]\nschedule = 0\n", "periodic.x.schedule", "a finite number > 0"),
            ('[periodic.x]\nqueue = " q"\n', "periodic.x.queue", "a queue name"),
            ("[periodic.x]\npayload = 1979-05-27\n", "periodic.x.payload", "a JSON value"),
            ("[periodic.x]\nat = 1\n", "periodic.x.at", "one of"),
        ],
    )
    def test_bad_values_are_named(self, tmp_path: Path, text: str, key: str, expected: str) -> None:
        path = _write(tmp_path, '[guild]\napp = "x:y"\n' + text.replace("[guild]\n", ""))
        with pytest.raises(guild.ConfigError) as info:
            load_config(path)
        assert (info.value.path, info.value.key) == (str(path), key)
        assert expected in info.value.expected

    def test_health_thresholds(self, tmp_path: Path) -> None:
        config = load_config(_write(tmp_path, TWO_ENVS), "production")
        assert _thresholds(config) == Thresholds(error_rate=0.05, p95_latency=2.0)
        assert _thresholds(load_config(_write(tmp_path, '[guild]\napp = "x:y"\n'))) is None

    def test_periodic_added_and_changed(self, tmp_path: Path) -> None:
        app = guild.Guild("p")
        app.periodic("*/5 * * * *", "reports", {"kind": "code"}, name="cleanup")
        text = (
            '[guild]\napp = "x:y"\n'
            '[periodic.cleanup]\nschedule = "0 4 * * *"\n'
            '[periodic.pulse]\nschedule = 30\nqueue = "pulse"\n'
        )
        apply_config(app, load_config(_write(tmp_path, text)))
        assert app.schedules == {
            "cleanup": guild.Periodic(
                name="cleanup",
                schedule=guild.Cron("0 4 * * *"),
                queue="reports",
                payload={"kind": "code"},
            ),
            "pulse": guild.Periodic(name="pulse", schedule=guild.Every(30.0), queue="pulse"),
        }

    def test_new_periodic_needs_schedule_and_queue(self, tmp_path: Path) -> None:
        path = _write(tmp_path, '[guild]\napp = "x:y"\n[periodic.pulse]\nschedule = 30\n')
        with pytest.raises(guild.ConfigError) as info:
            apply_config(guild.Guild("p"), load_config(path))
        assert info.value.key == "periodic.pulse"
        assert info.value.expected.startswith("queue (a schedule the app does not define in code")

    def test_sandbox_policy_of_held_sandboxes(self, tmp_path: Path) -> None:
        app = guild.Guild("s")
        held = Sandbox(SandboxPolicy(allow=("python3", "node"), memory=1 << 30))

        @app.worker("run")
        async def run(job: guild.Job) -> None:
            await held.run(["python3", "-c", "1"], timeout=1)

        text = '[guild]\napp = "x:y"\n[sandbox]\nallow = ["python3"]\nmemory = 1048576\nkill_grace = 0\n'
        apply_config(app, load_config(_write(tmp_path, text)))
        cell = next(c for c in run.__closure__ or () if isinstance(c.cell_contents, Sandbox))
        policy = cell.cell_contents.policy
        assert (policy.allow, policy.memory, policy.kill_grace) == (("python3",), 1048576, 0)
        assert policy.cpu_seconds == SandboxPolicy().cpu_seconds  # left out: kept

    def test_sandbox_table_without_a_sandbox_is_an_error(self, tmp_path: Path) -> None:
        path = _write(tmp_path, '[guild]\napp = "x:y"\n[sandbox]\nmemory = 1048576\n')
        with pytest.raises(guild.ConfigError, match=r"hold a guild\.Sandbox"):
            apply_config(guild.Guild("s"), load_config(path))

    def test_sandbox_rule_across_keys_names_the_table(self, tmp_path: Path) -> None:
        app = guild.Guild("s")
        held = Sandbox(SandboxPolicy())

        @app.worker("run")
        async def run(job: guild.Job) -> None:
            await held.run(["python3"], timeout=1)

        text = '[guild]\napp = "x:y"\n[sandbox]\nallow = ["node"]\ninline_code = ["python3"]\n'
        with pytest.raises(guild.ConfigError) as info:
            apply_config(app, load_config(_write(tmp_path, text)))
        assert info.value.key == "sandbox"
        assert "not allowed" in info.value.expected


class TestChooseEnv:
    def test_flag_wins_over_variable(self) -> None:
        assert choose_env("staging", {"GUILD_ENV": "production"}) == (
            "staging",
            Origin("flag", "--env"),
        )
        assert choose_env(None, {"GUILD_ENV": "production"}) == (
            "production",
            Origin("environment", "GUILD_ENV"),
        )
        assert choose_env(None, {"GUILD_ENV": ""}) == (None, None)
        assert choose_env(None, {}) == (None, None)

    def test_effective_flag_wins(self, tmp_path: Path) -> None:
        path = _write(tmp_path, TWO_ENVS)
        found = effective(path, env="staging", environ={"GUILD_ENV": "production"})
        assert (found.env, found.config.broker) == ("staging", "sqlite:staging.db")
        found = effective(path, environ={"GUILD_ENV": "production"})
        assert (found.env, found.config.processes) == ("production", 4)


class TestProvenance:
    """Each key's origin: default, file, env section, environment variable, flag."""

    def test_every_source(self, tmp_path: Path) -> None:
        path = _write(tmp_path, TWO_ENVS)
        found = effective(
            path,
            environ={"GUILD_ENV": "staging", "GUILD_BROKER": "sqlite:ignored.db"},
            flags={"--processes": 3, "--log-format": "console", "--http": None},
        )
        file = Origin("file", str(path))
        staging = Origin("env", "env.staging")
        expected = {
            "guild.app": ("mypkg.jobs:app", file),
            "guild.broker": ("sqlite:staging.db", staging),
            "guild.processes": (3, Origin("flag", "--processes")),
            "guild.http": (None, Origin("default")),
            "guild.log_level": ("debug", file),
            "guild.log_format": ("console", Origin("flag", "--log-format")),
            "supervisor.max_restarts": (5, file),
            "supervisor.period": (30, file),
            "workers.emails.concurrency": (8, staging),
            "workers.emails.timeout": (30.0, file),
            "workers.emails.max_attempts": (5, file),
            "workers.reports.concurrency": (1, file),
            "health.error_rate": (0.05, file),
            "health.p95_latency": (5.0, Origin("default")),
            "health.memory": (0.8, Origin("default")),
            "health.queue_length": (1000, Origin("default")),
            "health.stall": (60.0, Origin("default")),
            "health.window": (60.0, Origin("default")),
            "health.min_jobs": (1, Origin("default")),
            "canary.stages": ([0.1, 0.5, 1.0], Origin("default")),
            "canary.soak": (60.0, Origin("default")),
            "canary.error_rate": (0.01, Origin("default")),
            "canary.p95": (5.0, Origin("default")),
            "canary.min_jobs": (20, Origin("default")),
            "periodic.cleanup.schedule": ("0 3 * * *", file),
            "periodic.cleanup.queue": ("reports", file),
            "periodic.cleanup.payload": ({"kind": "cleanup", "days": 30}, file),
        }
        assert {k: (s.value, s.origin) for k, s in found.settings.items()} == expected
        assert (found.env, found.env_origin) == ("staging", Origin("environment", "GUILD_ENV"))

    def test_guild_broker_fills_in_below_the_file(self, tmp_path: Path) -> None:
        path = _write(tmp_path, '[guild]\napp = "x:y"\n[env.e]\nguild.broker = "sqlite:e.db"\n')
        environ = {"GUILD_BROKER": "sqlite:from-env.db"}
        setting = effective(path, environ=environ).settings["guild.broker"]
        assert (setting.value, setting.origin) == (
            "sqlite:from-env.db",
            Origin("environment", "GUILD_BROKER"),
        )
        setting = effective(path, env="e", environ=environ).settings["guild.broker"]
        assert (setting.value, setting.origin) == ("sqlite:e.db", Origin("env", "env.e"))
        flagged = effective(path, env="e", environ=environ, flags={"--broker": "sqlite:f.db"})
        assert flagged.settings["guild.broker"].origin == Origin("flag", "--broker")
        assert effective(path, environ={}).settings["guild.broker"].origin == Origin("default")

    def test_concurrency_flag_covers_every_worker(self, tmp_path: Path) -> None:
        found = effective(_write(tmp_path, TWO_ENVS), environ={}, flags={"--concurrency": 2})
        flag = Origin("flag", "--concurrency")
        for key in (
            "workers.emails.concurrency",
            "workers.reports.concurrency",
            "workers.*.concurrency",
        ):
            assert (found.settings[key].value, found.settings[key].origin) == (2, flag)


def _guild(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("GUILD_ENV", "GUILD_BROKER")}
    return subprocess.run(
        [sys.executable, "-m", "guild", *args],
        capture_output=True,
        text=True,
        env={**environ, **env},
        cwd=cwd,
        timeout=60,
        check=False,
    )


class TestConfigShowCommand:
    """`guild config show` through a real `guild` process."""

    def test_json_with_two_environments(self, tmp_path: Path) -> None:
        path = _write(tmp_path, TWO_ENVS)
        done = _guild(
            "config", "show", str(path), "--json", "--log-level", "warning",
            env={"GUILD_ENV": "production"}, cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        shown = json.loads(done.stdout)
        assert shown["path"] == str(path)
        assert shown["env"] == "production"
        assert shown["env_from"] == {"source": "environment", "from": "GUILD_ENV"}
        assert shown["environments"] == ["staging", "production"]
        settings = shown["settings"]
        here = {"source": "file", "from": str(path)}
        production = {"source": "env", "from": "env.production"}
        default = {"source": "default", "from": ""}
        expected = {
            # The password is not printed.
            "guild.broker": {"value": "redis://:***@redis.internal:6379/0", **production},
            "guild.processes": {"value": 4, **production},
            "guild.log_level": {"value": "warning", "source": "flag", "from": "--log-level"},
            "guild.log_format": {"value": "json", **production},
            "guild.http": {"value": None, **default},
            "workers.emails.concurrency": {"value": 32, **production},
            "workers.emails.timeout": {"value": 30.0, **here},
            "health.p95_latency": {"value": 2.0, **production},
            "health.error_rate": {"value": 0.05, **here},
            "health.stall": {"value": 60.0, **default},
            "periodic.cleanup.payload": {"value": {"kind": "cleanup"}, **production},
            "periodic.cleanup.schedule": {"value": "0 3 * * *", **here},
        }
        assert {key: settings[key] for key in expected} == expected

    def test_human_output_and_flag_over_variable(self, tmp_path: Path) -> None:
        path = _write(tmp_path, TWO_ENVS)
        done = _guild(
            "config", "show", str(path), "--env", "staging",
            env={"GUILD_ENV": "production"}, cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0] == f"# {path}, environment 'staging' (from --env)"
        rows = {line.split(" = ")[0]: line.split("  # ")[-1] for line in lines[1:]}
        assert rows["guild.broker"] == "[env.staging]"
        assert rows["guild.log_level"] == "file"
        assert rows["guild.processes"] == "default"
        assert rows["workers.emails.concurrency"] == "[env.staging]"
        assert 'guild.broker = "sqlite:staging.db"' in done.stdout

    def test_unknown_env_is_one_line_exit_2(self, tmp_path: Path) -> None:
        path = _write(tmp_path, TWO_ENVS)
        done = _guild("config", "show", str(path), "--env", "prod", env={}, cwd=tmp_path)
        assert done.returncode == 2
        assert done.stderr == (
            f"guild: error: {path}: env: expected an environment the file defines"
            " (production, staging), got 'prod'\n"
        )

    def test_run_refuses_an_unknown_env(self, tmp_path: Path) -> None:
        path = _write(tmp_path, TWO_ENVS)
        done = _guild("run", str(path), env={"GUILD_ENV": "qa"}, cwd=tmp_path)
        assert done.returncode == 2
        assert f"{path}: env: expected an environment the file defines" in done.stderr


class TestExampleFile:
    """examples/guild.toml loads under each environment and fits the app it names."""

    def test_every_environment_applies_to_the_demo_app(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.syspath_prepend(str(ROOT / "examples"))
        from guild.cli._target import import_app

        path = ROOT / "examples" / "guild.toml"
        for env in (None, "staging", "production"):
            config = load_config(path, env)
            app = import_app(config.app, source=config.path)
            apply_config(app, config)
            assert (
                app.specs["emails"].concurrency
                == {
                    None: 4,
                    "staging": 8,
                    "production": 32,
                }[env]
            )
            assert app.schedules["cleanup"].schedule == guild.Cron(
                "30 2 * * *" if env == "production" else "0 3 * * *"
            )


RUN_FILE = """
[guild]
app = "tests.cli.apps:scheduled"
broker = "sqlite:base.db"

[workers.reports]
concurrency = 1

[env.production]
guild.broker = "sqlite:prod.db"
workers.reports.concurrency = 5
periodic.nightly-cleanup.queue = "reports"   # in code it goes to an unserved queue
"""


def _start_run(tmp_path: Path, path: Path, log: Path) -> subprocess.Popen[bytes]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GUILD_")}
    environ |= {"PYTHONPATH": str(ROOT), "GUILD_ENV": "production"}
    # stderr goes to a file: a pipe nobody reads could fill up and stall the app.
    with log.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "guild", "run", str(path), "--json", "--log-level", "error"],
            cwd=tmp_path,
            env=environ,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )


async def _first_line(log: Path) -> str:
    while True:
        lines = log.read_text().splitlines()
        if lines:
            return lines[0]
        await trio.sleep(0.05)


@pytest.mark.slow
async def test_guild_run_uses_the_env_section(tmp_path: Path) -> None:
    """A real `guild run guild.toml` with GUILD_ENV: the banner shows the section's
    broker and concurrency, and the schedule it moved no longer warns."""
    path = _write(tmp_path, RUN_FILE)
    log = tmp_path / "stderr.log"
    process = _start_run(tmp_path, path, log)
    try:
        with trio.fail_after(60):
            first = await _first_line(log)
    finally:
        process.send_signal(signal.SIGINT)
        code = await trio.to_thread.run_sync(process.wait)
    text = log.read_text()
    assert code == 0, text
    facts = json.loads(first)
    assert facts["broker"] == f"sqlite://{tmp_path}/prod.db"
    assert {q["queue"]: q["concurrency"] for q in facts["queues"]}["reports"] == 5
    # The banner lists the schedule, now on a served queue, and warns of nothing.
    assert {p["name"]: p["queue"] for p in facts["periodic"]}["nightly-cleanup"] == "reports"
    assert '"warning"' not in text
    assert not (tmp_path / "base.db").exists()
