"""More careless command lines, each through a real ``python -m guild``: the
commands test_bad_input.py leaves out (result, job, purge, config, migrate,
canary), Redis URLs the client would misread, an app that exits while it is
imported, a corrupt stored row, and a reader that closes stdout early.

Each case writes out the exit code it expects and words its one error line must
hold; none may show a traceback.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests._redis_server import free_port
from tests.cli._careless import ROOT, guild, one_error_line

ADDRESS = '"HOST:PORT" with a port from 0 to 65535'
LEVELS = "one of debug, info, warning, error, critical"
CLOSED = f"127.0.0.1:{free_port()}"
"""A loopback port nothing listens on: every URL below is refused before it is tried."""


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("careless")
    (where / "exits_app.py").write_text("import sys\nsys.exit(3)\n")
    (where / "mute_app.py").write_text(
        "class Mute(Exception):\n    def __str__(self):\n        raise ValueError\nraise Mute\n"
    )
    (where / "garbage.toml").write_bytes(b"\xff\xfe\x00garbage")
    (where / "scalar_guild.toml").write_text("guild = 3\n")
    (where / "a_directory").mkdir()
    (where / "empty.toml").write_text("")
    (where / "syntax.toml").write_text("[[[ nope\n")
    app = '[guild]\napp = "tests.cli.apps:quick"\n'
    (where / "huge_soak.toml").write_text(app + "[canary]\nsoak = 1e26\n")
    (where / "huge_min_jobs.toml").write_text(app + "[canary]\nmin_jobs = 99999999999\n")
    (where / "bad_http.toml").write_text(app + 'http = "nope"\n')
    (where / "bare_ipv6_http.toml").write_text(app + 'http = "::1:8000"\n')
    return where


def case(*args: str, code: int = 2, says: str) -> Any:
    return pytest.param(list(args), code, says, id=" ".join(args)[:70])


def _each_command(url: str, says: str) -> list[Any]:
    return [
        case(*command, "--broker", url, says=says)
        for command in (
            ["stats"],
            ["enqueue", "q", "1"],
            ["result", "J1"],
            ["job", "show", "J1"],
            ["purge", "q"],
            ["migrate"],
            ["canary", "status"],
            ["run", "tests.cli.apps:quick"],
        )
    ]


CASES = [
    # --- Redis URLs: what the client would ignore or misread is refused up front ---
    *_each_command(f"redis://{CLOSED}/0?foo=bar", "unknown option foo=bar (one of: client_name"),
    *_each_command(f"redis://{CLOSED}/abc", "database 'abc' is not a whole number"),
    case("stats", "--broker", f"redis://{CLOSED}/0/1", says="database '0/1' is not a whole"),
    case("stats", "--broker", f"redis://{CLOSED}/0?db=x", says="option db=x: not a valid value"),
    case(
        "stats",
        "--broker",
        f"redis://{CLOSED}/0?decode_responses=yes",
        says="unknown option decode_responses=yes",
    ),
    case("stats", "--broker", f"redis://{CLOSED}/0?noreply=1", says="unknown option noreply=1"),
    case(
        "stats",
        "--broker",
        f"redis://{CLOSED}/0?stream_timeout=nan",
        says="option stream_timeout=nan: not a valid value",
    ),
    case(
        "stats",
        "--broker",
        f"redis://{CLOSED}/0?max_connections=0",
        says="option max_connections=0: not a valid value",
    ),
    case(
        "stats",
        "--broker",
        f"redis://{CLOSED}/0?ssl_cert_reqs=none",
        says="unknown option ssl_cert_reqs=none",  # a TLS option on a plain URL
    ),
    case(
        "stats",
        "--broker",
        f"redis+cluster://{CLOSED}/3",
        says="database 3: a Redis Cluster has only database 0",
    ),
    # --- run: an app module that calls sys.exit() while it is imported ---
    case(
        "run",
        "exits_app:app",
        "--broker",
        "memory://",
        says="module 'exits_app' to import, but it raised SystemExit: 3",
    ),
    # ... and one that raises an exception that cannot even be turned into text.
    case(
        "run",
        "mute_app:app",
        "--broker",
        "memory://",
        says="module 'mute_app' to import, but it raised Mute: <str() raised ValueError>",
    ),
    # --- result ---
    case("result", says="required: id"),
    case("result", "J1", "--wait", "nan", says="--wait: expected a finite number, got 'nan'"),
    case("result", "J1", "--wait", "1e999", says="--wait: expected a finite number"),
    case("result", "J1", "--wait", "-1", says="--wait: expected at least 0, got -1"),
    case("result", "J1", "--wait", "99999999999", says="--wait: expected at most 86,400"),
    case("result", "J1", says="no database at"),
    case("result", "J" * 201, says="argument id: a job id 'JJJJ"),
    # --- job ---
    case("job", says="required: ACTION"),
    case("job", "frob", says="invalid choice: 'frob'"),
    case("job", "show", says="required: id"),
    case("job", "cancel", says="required: id"),
    case("job", "show", "J1", says="no database at"),
    case("job", "cancel", "J1", says="no database at"),
    case("job", "show", "J" * 5000, says="must be at most 200 characters, got 5,000"),
    case("job", "cancel", "a\x07b", says="a job id 'a\\x07b': must not hold control"),
    # --- purge ---
    case("purge", says="required: QUEUE"),
    case("purge", "", "--yes", says="queue name '': must not be empty"),
    case("purge", "q", "--status", "weird", says="--status: invalid choice: 'weird'"),
    case("purge", "q", "--status", "ready", says="add --yes to do it"),
    case("purge", "q", "--older-than", "nan", says="--older-than: expected a finite number"),
    case("purge", "q", "--older-than", "-5", says="--older-than: expected at least 0, got -5"),
    case("purge", "q", says="no database at"),
    case("purge", "a\nb", "--yes", says="queue name 'a\\nb': must not hold control"),
    # --- config ---
    case("config", says="required: COMMAND"),
    case("config", "show", says="guild.toml: (file): expected an existing TOML file"),
    case("config", "show", "--processes", "abc", says="--processes"),
    # --- migrate ---
    case("migrate", "extra", says="unrecognized arguments: extra"),
    case("migrate", says="no database at"),
    case("migrate", "--broker", "memory://", says="memory://"),
    # --- canary ---
    case("canary", says="required: ACTION"),
    case("canary", "frob", says="invalid choice: 'frob'"),
    case("canary", "start", says="required: queue"),
    case("canary", "start", "q", "--stages", "x", says="--stages: expected shares like"),
    case("canary", "start", "q", "--stages", "1,0.5", says="stages must rise, got [1.0, 0.5]"),
    case("canary", "start", "q", "--stages", "0.5", says="the last stage must be 1.0"),
    case("canary", "status", says="no database at"),
    *[
        case(
            "canary",
            action,
            "q@canary",
            says="'q@canary' is the canary lane of 'q': name the queue",
        )
        for action in ("status", "start", "promote", "pause", "rollback")
    ],
    case("canary", "start", "q", "--soak", "٣", says="--soak: expected seconds above 0 and at"),
    case("canary", "start", "q", "--stages", "0.5,\u0661", says="--stages: expected shares like"),
    case(
        "config",
        "show",
        "--canary-error-rate",
        "\u0660",
        says="--canary-error-rate: expected a share",
    ),
    # --- numbers and durations: NaN, inf, negative, absurd, empty, huge ---
    *[
        case("canary", "start", "q", f"--{flag}", value, says=f"--{flag}: {says}")
        for flag, value, says in (
            ("soak", "1e26", "expected seconds above 0 and at most 2,592,000, got '1e26'"),
            ("soak", "inf", "expected seconds above 0 and at most 2,592,000, got 'inf'"),
            ("soak", "nan", "expected seconds above 0"),
            ("soak", "", "expected seconds above 0 and at most 2,592,000, got ''"),
            ("soak", "-1", "expected seconds above 0"),
            ("p95", "1e26", "expected seconds above 0 and at most 86,400, got '1e26'"),
            ("p95", "0", "expected seconds above 0 and at most 86,400, got '0'"),
            ("error-rate", "1e26", "expected a share from 0 to 1, got '1e26'"),
            ("min-jobs", "1e26", "expected a whole number, got '1e26'"),
            ("min-jobs", "9" * 12, "expected at most 1,000,000,000, got 999999999999"),
            ("stages", "nan,1", "expected shares like 0.1,0.5,1, each in (0, 1], got 'nan,1'"),
            ("stages", "0.5,inf", "expected shares like 0.1,0.5,1, each in (0, 1], got '0.5,inf'"),
            ("stages", "", "expected shares like"),
        )
    ],
    # ... and the same flags of guild run --canary.
    case("run", "tests.cli.apps:quick", "--canary-soak", "1e26", says="--canary-soak: expected"),
    case("run", "tests.cli.apps:quick", "--canary-p95", "inf", says="--canary-p95: expected"),
    case("run", "tests.cli.apps:quick", "--canary-stages", "nan,1", says="--canary-stages: "),
    case("config", "show", "--canary-soak", "1e26", says="--canary-soak: expected seconds above"),
    case(
        "config", "show", "--concurrency", "9" * 30, says="--concurrency: expected at most 100,000"
    ),
    case("purge", "q", "--older-than", "1e26", says="--older-than: expected at most 315,360,000"),
    case("purge", "q", "--older-than", "", says="--older-than: expected a number, got ''"),
    case("workflow", "purge", "--older-than", "inf", says="--older-than: expected a finite"),
    case("workflow", "purge", "--older-than", "1e300", says="--older-than: expected at most"),
    case("top", "--duration", "1e26", says="--duration: expected at most 315,360,000, got 1e26"),
    case("top", "--duration", "nan", says="--duration: expected a finite number"),
    case("top", "--interval", "-0", says="--interval: expected more than 0"),
    case("status", "--timeout", "1e26", says="--timeout: expected at most 3,600"),
    case("enqueue", "q", "1", "--delay", "", says="--delay: expected a number, got ''"),
    case("dlq", "list", "--limit", "1e26", says="--limit: expected a whole number, got '1e26'"),
    # A pasted 5,000-digit number is named by its ends, not echoed whole.
    case(
        "enqueue",
        "q",
        "1",
        "--max-attempts",
        "9" * 5000,
        says="expected a whole number, got '" + "9" * 79 + "...[4,902 more characters]...",
    ),
    # --- host names no resolver takes, and an empty --http ---
    case("status", "--url", "a..b:80", says="--url: malformed host in 'a..b:80'"),
    case("top", "--url", "http://" + "x" * 64 + ":80", says="--url: malformed host"),
    case(
        "run",
        "tests.cli.apps:quick",
        "--broker",
        "memory://",
        "--http",
        "",
        says="--http: expected \"HOST:PORT\" with a port from 0 to 65535, got ''",
    ),
    case(
        "run",
        "tests.cli.apps:quick",
        "--broker",
        "memory://",
        "--http",
        "a..b:80",
        says="got 'a..b:80'",
    ),
    *_each_command("redis://a..b:6379/0", "malformed host 'a..b'"),
    # --- addresses to listen on: one rule for guild run and guild config show ---
    *[
        case(*command, "--http", value, says=f"--http: expected {ADDRESS}, got {value!r}")
        for command in (
            ["run", "tests.cli.apps:quick", "--broker", "memory://"],
            ["config", "show"],
        )
        for value in (
            "nope",
            "h:99999",
            "h:80:80",
            "http://h:80",
            "[nope]:80",
            "::1:80",
            "h:\uff18\uff10",
        )
    ],
    case("config", "show", "--http", says="--http: expected one argument"),
    # --- log levels: one rule too, any case, nothing else ---
    *[
        case(*command, "--log-level", value, says=f"--log-level: expected {LEVELS}, got {value!r}")
        for command in (
            ["run", "tests.cli.apps:quick", "--broker", "memory://"],
            ["config", "show"],
        )
        for value in ("loud", "", "NOTSET", "warn")
    ],
    # --- numbers in other scripts' digits, which int() and float() would take ---
    case(
        "run", "tests.cli.apps:quick", "--concurrency", "٣", says="--concurrency: expected a whole"
    ),
    case("enqueue", "q", "1", "--delay", "٣", says="--delay: expected a number, got '٣'"),
    case("config", "show", "--processes", "\uff12", says="--processes: expected a whole number"),
    # --- a SQLite path no filesystem takes ---
    *[
        case(*command, "--broker", "sqlite:" + "x" * 5000, says="(File name too long)")
        for command in (["stats"], ["enqueue", "q", "1"], ["run", "tests.cli.apps:quick"])
    ],
    case("stats", "--broker", "sqlite:" + "d/" * 3000 + "x.db", says="(File name too long)"),
    # --- Redis on a unix socket: a path, no host; its database is ?db=N ---
    *_each_command("unix://somehost/tmp/r.sock", "a unix socket URL names a path, not a host"),
    case("stats", "--broker", "unix://", says="no absolute socket path"),
    case("stats", "--broker", "redis+unix:r.sock", says="no absolute socket path"),
    case("stats", "--broker", "unix:///tmp/r.sock?db=x", says="option db=x: not a valid value"),
    case("stats", "--broker", "unix:///tmp/r.sock?ssl_certfile=c", says="unknown option ssl_"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("args", "code", "says"), CASES)
def test_careless_input_is_one_line_and_its_exit_code(
    tmp_path: Path, apps: Path, args: list[str], code: int, says: str
) -> None:
    done = guild(tmp_path, apps, *args)
    line = one_error_line(done)
    assert done.returncode == code, line
    assert says in line, line
    assert done.stdout == b""
    assert list(tmp_path.iterdir()) == [], "a refused command created a file"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("config", "says"),
    [
        ("garbage.toml", "(file): expected a readable UTF-8 file"),
        ("scalar_guild.toml", "guild: expected a table, got 3"),
        ("a_directory", "(file): expected a readable UTF-8 file"),
    ],
)
def test_config_show_names_the_file_and_key(
    tmp_path: Path, apps: Path, config: str, says: str
) -> None:
    done = guild(tmp_path, apps, "config", "show", str(apps / config))
    line = one_error_line(done)
    assert done.returncode == 2
    assert line.startswith(f"guild: error: {apps / config}: {says}"), line


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["run", "{apps}/empty.toml"], 'empty.toml: guild.app: expected a "module:attribute"'),
        (["run", "{apps}/syntax.toml"], "syntax.toml: (syntax): expected valid TOML"),
        (["run", "{apps}/garbage.toml"], "(file): expected a readable UTF-8 file"),
        (["run", "{apps}/a_directory/x.toml"], "(file): expected an existing TOML file"),
        (["config", "show", "{apps}/syntax.toml", "--env", "x"], "(syntax): expected valid"),
        (["config", "show", "{apps}/empty.toml", "--env", "prod"], "env: expected an environment"),
        (["canary", "start", "q", "--config", "{apps}/a_directory"], "expected a readable UTF-8"),
        (["canary", "start", "q", "--config", "{apps}/empty.toml", "--env", "x"], "env: expected"),
        (["canary", "start", "q", "--env", "x"], "--env: give the guild.toml with --config"),
        # guild config show refuses the address guild run would.
        (["config", "show", "{apps}/bad_http.toml"], f"guild.http: expected {ADDRESS}, got 'nope'"),
        (
            ["config", "show", "{apps}/bare_ipv6_http.toml"],
            f"guild.http: expected {ADDRESS}, got '::1:8000'",
        ),
        (
            ["config", "show", "{apps}/huge_soak.toml"],
            "canary.soak: expected a finite number > 0 and <= 2,592,000, got 1e+26",
        ),
        (
            ["canary", "start", "q", "--config", "{apps}/huge_min_jobs.toml"],
            "canary.min_jobs: expected an integer > 0 and <= 1,000,000,000, got 99999999999",
        ),
    ],
)
@pytest.mark.parametrize("as_json", [False, True])
def test_config_files_that_are_no_guild_toml(
    tmp_path: Path, apps: Path, args: list[str], says: str, as_json: bool
) -> None:
    argv = [arg.format(apps=apps) for arg in args] + (["--json"] if as_json else [])
    done = guild(tmp_path, apps, *argv)
    assert done.returncode == 2 and done.stdout == b""
    if as_json:
        error = json.loads(done.stderr)
        assert says in error["error"] and error["exit_code"] == 2
    else:
        assert says in one_error_line(done)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_an_unreadable_config_is_named(tmp_path: Path, apps: Path) -> None:
    secret = tmp_path / "guild.toml"
    secret.write_text('[guild]\napp = "tests.cli.apps:quick"\n')
    secret.chmod(0)
    for args in (["config", "show", str(secret)], ["run", str(secret)]):
        done = guild(tmp_path, apps, *args)
        line = one_error_line(done)
        assert done.returncode == 2
        assert line.startswith(f"guild: error: {secret}: (file): expected a readable UTF-8 file")


NOT_UTF8 = [
    ["enqueue", b"q\xff", "1"],
    ["enqueue", "q", b'"\xff"'],
    ["enqueue", "q", "1", "--key", b"k\xff"],
    ["result", b"J\xff"],
    ["job", "show", b"J\xff"],
    ["job", "cancel", b"J\xff"],
    ["dlq", "show", b"J\xff"],
    ["dlq", "requeue", b"J\xff"],
    ["workflow", "show", b"W\xff"],
    ["workflow", "cancel", "W", "--reason", b"r\xff"],
    ["purge", b"q\xff"],
    ["canary", "start", b"q\xff"],
    ["config", "show", b"g\xff.toml"],
    ["run", b"app\xff:app"],
    ["run", "tests.cli.apps:quick", "--http", b"h\xff:80"],
    ["status", "--url", b"h\xff:80"],
    ["top", "--url", b"h\xff:80"],
    ["stats", "--broker", b"redis://h\xff:1/0"],
    [b"st\xffats"],
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "as_json"),
    # Every other one with --json: the error is then a JSON object.
    [(args, i % 2 == 1) for i, args in enumerate(NOT_UTF8)],
    ids=lambda value: " ".join(map(str, value))[:50] if isinstance(value, list) else str(value),
)
def test_an_argument_that_is_not_utf8_is_named(
    tmp_path: Path, apps: Path, args: list[str | bytes], as_json: bool
) -> None:
    """Undecodable bytes reach Python as lone surrogates, which no broker stores
    and no output prints: each is refused up front, by its place on the line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUILD_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(apps)])
    argv: list[str | bytes] = [sys.executable, "-m", "guild", *args]
    argv += ["--broker", "sqlite:guild.db"] if args[0] not in ("status", "top", "stats") else []
    argv += ["--json"] if as_json else []
    done = subprocess.run(argv, capture_output=True, cwd=tmp_path, env=env, timeout=60)
    place = next(i for i, arg in enumerate(args, 1) if isinstance(arg, bytes))
    bad = args[place - 1]
    assert isinstance(bad, bytes)
    shown = bad.decode("utf-8", "backslashreplace")
    expected = f"argument {place}, '{shown}': expected UTF-8 text"
    assert done.returncode == 2 and done.stdout == b""
    if as_json:
        assert json.loads(done.stderr) == {
            "error": expected,
            "type": "UsageError",
            "exit_code": 2,
        }
    else:
        assert one_error_line(done) == f"guild: error: {expected}"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_an_unreachable_app_server_is_one_line_and_exit_3(tmp_path: Path, apps: Path) -> None:
    url = f"http://{CLOSED}"
    done = guild(tmp_path, apps, "status", "--url", url)
    line = one_error_line(done)
    assert done.returncode == 3 and line.startswith(f"guild: error: cannot read {url}/health: ")
    done = guild(tmp_path, apps, "status", "--url", url, "--json")
    assert done.returncode == 3 and done.stdout == b""
    error = json.loads(done.stderr)
    assert error["type"] == "Unreachable" and error["exit_code"] == 3
    assert error["error"].startswith(f"cannot read {url}/health: ")
    done = guild(tmp_path, apps, "top", "--url", url, "--once")
    line = one_error_line(done)
    assert done.returncode == 3 and line.startswith(f"guild: error: cannot watch ws://{CLOSED}")


