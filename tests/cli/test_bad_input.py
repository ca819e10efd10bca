"""A battery of careless command lines, each through a real ``python -m guild``.

Every one must end the same way: exit code 2, exactly one ``guild: error: …``
line on stderr naming what was wrong, no traceback, nothing on stdout, and
nothing created or enqueued: each runs in an empty working directory (where the
default broker, ``sqlite:guild.db``, would land) that must still be empty after.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]
CLOSED = f"redis://127.0.0.1:{free_port()}/0"
"""A port nothing listens on (bound once and released): Redis is unreachable there."""


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory on PYTHONPATH holding a module that raises on import and bad configs."""
    where = tmp_path_factory.mktemp("apps")
    (where / "boom_app.py").write_text('raise RuntimeError("boom at import")\n')
    (where / "syntax_app.py").write_text("def broken(:\n")
    (where / "bad_value.toml").write_text(
        '[guild]\napp = "tests.cli.apps:quick"\nprocesses = "many"\n'
    )
    (where / "bad_worker.toml").write_text(
        '[guild]\napp = "tests.cli.apps:quick"\n[workers.nobody]\nconcurrency = 2\n'
    )
    (where / "not_toml.toml").write_text("[guild\n")
    (where / "bad_broker.toml").write_text(
        '[guild]\napp = "tests.cli.apps:quick"\nbroker = "ftp://x"\n'
    )
    (where / "nan_timeout.toml").write_text(
        '[guild]\napp = "tests.cli.apps:quick"\n[workers.quick]\ntimeout = nan\n'
    )
    (where / "many_processes.toml").write_text(
        '[guild]\napp = "tests.cli.apps:quick"\nprocesses = 5000\n'
    )
    (where / "bad_http.toml").write_text('[guild]\napp = "tests.cli.apps:quick"\nhttp = "nope"\n')
    (where / "bad_loop_stall.toml").write_text(
        '[guild]\napp = "tests.cli.apps:quick"\nloop_stall = -inf\n'
    )
    (where / "long_periodic.toml").write_text(
        '[guild]\napp = "tests.cli.apps:quick"\n[periodic.' + "p" * 201 + ']\nqueue = "quick"\n'
    )
    (where / "long_periodic_queue.toml").write_text(
        '[guild]\napp = "tests.cli.apps:quick"\n[periodic.p]\nqueue = "' + "q" * 201 + '"\n'
    )
    (where / "a_directory").mkdir()
    return where


def guild(
    cwd: Path, apps: Path, *args: str, stdin: bytes = b"", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GUILD_")}
    full_env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(apps)])
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "guild", *args],
        input=stdin,
        capture_output=True,
        cwd=cwd,
        env=full_env,
        timeout=60,
        check=False,
    )


def case(*args: str, says: str, stdin: bytes = b"", env: dict[str, str] | None = None) -> Any:
    return pytest.param(list(args), says, stdin, env or {}, id=" ".join(args)[:60] or "(none)")


APP = "tests.cli.apps:quick"
MEM = ("--broker", "memory://")

