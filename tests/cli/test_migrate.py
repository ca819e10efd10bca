"""`guild migrate` as a real process: dry run, apply with a named backup, a failed
check, kill -9 midway (at a set step, and at random moments on 100,000 jobs), and
`guild run` refusing a file of another schema version."""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from guild.brokers._sqlite_migrate import CURRENT, FAULT_ENV
from tests._redis_server import RedisServer, redis_cli_binary, running_redis_server
from tests.brokers._old_schemas import STATUSES, build, intact, jobs_of, schema_of, version_of

from .conftest import ROOT, guild_cmd, run_guild


def _one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("guild: error: "), stderr
    return lines[0]


@pytest.fixture
def old_db(tmp_path: Path) -> Path:
    path = tmp_path / "guild.db"
    build(path, 2, jobs_per_status=5)
    return path


# Written out: build(…, jobs_per_status=5) on one queue.
FIVE_EACH = {("q0", status): 5 for status in STATUSES}


class TestDryRun:
    def test_lists_the_pending_steps(self, old_db: Path) -> None:
        done = run_guild("migrate", "--broker", f"sqlite:///{old_db}", "--dry-run")
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0] == (
            f"sqlite schema of sqlite://{old_db}: version 2, this guild needs {CURRENT}"
        )
        assert lines[1].startswith(f"pending ({CURRENT - 2} steps; dry run, nothing changed)")
        assert [line.split(":")[0].strip() for line in lines[2:-1]] == [
            str(v) for v in range(3, CURRENT + 1)
        ]
        assert lines[2] == (
            "  3: CREATE TABLE ledger_counts; CREATE TABLE ledger_marks;"
            " CREATE INDEX ledger_marks_expiry"
        )
        assert lines[-1] == "holds 20 jobs in 1 queue"
        assert version_of(old_db) == 2
        assert list(old_db.parent.glob("*.bak")) == []

    def test_json(self, old_db: Path) -> None:
        done = run_guild("migrate", "--broker", f"sqlite:///{old_db}", "--dry-run", "--json")
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        assert (answer["found"], answer["target"], answer["dry_run"]) == (2, CURRENT, True)
        assert [step["version"] for step in answer["pending"]] == list(range(3, CURRENT + 1))
        assert (answer["applied"], answer["backup"]) == (False, None)
        assert answer["census"]["jobs q0"] == dict.fromkeys(STATUSES, 5)


class TestApply:
    def test_backs_up_applies_and_verifies(self, old_db: Path) -> None:
        done = run_guild("migrate", "--broker", f"sqlite:///{old_db}")
        assert done.returncode == 0, done.stderr
        (backup,) = old_db.parent.glob("guild.db.v2-*.bak")
        lines = done.stdout.splitlines()
        assert (
            lines[0] == f"sqlite schema of sqlite://{old_db}: migrated from version 2 to {CURRENT}"
        )
        assert lines[1] == f"backup: {backup}"
        assert lines[-1] == (
            "verified: integrity_check, foreign_key_check, schema version, counts equal"
            " (20 jobs in 1 queue, before and after)"
        )
        assert (version_of(old_db), jobs_of(old_db), intact(old_db)) == (CURRENT, FIVE_EACH, True)
        assert (version_of(backup), jobs_of(backup)) == (2, FIVE_EACH)

        again = run_guild("migrate", "--broker", f"sqlite:///{old_db}", "--json")
        assert again.returncode == 0, again.stderr
        answer = json.loads(again.stdout)
        assert (answer["found"], answer["pending"], answer["backup"]) == (CURRENT, [], None)
        assert len(list(old_db.parent.glob("*.bak"))) == 1

    def test_json_names_the_backup(self, old_db: Path) -> None:
        done = run_guild("migrate", "--broker", f"sqlite:///{old_db}", "--json")
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        assert answer["applied"] is True
        assert Path(answer["backup"]).parent == old_db.parent
        assert version_of(Path(answer["backup"])) == 2

    def test_a_failed_check_exits_1_and_leaves_the_file(self, old_db: Path) -> None:
        done = run_guild("migrate", "--broker", f"sqlite:///{old_db}", env={FAULT_ENV: "verify"})
        assert done.returncode == 1
        line = _one_error_line(done.stderr)
        assert "failed its checks" in line
        assert "rolled back, the file is as it was" in line
        assert (version_of(old_db), jobs_of(old_db), intact(old_db)) == (2, FIVE_EACH, True)

    def test_a_failed_check_after_commit_restores_the_backup(
        self, old_db: Path, tmp_path: Path
    ) -> None:
        build(tmp_path / "as_built.db", 2, jobs_per_status=0)
        done = run_guild(
            "migrate", "--broker", f"sqlite:///{old_db}", env={FAULT_ENV: "after-commit"}
        )
        assert done.returncode == 1
        assert "restored it from the backup" in _one_error_line(done.stderr)
        assert (version_of(old_db), jobs_of(old_db), intact(old_db)) == (2, FIVE_EACH, True)
        assert schema_of(old_db) == schema_of(tmp_path / "as_built.db")