@pytest.mark.slow
def test_a_redis_password_stays_hidden_in_an_option_error(tmp_path: Path, apps: Path) -> None:
    url = f"redis://{CLOSED}/0?password=s3cret&colour=blue"
    done = guild(tmp_path, apps, "stats", "--broker", url)
    line = one_error_line(done)
    assert done.returncode == 2
    assert "unknown option colour=blue" in line and "password=***" in line
    assert "s3cret" not in line


def _corrupt_rows(db: Path) -> None:
    # Rows as a hand edit or another program could leave them: an unknown status,
    # a result that is not JSON, numbers that are text.
    columns = "id, queue, payload, attempt, max_attempts, enqueued_at, trace_id, status, ready_at"
    with sqlite3.connect(db) as conn:
        conn.execute(
            f"INSERT INTO jobs ({columns}) VALUES ('BOGUS', 'q', '1', 0, 3, 1.0, 't', 'bogus', 0)"
        )
        conn.execute(
            f"INSERT INTO jobs ({columns}, result, finished_at, result_expires)"
            " VALUES ('NOTJSON', 'q', '1', 0, 3, 1.0, 't', 'done', 0, X'FF00', 1e12, 1e12)"
        )
        conn.execute(
            f"INSERT INTO jobs ({columns}) VALUES ('TEXTY', 'q', '1', 'x', 3, 1.0, 't', 'ready', 0)"
        )
    conn.close()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["job", "show", "BOGUS"], "job BOGUS: its stored row cannot be read"),
        (["result", "BOGUS"], "'bogus' is not a valid JobStatus"),
        (["result", "NOTJSON"], "job NOTJSON: its stored result cannot be read (JSONDecodeError"),
        (["job", "show", "NOTJSON"], "job NOTJSON: its stored row cannot be read"),
        (["job", "show", "TEXTY"], "invalid literal for int() with base 10: 'x'"),
    ],
)
def test_a_corrupt_stored_row_is_named_not_a_crash(
    tmp_path: Path, apps: Path, args: list[str], says: str
) -> None:
    url = "sqlite:guild.db"
    assert guild(tmp_path, apps, "enqueue", "q", "1", "--broker", url).returncode == 0
    _corrupt_rows(tmp_path / "guild.db")
    done = guild(tmp_path, apps, *args, "--broker", url)
    line = one_error_line(done)
    assert done.returncode == 2, line
    assert says in line, line
    as_json = guild(tmp_path, apps, *args, "--broker", url, "--json")
    error = json.loads(as_json.stderr)
    # A record that is not what guild wrote: a damaged one (guild.BrokerDataError).
    assert error["type"] == "BrokerDataError" and says in error["error"]
    # The other rows read as before.
    stats = guild(tmp_path, apps, "stats", "--json", "--broker", url)
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["q"]["ready"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("as_json", [False, True])
def test_a_reader_that_closes_stdout_early_gets_one_line_not_a_traceback(
    tmp_path: Path, apps: Path, as_json: bool
) -> None:
    """``guild enqueue q - | head -0``: the jobs are enqueued; the ids cannot be shown."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUILD_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(apps)])
    argv = [sys.executable, "-m", "guild", "enqueue", "q", "-", "--broker", "sqlite:guild.db"]
    read, write = os.pipe()
    os.close(read)  # the reader is gone before guild writes a line
    try:
        done = subprocess.run(
            argv + (["--json"] if as_json else []),
            input=b"".join(b"%d\n" % n for n in range(500)),
            stdout=write,
            stderr=subprocess.PIPE,
            cwd=tmp_path,
            env=env,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write)
    stderr = done.stderr.decode()
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    assert done.returncode == 1, stderr
    (line,) = stderr.splitlines()
    expected = "stdout was closed before all of the output was written"
    if as_json:
        assert json.loads(line) == {"error": expected, "type": "CommandFailed", "exit_code": 1}
    else:
        assert line == f"guild: error: {expected}"
    stats = guild(tmp_path, apps, "stats", "--json", "--broker", "sqlite:guild.db")
    assert json.loads(stats.stdout)["q"]["ready"] == 500


@pytest.mark.slow
def test_a_database_on_a_read_only_filesystem_says_so(tmp_path: Path, apps: Path) -> None:
    where = tmp_path / "disk"
    where.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)]
    mounted = subprocess.run(mount, capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        url = f"sqlite:///{where / 'jobs.db'}"
        assert guild(tmp_path, apps, "enqueue", "q", "1", "--broker", url).returncode == 0
        remount = ["mount", "-o", "remount,ro", str(where)]
        subprocess.run(remount, check=True)
        expected = (
            f"guild: error: sqlite {where / 'jobs.db'}: unable to open database file"
            f" (the filesystem of {where} is mounted read-only)"
        )
        for args in (["enqueue", "q", "2"], ["stats"], ["run", "tests.cli.apps:quick"]):
            done = guild(tmp_path, apps, *args, "--broker", url)
            line = one_error_line(done)
            assert done.returncode == 2, line
            assert line == expected
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