CASES = [
    # --- no command, unknown command ---
    case(says="required: COMMAND"),
    case("launch", says="invalid choice: 'launch'"),
    case("stats", "--frobnicate", says="unrecognized arguments: --frobnicate"),
    # --- enqueue: payloads ---
    case("enqueue", "q", "{not json", says="PAYLOAD_JSON: not valid JSON"),
    case("enqueue", "q", "[NaN]", says="NaN is not JSON"),
    case("enqueue", "q", "Infinity", says="Infinity is not JSON"),
    case("enqueue", "q", '{"x": -Infinity}', says="-Infinity is not JSON"),
    case("enqueue", "q", "[" * 100_000, says="PAYLOAD_JSON"),
    case("enqueue", "q", "-", stdin=b"1\n[NaN]\n3\n", says="stdin line 2"),
    case("enqueue", "q", "-", stdin=b"1\n{oops\n", says="stdin line 2: not valid JSON"),
    case("enqueue", "q", "-", stdin=b"1\n\xff\xfe\n", says="stdin line 2: not UTF-8"),
    # Valid JSON that no broker stores, past the first batch of 500: named by its
    # line, and nothing of the earlier batches stored.
    case(
        "enqueue",
        "q",
        "-",
        stdin=b"".join(b"%d\n" % n for n in range(700)) + b'["\\udcff"]\n',
        says="stdin line 701: payload[0] holds the lone surrogate",
    ),
    case("enqueue", "q", "[1e999]", says="PAYLOAD_JSON: payload[0] is float('inf')"),
    case("enqueue", "q", "-", stdin=b"", says="stdin held no payloads"),
    case("enqueue", "q", "-", "--key", "k", stdin=b"1\n", says="--key names one job"),
    case("enqueue", "q", says="required: payload"),
    # --- enqueue: queue names (the library's rule) ---
    case("enqueue", "", "1", says="must not be empty"),
    case("enqueue", "   ", "1", says="must not be empty or only whitespace"),
    case("enqueue", " q", "1", says="must not start or end with whitespace"),
    case("enqueue", "a\nb", "1", says="control or line-breaking"),
    # ... and its length: a pasted 5,000 characters would widen every table to them.
    case(
        "enqueue",
        "q" * 5000,
        "1",
        says="argument queue: queue name '" + "q" * 40 + "'...: must be at most 200 characters,"
        " got 5,000",
    ),
    case("enqueue", "q" * 201, "1", says="must be at most 200 characters, got 201"),
    case("canary", "start", "q" * 201, says="must be at most 200 characters, got 201"),
    # A queue name to read or clear is only checked by the rules older names kept.
    case("dlq", "list", "--queue", "a\x1bb", says="control or line-breaking"),
    case("dlq", "requeue", "--all", "--queue", "a\u2028b", says="control or line-breaking"),
    # --- enqueue: numbers ---
    case("enqueue", "q", "1", "--delay", "nan", says="--delay: expected a finite number"),
    case("enqueue", "q", "1", "--delay", "inf", says="--delay: expected a finite number"),
    case("enqueue", "q", "1", "--delay", "-1", says="--delay: expected at least 0"),
    case("enqueue", "q", "1", "--delay", "1e300", says="--delay: expected at most"),
    case("enqueue", "q", "1", "--delay", "soon", says="--delay: expected a number"),
    case("enqueue", "q", "1", "--max-attempts", "0", says="--max-attempts: expected at least 1"),
    case("enqueue", "q", "1", "--max-attempts", "-3", says="--max-attempts: expected at least"),
    case("enqueue", "q", "1", "--max-attempts", "2.5", says="--max-attempts: expected a whole"),
    case("enqueue", "q", "1", "--max-attempts", "9" * 25, says="--max-attempts: expected at most"),
    case("enqueue", "q", "1", "--key", "", says="--key: expected a non-empty key"),
    case(
        "enqueue",
        "q",
        "1",
        "--key",
        "k" * 100_000,
        says="--key: key '" + "k" * 40 + "'...: must be at most 1,024 characters, got 100,000",
    ),
    # --- broker URLs ---
    case("enqueue", "q", "1", "--broker", "ftp://x", says="unknown scheme ftp:; expected one of"),
    case("enqueue", "q", "1", "--broker", "", says="--broker: expected a broker URL"),
    case("enqueue", "q", "1", "--broker", "sqlite:", says="no database file named"),
    case("enqueue", "q", "1", "--broker", "sqlite:///no/such/dir/x.db", says="does not exist"),
    case("enqueue", "q", "1", "--broker", "sqlite:.", says="is a directory"),
    case("enqueue", "q", "1", "--broker", "sqlite:data/", says="names a directory"),
    case("enqueue", "q", "1", "--broker", "sqlite:x.db?synchronous=MAYBE", says="unknown option"),
    case("enqueue", "q", "1", "--broker", "redis://host:port/0", says="malformed"),
    case("enqueue", "q", "1", "--broker", "redis:///0", says="no host"),
    case("enqueue", "q", "1", env={"GUILD_BROKER": "ftp://x"}, says="unknown scheme"),
    # A memory broker lives in one process: from the command line a job would vanish.
    case("enqueue", "q", "1", "--broker", "memory://", says="would be lost when it exits"),
    case("enqueue", "q", "1", env={"GUILD_BROKER": "memory://"}, says="would be lost"),
    case(
        "canary",
        "start",
        "q",
        "--broker",
        "memory://",
        says="memory:// lives inside one process: a canary start made from the command line"
        " would be lost when it exits",
    ),
    case("canary", "rollback", "q", env={"GUILD_BROKER": "memory://"}, says="would be lost"),
    case("stats", "--broker", "memory://", says="nothing stored to read"),
    case("dlq", "list", "--broker", "memory://", says="nothing stored to read"),
    case("stats", "--broker", "mysql://db", says="unknown scheme mysql:"),
    case("stats", env={"GUILD_BROKER": "sqlite:."}, says="is a directory"),
    # --- an unreachable Redis, for every command that opens a broker ---
    case("enqueue", "q", "1", "--broker", CLOSED, says=f"redis: connect to {CLOSED}: "),
    case("stats", "--broker", CLOSED, says=f"redis: connect to {CLOSED}: "),
    case("dlq", "list", "--broker", CLOSED, says=f"redis: connect to {CLOSED}: "),
    case("dlq", "show", "J1", "--broker", CLOSED, says=f"redis: connect to {CLOSED}: "),
    case("dlq", "requeue", "--all", "--broker", CLOSED, says=f"redis: connect to {CLOSED}: "),
    case("run", APP, "--broker", CLOSED, says=f"redis: connect to {CLOSED}: "),
    case("run", APP, "--processes", "2", "--broker", CLOSED, says=f"redis: connect to {CLOSED}: "),
    # --- read-only commands never create a database ---
    case("stats", says="no database at"),
    case("stats", "--broker", "sqlite:missing.db", says="no database at"),
    case("dlq", "list", says="no database at"),
    case("dlq", "show", "J1", says="no database at"),
    case("dlq", "requeue", "J1", says="no database at"),
    # --- dlq usage ---
    case("dlq", says="required: ACTION"),
    case("dlq", "requeue", says="IDs or --all"),
    case("dlq", "requeue", "J1", "--all", says="IDs or --all"),
    case("dlq", "list", "--limit", "0", says="--limit: expected at least 1"),
    case("dlq", "list", "--limit", "many", says="--limit: expected a whole number"),
    case("dlq", "list", "--queue", " ", says="queue name"),
    case("dlq", "show", "", says="expected a job id"),
    case("dlq", "show", "J" * 201, says="argument id: a job id 'JJJJ"),
    case("dlq", "requeue", "J1", "a\nb", says="a job id 'a\\nb': must not hold control"),
    # --- workflow: every action opens nothing it cannot read ---
    case("workflow", "list", "--broker", "memory://", says="nothing stored to read"),
    case("workflow", "show", "W1", "--broker", CLOSED, says=f"redis: connect to {CLOSED}: "),
    case("workflow", "cancel", "W1", "--broker", CLOSED, says=f"redis: connect to {CLOSED}: "),
    case("workflow", "list", says="no database at"),
    case("workflow", "show", "W1", says="no database at"),
    case("workflow", "cancel", "W1", says="no database at"),
    case("workflow", says="required: ACTION"),
    case("workflow", "list", "--status", "stuck", says="--status: invalid choice"),
    case("workflow", "list", "--limit", "0", says="--limit: expected at least 1"),
    case("workflow", "show", " ", says="expected a workflow id"),
    case("workflow", "cancel", "W" * 5000, says="must be at most 200 characters, got 5,000"),
    # --- run: the target ---
    case("run", "tests.cli.apps:not_an_app", *MEM, says="a guild.Guild instance"),
    case("run", "tests.cli.apps:missing", *MEM, says="'missing'"),
    case("run", "no_such_module_x:app", *MEM, says="importable module"),
    case(
        "run",
        "boom_app:app",
        *MEM,
        says="module 'boom_app' to import, but it raised RuntimeError: boom at import",
    ),
    case("run", "syntax_app:app", *MEM, says="raised SyntaxError"),
    case("run", "just_a_word", *MEM, says='"module:attribute"'),
    case("run", ":app", *MEM, says='"module:attribute"'),
    case("run", "missing.toml", says="an existing TOML file"),
    # --- run: options ---
    case("run", APP, *MEM, "--concurrency", "0", says="--concurrency: expected at least 1"),
    case("run", APP, *MEM, "--concurrency", "nan", says="--concurrency: expected a whole"),
    case("run", APP, *MEM, "--processes", "0", says="--processes: expected at least 1"),
    case("run", APP, *MEM, "--processes", "-2", says="--processes: expected at least 1"),
    case("run", APP, *MEM, "--processes", "100000", says="--processes: expected at most"),
    case("run", APP, *MEM, "--grace", "-1", says="--grace: expected at least 0"),
    case("run", APP, *MEM, "--grace", "inf", says="--grace: expected a finite number"),
    case("run", APP, *MEM, "--http", "nowhere", says='"HOST:PORT"'),
    case("run", APP, *MEM, "--http", "127.0.0.1:99999", says='"HOST:PORT"'),
    case("run", APP, *MEM, "--http", "no.such.host.invalid:8000", says="cannot listen"),
    case(
        "run",
        APP,
        "--broker",
        CLOSED,  # a broker the processes share: memory:// is refused with --processes 2
        "--processes",
        "2",
        "--http",
        "no.such.host.invalid:8000",
        says="cannot listen",
    ),
    case(
        "run",
        APP,
        "--http",
        "0.0.0.0:0",
        says="$GUILD_HTTP_TOKEN: expected a token",
        env={"GUILD_HTTP_TOKEN": " secret "},
    ),
    case("run", APP, *MEM, "--log-level", "loud", says="--log-level"),
    case("run", APP, *MEM, "--log-format", "xml", says="invalid choice: 'xml'"),
    case("run", APP, "--broker", "ftp://x", says="unknown scheme"),
    case("run", APP, "--broker", "sqlite:///no/such/dir/x.db", says="does not exist"),
    # --- status and top ---
    case("status", "--timeout", "nan", says="--timeout: expected a finite number"),
    case("status", "--timeout", "0", says="--timeout: expected more than 0"),
    case("status", "--url", "ftp://host", says="--url: expected http://HOST:PORT"),
    case("status", "--url", "http://host:port", says="--url: malformed URL"),
    # urlsplit drops a newline or tab: the URL dialled would not be the one given.
    case("status", "--url", "http://a\nb:80", says="--url: malformed URL 'http://a\\nb:80'"),
    case("top", "--url", "h\t:80", says="(it holds whitespace)"),
    case("top", "--interval", "0", says="--interval: expected more than 0"),
    case("top", "--interval=-inf", says="--interval: expected a finite number"),
    case("top", "--interval", "-inf", says="--interval: expected one argument"),
    case("top", "--duration", "-5", says="--duration: expected more than 0"),
]


