"""A third round of careless input, each through a real ``python -m guild``:
config files that are no regular file (a FIFO, a device, 2 MB, nested past
recursion), app modules that raise a BaseException or are named relatively,
broker URLs that no URL parser splits or that name another file than meant,
``memory://`` shared by several processes, canary actions on no database, app
server URLs that would dial elsewhere, bad environment variables, and an error
line that would be 100 kB long.

Each case writes out the exit code and the words of its one error line; none
may hang (a 30 s timeout fails it), show a traceback, or leave a file behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.cli._careless import ROOT, guild, one_error_line

APP = '[guild]\napp = "tests.cli.apps:quick"\n'
URL_RULE = "must not start or end with whitespace or hold control characters"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("careless3")
    os.mkfifo(where / "fifo.toml")
    (where / "big.toml").write_text(APP + "# " + "x" * (2 << 20) + "\n")
    (where / "deep.toml").write_text(APP + "[periodic.p]\npayload = " + "[" * 5000 + "\n")
    (where / "v6_broker.toml").write_text(APP + 'broker = "redis://[::1/0"\n')
    (where / "spaced_broker.toml").write_text(APP + 'broker = "sqlite:jobs.db "\n')
    (where / "memory_fleet.toml").write_text(APP + 'broker = "memory://"\nprocesses = 2\n')
    (where / "tab_token.toml").write_text(APP + 'http_token = "s3cret\\tpart"\n')
    (where / "base_app.py").write_text(
        "class Halt(BaseException):\n    pass\n\nraise Halt('halted at import')\n"
    )
    return where


def case(*args: str, says: str, env: dict[str, str] | None = None) -> Any:
    return pytest.param(list(args), says, env or {}, id=" ".join(args)[:70])


CASES = [
    # --- a guild.toml that is no regular file: refused at once, never waited on ---
    *[
        case(
            *command,
            says="{files}/fifo.toml: (file): expected a readable UTF-8 file"
            " (a FIFO, not a regular file)",
        )
        for command in (
            ["config", "show", "{files}/fifo.toml"],
            ["run", "{files}/fifo.toml"],
            ["canary", "start", "q", "--config", "{files}/fifo.toml"],
        )
    ],
    case(
        "config",
        "show",
        "/dev/zero",
        says="/dev/zero: (file): expected a readable UTF-8 file"
        " (a character device, not a regular file)",
    ),
    case(
        "canary",
        "start",
        "q",
        "--config",
        "/dev/zero",
        says="(a character device, not a regular file)",
    ),
    case(
        "run",
        "{files}/big.toml",
        says="big.toml: (file): expected a readable UTF-8 file"
        " (larger than 1,048,576 bytes: not a guild.toml)",
    ),
    case(
        "config",
        "show",
        "{files}/deep.toml",
        says="deep.toml: (syntax): expected TOML nested less deeply",
    ),
    case("run", "{files}/deep.toml", says="deep.toml: (syntax): expected TOML nested less"),
    case("config", "show", "", says="'': (file): expected the path of a guild.toml, not an"),
    # --- app modules ---
    case(
        "run",
        "base_app:app",
        "--broker",
        "memory://",
        says="TARGET: app: expected module 'base_app' to import, but it raised Halt:"
        " halted at import",
    ),
    case(
        "run",
        "..apps:quick",
        "--broker",
        "memory://",
        says="TARGET: app: expected an absolute module name (a relative one has no package),"
        " got '..apps:quick'",
    ),
    # --- broker URLs no parser splits, from each place a URL comes from ---
    case(
        "stats",
        says="broker URL 'redis://[::1/0': malformed (Invalid IPv6 URL)",
        env={"GUILD_BROKER": "redis://[::1/0"},
    ),
    case(
        "enqueue",
        "q",
        "1",
        says="broker URL 'redis://:***@[::1/0': malformed (Invalid IPv6 URL)",
        env={"GUILD_BROKER": "redis://:s3cret@[::1/0"},
    ),
    case(
        "run",
        "{files}/v6_broker.toml",
        says="v6_broker.toml: guild.broker: expected a broker URL (malformed (Invalid IPv6 URL))",
    ),
    case("stats", "--broker", "memory://[", says="broker URL 'memory://[': malformed (Invalid"),
    # ... and ones that would name another file than the one meant.
    case("enqueue", "q", "1", "--broker", "sqlite:jobs.db ", says=f"'sqlite:jobs.db ': {URL_RULE}"),
    case("enqueue", "q", "1", "--broker", "sqlite:a\nb.db", says=f"'sqlite:a\\nb.db': {URL_RULE}"),
    case("stats", says=f"' sqlite:jobs.db': {URL_RULE}", env={"GUILD_BROKER": " sqlite:jobs.db"}),
    case(
        "stats", "--broker", "redis://:s3cret@h\t:1/0", says=f"'redis://:***@h\\t:1/0': {URL_RULE}"
    ),
    case(
        "run",
        "{files}/spaced_broker.toml",
        says=f"spaced_broker.toml: guild.broker: expected a broker URL ({URL_RULE}),"
        " got 'sqlite:jobs.db '",
    ),
    # ... and options given twice, where the client would pick one of its own accord.
    case(
        "stats",
        "--broker",
        "redis://127.0.0.1:1/0?db=3",
        says="broker URL 'redis://127.0.0.1:1/0?db=3': database given twice, /0 and ?db=: give"
        " one (redis://HOST:PORT/DB)",
    ),
    case(
        "enqueue",
        "q",
        "1",
        "--broker",
        "redis://127.0.0.1:1/0?password=a&password=b",
        says="'redis://127.0.0.1:1/0?password=***&password=***': option password given 2 times",
    ),
    case(
        "enqueue",
        "q",
        "1",
        "--broker",
        "sqlite:jobs.db?synchronous=FULL&synchronous=NORMAL",
        says="option synchronous given 2 times",
    ),
    case(
        "stats", "--broker", "sqlite:jobs.db?done_ttl=5&done_ttl=6", says="done_ttl given 2 times"
    ),
    # --- memory:// cannot be shared by the processes of --processes N ---
    case(
        "run",
        "tests.cli.apps:quick",
        "--processes",
        "2",
        "--broker",
        "memory://",
        says="--processes 2: memory:// lives inside one process, so each of the 2 would have"
        " a broker of its own that no enqueue reaches; use sqlite:PATH or redis://HOST",
    ),
    case(
        "run",
        "{files}/memory_fleet.toml",
        says="memory_fleet.toml: guild.processes = 2: memory:// lives inside one process",
    ),
    # --- canary actions on a rollout act on a database that exists: none is made ---
    *[case("canary", action, "q", says="no database at ") for action in ("promote", "pause")],
    case("canary", "rollback", "q", says="no database at "),
    # --- an app server's URL that would be dialled elsewhere than it says ---
    case("status", "--url", "http://127.0.0.1:0", says="--url: expected a port from 1 to 65535"),
    case("top", "--url", "127.0.0.1:", says="--url: expected a port from 1 to 65535 in"),
    case("status", "--url", "unix:/run/g.sock", says="--url: expected a port from 1 to 65535"),
    case(
        "status",
        "--url",
        "http://ops:s3cret@127.0.0.1:8000",
        says="--url: expected http://HOST:PORT without a user or password",
    ),
    case(
        "top",
        "--url",
        "http://127.0.0.1:8000/?x=1",
        says="--url: expected http://HOST:PORT without a ?query or #fragment",
    ),
    case("status", "--url", "http://h:8000#top", says="without a ?query or #fragment"),
    # --- environment variables ---
    case(
        "run",
        "tests.cli.apps:not_an_app",
        "--broker",
        "memory://",
        says="TARGET: app: expected a guild.Guild instance",
        env={"GUILD_STARTUP_FD": "9" * 30},
    ),
    # A token with a control character cannot travel in a header: refused by
    # the server's side and the client's alike, and never echoed.
    *[
        case(
            *command,
            says="$GUILD_HTTP_TOKEN: expected a token without control or line-breaking"
            " characters (it travels in an HTTP header)",
            env={"GUILD_HTTP_TOKEN": "s3cret\npart"},
        )
        for command in (
            ["run", "tests.cli.apps:quick", "--broker", "memory://", "--http", "127.0.0.1:0"],
            ["top", "--url", "127.0.0.1:8000", "--once"],
        )
    ],
    case(
        "config",
        "show",
        "{files}/tab_token.toml",
        says="tab_token.toml: guild.http_token: expected a non-empty string without surrounding"
        " spaces or control characters",
    ),
    case(
        "run",
        "tests.cli.apps:quick",
        "--broker",
        "memory://",
        "--http",
        "127.0.0.1:0",
        says="$PROMETHEUS_MULTIPROC_DIR: expected an existing directory, got '/no/such/dir'",
        env={"PROMETHEUS_MULTIPROC_DIR": "/no/such/dir"},
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(("args", "says", "env"), CASES)
def test_careless_input_is_one_line_exit_2_and_at_once(
    tmp_path: Path, files: Path, args: list[str], says: str, env: dict[str, str]
) -> None:
    done = guild(tmp_path, files, *[arg.format(files=files) for arg in args], env=env)
    line = one_error_line(done)
    assert done.returncode == 2, line
    assert says.format(files=files) in line, line
    assert "s3cret" not in line
    assert done.stdout == b""
    assert list(tmp_path.iterdir()) == [], "a refused command created a file"


@pytest.mark.slow
def test_with_json_a_fifo_config_is_one_json_object(tmp_path: Path, files: Path) -> None:
    done = guild(tmp_path, files, "config", "show", str(files / "fifo.toml"), "--json")
    assert done.returncode == 2 and done.stdout == b""
    assert json.loads(done.stderr) == {
        "error": f"{files / 'fifo.toml'}: (file): expected a readable UTF-8 file"
        " (a FIFO, not a regular file)",
        "type": "ConfigError",
        "exit_code": 2,
    }


@pytest.mark.slow
@pytest.mark.parametrize("as_json", [False, True])
def test_an_error_line_of_100_kb_keeps_its_ends(tmp_path: Path, files: Path, as_json: bool) -> None:
    """30,000 stages echoed back whole would make one 150 kB line: it keeps its start,
    which names the rule, and its end."""
    stages = ",".join(["1"] * 30_000)
    args = ["canary", "start", "q", "--broker", "sqlite:jobs.db", "--stages", stages]
    done = guild(tmp_path, files, *args, *(["--json"] if as_json else []))
    assert done.returncode == 2 and done.stdout == b""
    if as_json:
        message = json.loads(done.stderr)["error"]
    else:
        message = one_error_line(done).removeprefix("guild: error: ")
    assert message.startswith("canary policy: stages must rise, got [1.0, 1.0, ")
    assert "...[" in message and " more characters]..." in message
    assert message.endswith("1.0, 1.0]")
    assert len(message) < 2_100
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_enqueue_from_a_stdin_with_no_newline_ends_at_once(tmp_path: Path, files: Path) -> None:
    """``guild enqueue q - < /dev/zero``: a line without end is refused at 16 MiB,
    not read until memory runs out; nothing is enqueued."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUILD_")}
    env["PYTHONPATH"] = str(ROOT)
    url = "sqlite:jobs.db"
    made = guild(tmp_path, files, "enqueue", "q", "1", "--broker", url)
    assert made.returncode == 0, made.stderr
    with open("/dev/zero", "rb") as zeros:
        done = subprocess.run(
            [sys.executable, "-m", "guild", "enqueue", "q", "-", "--broker", url],
            stdin=zeros,
            capture_output=True,
            cwd=tmp_path,
            env=env,
            timeout=30,
            check=False,
        )
    line = one_error_line(done)
    assert done.returncode == 2 and done.stdout == b""
    assert line == (
        "guild: error: stdin line 1: longer than 16,777,216 bytes (one JSON payload per line)"
    )
    stats = guild(tmp_path, files, "stats", "--json", "--broker", url)
    assert json.loads(stats.stdout)["q"]["ready"] == 1
