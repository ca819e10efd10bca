"""The CLI contract: enqueue, stats, dlq, and one clear line with exit 2 on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

import guild

from .conftest import run_guild


class TestEnqueueAndStats:
    """Jobs enqueued from the command line are counted by `guild stats`."""

    def test_single_bulk_and_stats(self, db_url: str) -> None:
        one = run_guild("enqueue", "emails", '{"to": "ada@example.com"}', "--broker", db_url)
        assert one.returncode == 0, one.stderr
        assert one.stdout.startswith("enqueued ") and "on emails" in one.stdout
        lines = "".join(json.dumps({"n": i}) + "\n" for i in range(1200))
        bulk = run_guild("enqueue", "emails", "-", "--broker", db_url, "--json", input=lines)
        assert bulk.returncode == 0, bulk.stderr
        assert len(json.loads(bulk.stdout)) == 1200
        delayed = run_guild("enqueue", "emails", "1", "--delay", "3600", "--broker", db_url)
        assert delayed.returncode == 0, delayed.stderr
        stats = run_guild("stats", "--broker", db_url, "--json")
        assert stats.returncode == 0, stats.stderr
        counts = json.loads(stats.stdout)["emails"]
        assert (counts["ready"], counts["delayed"], counts["done"]) == (1201, 1, 0)
        human = run_guild("stats", "--broker", db_url)
        assert "emails" in human.stdout and "1201" in human.stdout

    def test_idempotent_key(self, db_url: str) -> None:
        first = run_guild("enqueue", "q", "1", "--key", "k1", "--broker", db_url, "--json")
        second = run_guild("enqueue", "q", "2", "--key", "k1", "--broker", db_url, "--json")
        assert json.loads(first.stdout)[0]["id"] == json.loads(second.stdout)[0]["id"]

    def test_broker_from_environment(self, db_url: str) -> None:
        done = run_guild("enqueue", "q", "1", env={"GUILD_BROKER": db_url})
        assert done.returncode == 0, done.stderr
        stats = run_guild("stats", "--json", env={"GUILD_BROKER": db_url})
        assert json.loads(stats.stdout)["q"]["ready"] == 1


class TestBadInput:
    """Bad input is one line on stderr and exit code 2; nothing is half-done."""

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (
                ["enqueue", "q", "{not json", "--broker", "sqlite:guild.db"],
                "PAYLOAD_JSON: not valid JSON",
            ),
            (["enqueue", "q", "1", "--broker", "postgres://x"], "unknown scheme"),
            (["enqueue", "q", "1", "--broker", "sqlite:///no/such/dir/x.db"], "does not exist"),
            (["enqueue", "q", "1", "--broker", "sqlite:guild.db", "--delay", "-1"], "--delay"),
            (
                ["run", "tests.cli.apps:not_an_app", "--broker", "memory://"],
                "a guild.Guild instance",
            ),
            (["run", "tests.cli.apps:missing", "--broker", "memory://"], "'missing'"),
            (["run", "no_such_module_x:app", "--broker", "memory://"], "importable module"),
            (
                ["run", "tests.cli.apps:quick", "--broker", "memory://", "--concurrency", "0"],
                "--concurrency",
            ),
            (["dlq", "requeue", "--broker", "memory://"], "IDs or --all"),
        ],
    )
    def test_one_clear_line(self, args: list[str], message: str) -> None:
        done = run_guild(*args)
        assert done.returncode == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("guild: error: ") and message in lines[0]

    def test_bad_line_in_bulk_enqueues_nothing(self, tmp_path: Path, db_url: str) -> None:
        done = run_guild("enqueue", "q", "-", "--broker", db_url, input="1\n2\n{oops\n4\n")
        assert done.returncode == 2 and "stdin line 3" in done.stderr
        assert list(tmp_path.iterdir()) == []  # not even an empty database
        stats = run_guild("stats", "--broker", db_url, "--json")
        assert stats.returncode == 2
        assert json.loads(stats.stderr)["error"] == f"no database at {tmp_path}/guild.db"

    def test_bad_config_names_file_and_key(self, tmp_path: Path) -> None:
        config = tmp_path / "guild.toml"
        config.write_text('[guild]\napp = "tests.cli.apps:quick"\nprocesses = "many"\n')
        done = run_guild("run", str(config))
        assert done.returncode == 2
        assert str(config) in done.stderr and "guild.processes" in done.stderr


class TestDeadLetters:
    """`guild dlq` lists, shows and requeues what the workers gave up on."""

    def test_list_show_requeue(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path}/dlq.db"

        async def bury() -> str:
            async with guild.open_broker(url) as broker:
                (job,) = await broker.enqueue([guild.Job(queue="q", payload={"x": 1})])
                (delivery,) = await broker.claim("q", consumer="t", limit=1, lease=5)
                await broker.dead(delivery, error="ValueError: nope", traceback="Traceback...")
                return job.id

        job_id = trio.run(bury)
        listing = run_guild("dlq", "list", "--broker", url)
        assert job_id in listing.stdout and "ValueError: nope" in listing.stdout
        shown = run_guild("dlq", "show", job_id, "--broker", url, "--json")
        assert json.loads(shown.stdout)["payload"] == {"x": 1}
        missing = run_guild("dlq", "show", "NOPE", "--broker", url)
        assert missing.returncode == 1
        requeued = run_guild("dlq", "requeue", job_id, "--broker", url)
        assert requeued.returncode == 0 and "requeued 1 job" in requeued.stdout
        stats = json.loads(run_guild("stats", "--broker", url, "--json").stdout)["q"]
        assert (stats["ready"], stats["dead"]) == (1, 0)