class TestKillNine:
    def test_killed_midway_leaves_the_old_file_usable(self, old_db: Path) -> None:
        with subprocess.Popen(
            guild_cmd("migrate", "--broker", f"sqlite:///{old_db}"),
            cwd=ROOT,
            env=_env({FAULT_ENV: "pause:4"}),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        ) as process:
            try:
                assert process.stderr is not None
                # Steps 3 and 4 are applied, in the open transaction, holding the lock.
                assert process.stderr.readline() == "migrate paused after step 4\n"
            finally:
                process.kill()
        assert (version_of(old_db), jobs_of(old_db), intact(old_db)) == (2, FIVE_EACH, True)
        done = run_guild("migrate", "--broker", f"sqlite:///{old_db}")
        assert done.returncode == 0, done.stderr
        assert (version_of(old_db), jobs_of(old_db), intact(old_db)) == (CURRENT, FIVE_EACH, True)

    @pytest.mark.slow
    def test_random_kills_on_100000_jobs_leave_old_or_new(self, tmp_path: Path) -> None:
        """10 kills at random moments of a migration of 100,000 jobs (25,000 in each
        status) from version 1: each leaves the old file intact or the new one verified."""
        original = tmp_path / "original.db"
        build(original, 1, jobs_per_status=25_000)
        expected = {("q0", status): 25_000 for status in STATUSES}
        work = tmp_path / "work" / "guild.db"
        work.parent.mkdir()
        # One whole run: how long a migration takes here, so kills land across it.
        shutil.copy(original, work)
        started = time.monotonic()
        whole = run_guild("migrate", "--broker", f"sqlite:///{work}", timeout=300)
        duration = time.monotonic() - started
        assert whole.returncode == 0, whole.stderr
        rng = random.Random(11)
        outcomes = []
        for _ in range(10):
            shutil.rmtree(work.parent)
            work.parent.mkdir()
            shutil.copy(original, work)
            process = subprocess.Popen(
                guild_cmd("migrate", "--broker", f"sqlite:///{work}"),
                cwd=ROOT,
                env=_env({}),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(rng.uniform(0.0, duration))
            process.kill()
            process.wait()
            version = version_of(work)
            assert version in (1, CURRENT)
            assert (jobs_of(work), intact(work)) == (expected, True)
            outcomes.append(version)
        print(f"migration {duration:.2f}s; versions after each kill: {outcomes}")


def _env(extra: dict[str, str]) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("GUILD_BROKER", FAULT_ENV)}
    return {**env, **extra}


class TestWorkersRefuse:
    def test_an_old_schema(self, old_db: Path) -> None:
        done = run_guild("run", "tests.cli.apps:slow", "--broker", f"sqlite:///{old_db}")
        assert done.returncode == 2
        assert _one_error_line(done.stderr) == (
            f"guild: error: the database {old_db} has schema version 2, older than version"
            f" {CURRENT}, which this guild needs: run `guild migrate --broker sqlite://{old_db}`"
        )
        assert version_of(old_db) == 2

    def test_a_newer_schema(self, tmp_path: Path) -> None:
        path = tmp_path / "future.db"
        build(path, CURRENT)
        db = sqlite3.connect(path, isolation_level=None)
        db.execute(f"PRAGMA user_version = {CURRENT + 7}")
        db.close()
        done = run_guild("run", "tests.cli.apps:slow", "--broker", f"sqlite:///{path}")
        assert done.returncode == 2
        assert _one_error_line(done.stderr) == (
            f"guild: error: the database {path} has schema version {CURRENT + 7}, newer than"
            f" version {CURRENT}, the latest this guild understands: upgrade guild to one"
            " that knows it"
        )


class TestErrors:
    def test_memory_has_nothing_to_migrate(self) -> None:
        done = run_guild("migrate", "--broker", "memory://")
        assert done.returncode == 2
        assert "nothing to migrate" in _one_error_line(done.stderr)

    def test_a_missing_file(self, tmp_path: Path) -> None:
        done = run_guild("migrate", "--broker", f"sqlite:///{tmp_path}/absent.db", "--json")
        assert done.returncode == 2
        error = json.loads(done.stderr)
        assert error["error"] == f"no database at {tmp_path}/absent.db"
        assert not (tmp_path / "absent.db").exists()


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    # With persistence: guild warns (a log line on stderr) about a Redis without.
    with running_redis_server(appendonly=True) as server:
        yield server


class TestRedis:
    def test_nothing_pending_and_the_layout_version(self, redis: RedisServer) -> None:
        done = run_guild("migrate", "--broker", redis.url, "--dry-run")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == (
            f"redis key layout of {redis.url}: version 1, the current one: nothing to migrate"
            " (no backup taken)"
        )
        done = run_guild("migrate", "--broker", redis.url, "--json")
        answer = json.loads(done.stdout)
        assert (answer["kind"], answer["found"], answer["target"]) == ("redis key layout", 1, 1)
        assert (answer["pending"], answer["backup"]) == ([], None)

    def test_a_newer_layout_is_refused(self, redis: RedisServer) -> None:
        # A later guild's layout, under a prefix of its own: the stored version wins.
        subprocess.run(
            [redis_cli_binary(), "-p", str(redis.port), "SET", "guild:layout", "2"],
            check=True,
            capture_output=True,
        )
        try:
            for command in (("migrate", "--dry-run"), ("run", "tests.cli.apps:slow")):
                done = run_guild(*command, "--broker", redis.url)
                assert done.returncode == 2
                assert _one_error_line(done.stderr) == (
                    f"guild: error: Redis {redis.url} (prefix 'guild') has schema version 2,"
                    " newer than version 1, the latest this guild understands: upgrade guild"
                    " to one that knows it"
                )
        finally:
            subprocess.run(
                [redis_cli_binary(), "-p", str(redis.port), "SET", "guild:layout", "1"],
                check=True,
                capture_output=True,
            )