def _assert_one_error_line(done: subprocess.CompletedProcess[bytes], says: str) -> str:
    stderr = done.stderr.decode("utf-8", "replace")
    assert "Traceback" not in stderr, stderr
    assert done.returncode == 2, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("guild: error: "), stderr
    assert says in lines[0], lines[0]
    return lines[0]


@pytest.mark.slow
@pytest.mark.parametrize(("args", "says", "stdin", "env"), CASES)
def test_bad_input_is_one_line_exit_2_and_touches_nothing(
    tmp_path: Path, apps: Path, args: list[str], says: str, stdin: bytes, env: dict[str, str]
) -> None:
    done = guild(tmp_path, apps, *args, stdin=stdin, env=env)
    _assert_one_error_line(done, says)
    assert done.stdout == b""
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_battery_covers_every_command() -> None:
    commands = {c.values[0][0] for c in CASES if c.values[0]}
    assert commands == {
        "run",
        "enqueue",
        "canary",
        "stats",
        "dlq",
        "workflow",
        "status",
        "top",
        "launch",
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    "config",
    [
        "bad_value.toml",
        "bad_worker.toml",
        "not_toml.toml",
        "bad_broker.toml",
        "bad_http.toml",
        "nan_timeout.toml",
        "many_processes.toml",
        "bad_loop_stall.toml",
        "long_periodic.toml",
        "long_periodic_queue.toml",
        "a_directory",
    ],
)
def test_a_bad_config_names_the_file(tmp_path: Path, apps: Path, config: str) -> None:
    done = guild(tmp_path, apps, "run", str(apps / config))
    line = _assert_one_error_line(done, str(apps / config) if config != "a_directory" else "")
    expected = {
        "bad_value.toml": "guild.processes: expected an integer > 0 and <= 1,024, got 'many'",
        "bad_worker.toml": "workers.nobody: expected one of the app's workers ['quick']",
        "not_toml.toml": "(syntax): expected valid TOML",
        "bad_broker.toml": "guild.broker: expected a broker URL (unknown scheme ftp:;",
        "bad_http.toml": 'guild.http: expected "HOST:PORT"',
        "nan_timeout.toml": "workers.quick.timeout: expected a finite number > 0, got nan",
        "many_processes.toml": "guild.processes: expected an integer > 0 and <= 1,024, got 5000",
        "bad_loop_stall.toml": "guild.loop_stall: expected a finite number of seconds > 0, or false, got -inf",
        "long_periodic.toml": "periodic." + "p" * 60,
        "long_periodic_queue.toml": "periodic.p.queue: expected a queue name (queue name 'qqqq",
        "a_directory": '"module:attribute"',
    }[config]
    assert expected in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ["stats", "--json", "--broker", CLOSED],
        ["enqueue", "q", "[NaN]", "--json", "--broker", "memory://"],
        ["dlq", "--json", "list", "--limit", "0"],
        ["run", APP, "--json", "--processes", "0"],
    ],
)
def test_with_json_the_error_is_one_json_object(
    tmp_path: Path, apps: Path, args: list[str]
) -> None:
    done = guild(tmp_path, apps, *args)
    assert done.returncode == 2 and done.stdout == b""
    (line,) = done.stderr.decode().splitlines()
    error = json.loads(line)
    assert set(error) == {"error", "type", "exit_code"} and error["exit_code"] == 2
    assert error["error"] and "\n" not in error["error"]
    assert list(tmp_path.iterdir()) == []


