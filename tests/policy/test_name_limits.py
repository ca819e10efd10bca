"""Limits on the length of what a job carries, and on names: made once (guild._job),
refused by every door with a typed error naming the value and the limit, while
what was stored before the limits stays readable and drainable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

import guild
from guild._job import (
    MAX_ID,
    MAX_KEY,
    MAX_QUEUE_NAME,
    check_field,
    check_queue_name,
    check_stored_queue_name,
    replace_fields,
)
from guild.brokers import open_broker
from tests.cli.conftest import run_guild


class TestTheLimits:
    def test_the_numbers(self) -> None:
        assert (MAX_QUEUE_NAME, MAX_ID, MAX_KEY) == (200, 200, 1024)

    def test_a_queue_name_at_the_limit_is_accepted_one_more_is_not(self) -> None:
        assert check_queue_name("q" * 200) == "q" * 200
        with pytest.raises(guild.InvalidQueueName) as caught:
            check_queue_name("q" * 201)
        assert str(caught.value) == (
            "queue name '" + "q" * 40 + "'...: must be at most 200 characters, got 201"
        )
        assert caught.value.name == "q" * 201
        assert caught.value.reason == "must be at most 200 characters, got 201"

    def test_a_stored_name_has_no_length_limit_but_the_other_rules(self) -> None:
        assert check_stored_queue_name("q" * 5000) == "q" * 5000
        with pytest.raises(guild.InvalidQueueName, match="control or line-breaking"):
            check_stored_queue_name("q" * 2500 + "\n" + "q" * 2500)
        with pytest.raises(guild.InvalidQueueName, match="start or end with whitespace"):
            check_stored_queue_name(" q")

    def test_a_short_name_is_shown_whole_in_the_error(self) -> None:
        with pytest.raises(guild.InvalidQueueName) as caught:
            check_queue_name("a\tb")
        assert str(caught.value) == (
            "queue name 'a\\tb': must not hold control or line-breaking characters"
        )

    @pytest.mark.parametrize(
        ("value", "label", "message"),
        [
            (
                "k" * 1025,
                False,
                "key '" + "k" * 40 + "'...: must be at most 1,024 characters, got 1,025",
            ),
            ("", False, "key '': must not be empty or only whitespace"),
            ("   ", True, "key '   ': must not be empty or only whitespace"),
            ("a\nb", True, "key 'a\\nb': must not hold control or line-breaking characters"),
            (
                "a\u202eb",
                True,
                "key 'a\\u202eb': must not hold control or line-breaking characters",
            ),
            (7, False, "key 7: must be a string, not int"),
        ],
    )
    def test_check_field_refuses(self, value: object, label: bool, message: str) -> None:
        with pytest.raises(guild.InvalidField) as caught:
            check_field("key", value, 1024, label=label)
        assert str(caught.value) == message
        assert (caught.value.field, caught.value.value) == ("key", value)
        assert isinstance(caught.value, ValueError)

    @pytest.mark.parametrize("value", ["k" * 1024, " ", "a\tb", "é漢", "x"])
    def test_any_key_up_to_the_limit_is_accepted(self, value: str) -> None:
        assert check_field("key", value, 1024, label=False) == value
        assert guild.Job(queue="q", key=value).key == value


class TestJob:
    @pytest.mark.parametrize(
        ("fields", "error", "message"),
        [
            (
                {"queue": "q" * 5000},
                guild.InvalidQueueName,
                "must be at most 200 characters, got 5,000",
            ),
            ({"key": "k" * 100_000}, guild.InvalidField, "key 'kkkk"),
            ({"key": ""}, guild.InvalidField, "key '': must not be empty"),
            ({"trace_id": "t" * 201}, guild.InvalidField, "trace_id 'tttt"),
            ({"trace_id": "a\nb"}, guild.InvalidField, "trace_id 'a\\nb': must not hold control"),
            ({"id": "i" * 201}, guild.InvalidField, "must be at most 200 characters, got 201"),
            ({"id": " "}, guild.InvalidField, "id ' ': must not be empty or only whitespace"),
        ],
    )
    def test_refuses(self, fields: dict[str, str], error: type[Exception], message: str) -> None:
        with pytest.raises(error) as caught:
            guild.Job(**{"queue": "q", **fields})
        assert message in str(caught.value)

    def test_at_the_limits(self) -> None:
        job = guild.Job(queue="q" * 200, id="i" * 200, key="k" * 1024, trace_id="t" * 200)
        assert (len(job.queue), len(job.id), len(job.key or ""), len(job.trace_id)) == (
            200,
            200,
            1024,
            200,
        )


class TestEveryDoor:
    async def test_enqueue_and_enqueue_many(self) -> None:
        app = guild.Guild("doors", broker=guild.MemoryBroker())
        async with app.open():
            with pytest.raises(guild.InvalidQueueName, match="at most 200 characters, got 201"):
                await app.enqueue("q" * 201, 1)
            with pytest.raises(guild.InvalidField, match="at most 1,024 characters, got 1,025"):
                await app.enqueue("q", 1, key="k" * 1025)
            with pytest.raises(guild.InvalidField, match=r"trace_id .*at most 200 characters"):
                await app.enqueue_many("q", [1, 2], trace_id="t" * 201)
            assert await app.broker.stats() == {}

    def test_the_sync_client(self, tmp_path: Path) -> None:
        with guild.Client(f"sqlite:{tmp_path / 'c.db'}") as client:
            with pytest.raises(guild.InvalidQueueName, match="got 5,000"):
                client.enqueue("q" * 5000, 1)
            with pytest.raises(guild.InvalidField, match="got 100,000"):
                client.enqueue("q", 1, key="k" * 100_000)
            assert client.enqueue("q", 1, key="k" * 1024).key == "k" * 1024

    def test_periodic_and_worker_names(self) -> None:
        app = guild.Guild("doors")

        async def handler(job: guild.Job) -> None:
            return None

        with pytest.raises(guild.InvalidQueueName, match="got 201"):
            app.periodic(60, "q" * 201)
        with pytest.raises(guild.InvalidField, match=r"periodic name 'nnn.*got 201"):
            app.periodic(60, "q", name="n" * 201)
        with pytest.raises(guild.InvalidField, match="worker name 'a\\\\nb'"):
            app.worker("q", name="a\nb")(handler)
        assert app.specs == {} and app.schedules == {}

    def test_a_workflow_is_refused_at_submission(self) -> None:
        long_step = guild.Workflow([guild.Step("s" * 201, "q")])
        with pytest.raises(guild.InvalidWorkflow, match=r"\(step-name\).*got 201"):
            guild.workflows._spec.validate(long_step)
        long_queue = guild.Workflow([guild.Step("s", "q" * 201)])
        with pytest.raises(guild.InvalidWorkflow, match=r"\(queue-name\): step 's'.*got 201"):
            guild.workflows._spec.validate(long_queue)
        with pytest.raises(guild.InvalidWorkflow, match=r"\(name\): name 'a\\nb'"):
            guild.workflows._spec.validate(guild.Workflow([guild.Step("s", "q")], name="a\nb"))


class TestStoredBeforeTheLimits:
    """A row written before the limits reads back as it was, and its queue drains."""

    LONG = "q" * 5000

    async def test_a_worker_drains_a_long_named_queue(self, tmp_path: Path) -> None:
        url = f"sqlite:{tmp_path / 'old.db'}"
        async with open_broker(url) as broker:
            # As an older guild stored it: Job's checks of new names skipped.
            old = replace_fields(guild.Job(queue="q", payload=21), queue=self.LONG, key="k" * 2000)
            (stored,) = await broker.enqueue([old])
            (listed,) = [s for name, s in (await broker.stats()).items() if name == self.LONG]
            assert listed.ready == 1

        app = guild.Guild("old", workflow_poll=None)
        done = trio.Event()

        @app.worker(self.LONG)
        async def double(job: guild.Job) -> int:
            done.set()
            return int(job.payload) * 2

        async def until_done() -> None:
            await done.wait()

        with trio.fail_after(30):
            await app.run(url, shutdown_trigger=until_done)
        async with open_broker(url) as broker:
            result = await broker.get_result(stored.id)
        assert result is not None
        assert (result.status, result.value, result.queue) == (guild.JobStatus.DONE, 42, self.LONG)

    def test_the_cli_reads_and_purges_it_and_cuts_it_in_tables(self, tmp_path: Path) -> None:
        async def store() -> None:
            async with open_broker(f"sqlite:{tmp_path / 'guild.db'}") as broker:
                await broker.enqueue(
                    [replace_fields(guild.Job(queue="q", payload=1), queue=self.LONG)]
                )

        trio.run(store)
        stats = run_guild("stats", cwd=tmp_path)
        assert stats.returncode == 0, stats.stderr
        rows = stats.stdout.splitlines()
        assert rows[1].startswith("q" * 197 + "...  ")
        assert max(len(row) for row in rows) < 300
        as_json = run_guild("stats", "--json", cwd=tmp_path)
        assert json.loads(as_json.stdout)[self.LONG]["ready"] == 1
        purged = run_guild("purge", self.LONG, "--status", "ready", "--yes", "--json", cwd=tmp_path)
        assert purged.returncode == 0, purged.stderr
        after = json.loads(run_guild("stats", "--json", cwd=tmp_path).stdout)
        assert after.get(self.LONG, {}).get("ready", 0) == 0
        # A rollout that exists is in reach by its queue's name; a new one makes a
        # new queue (the lane), so it takes the rule of new names.
        status = run_guild("canary", "status", self.LONG, "--json", cwd=tmp_path)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout) == []
        paused = run_guild("canary", "pause", self.LONG, cwd=tmp_path)
        assert paused.returncode == 1 and "no rollout" in paused.stderr, paused.stderr
        started = run_guild("canary", "start", self.LONG, cwd=tmp_path)
        assert started.returncode == 2 and "at most 200 characters" in started.stderr
        refused = run_guild("enqueue", self.LONG, "1", cwd=tmp_path)
        assert refused.returncode == 2 and "at most 200 characters" in refused.stderr


def test_a_workflow_stored_before_the_limits_reads_back_and_makes_its_jobs() -> None:
    from guild.workflows._steps import step_job

    # The record an older guild wrote: a step name and queue past 200 characters.
    text = json.dumps(
        {
            "id": "W1",
            "name": "n" * 300,
            "steps": [
                {
                    "name": "s" * 1100,
                    "queue": "q" * 300,
                    "payload": None,
                    "after": [],
                    "compensate": None,
                    "max_attempts": None,
                    "timeout": None,
                }
            ],
            "compensations": {},
        }
    )
    workflow = guild.Workflow.from_json(text)
    job = step_job(workflow, "s" * 1100, {})
    assert (job.queue, job.key, job.id) == ("q" * 300, "wf:W1:" + "s" * 1100, "W1.0")
    with pytest.raises(guild.InvalidWorkflow, match=r"\(name\)"):
        guild.workflows._spec.validate(workflow)  # as a new submission, it is refused