def _digest(directory: Path) -> Iterator[tuple[str, str]]:
    for path in sorted(directory.iterdir()):
        yield path.name, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_bad_enqueues_leave_an_existing_database_as_it_was(tmp_path: Path, apps: Path) -> None:
    made = guild(tmp_path, apps, "enqueue", "q", '{"n": 1}', "--broker", "sqlite:guild.db")
    assert made.returncode == 0, made.stderr
    before = list(_digest(tmp_path))
    for args, stdin in [
        (["enqueue", "q", "[NaN]"], b""),
        (["enqueue", "q", "-"], b'{"n": 2}\n{"n": 3}\nNaN\n'),
        (["enqueue", " ", "1"], b""),
        (["enqueue", "q", "1", "--delay", "nan"], b""),
    ]:
        done = guild(tmp_path, apps, *args, "--broker", "sqlite:guild.db", stdin=stdin)
        assert done.returncode == 2, done.stderr
    assert list(_digest(tmp_path)) == before
    stats = guild(tmp_path, apps, "stats", "--json", "--broker", "sqlite:guild.db")
    assert json.loads(stats.stdout)["q"]["ready"] == 1


@pytest.mark.slow
def test_a_supervisor_that_gives_up_is_one_line_and_exit_1(tmp_path: Path, apps: Path) -> None:
    url = "sqlite:guild.db"
    assert guild(tmp_path, apps, "enqueue", "doomed", "1", "--broker", url).returncode == 0
    done = guild(
        tmp_path, apps, "run", "tests.cli.apps:doomed", "--broker", url, "--log-level", "critical"
    )
    stderr = done.stderr.decode()
    assert done.returncode == 1, stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("guild: error: ")]
    assert len(errors) == 1, stderr
    assert "supervisor 'doomed' gave up: 3 restarts within 60s" in errors[0]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (CLOSED.replace("redis://", "redis://:s3cret@"), "redis://:***@127.0.0.1:"),
        ("redis://:s3cret@cache:port/0", "'redis://:***@cache:port/0': malformed"),
        ("postgres://ops:s3cret@db/jobs", "'postgres://ops:***@db/jobs': unknown scheme"),
    ],
)
def test_an_error_about_a_url_hides_its_password(
    tmp_path: Path, apps: Path, url: str, shown: str
) -> None:
    done = guild(tmp_path, apps, "stats", "--broker", url)
    line = _assert_one_error_line(done, shown)
    assert "s3cret" not in line


@pytest.mark.slow
def test_dlq_show_of_an_unknown_id_is_exit_1(tmp_path: Path, apps: Path) -> None:
    assert guild(tmp_path, apps, "enqueue", "q", "1").returncode == 0
    done = guild(tmp_path, apps, "dlq", "show", "NOPE")
    assert done.returncode == 1
    assert done.stderr.decode().splitlines() == ["guild: error: no dead job with id NOPE"]
