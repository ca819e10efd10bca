"""Structured logs: the seed's fields on every line, context from contextvars."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
import structlog
import trio
import trio.testing
from structlog.testing import capture_logs

import guild
from guild import Job, MemoryBroker, WorkerSpec
from guild.observability import (
    Instruments,
    LoggingInstrument,
    Outcome,
    SandboxRan,
    SeedFields,
    configure_logging,
)
from guild.observability._logging import SEED_FIELDS

from .helpers import finished, state


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


async def _run_jobs(instrument: LoggingInstrument, payloads: list[str]) -> None:
    """Run one job per payload through a real worker ("fail" payloads die at once)."""
    broker = MemoryBroker()
    done = trio.Event()
    seen = 0

    async def handler(job: Job) -> str:
        nonlocal seen
        seen += 1
        structlog.get_logger("user").info("inside_handler", step="resize")
        if seen == len(payloads):
            done.set()
        if job.payload == "fail":
            raise ValueError("bad input")
        return str(job.payload)

    await broker.enqueue([Job(queue="q", payload=p, max_attempts=1) for p in payloads])
    spec = WorkerSpec(queue="q", name="thumbs", handler=handler, concurrency=2)
    worker = guild.Worker(spec, broker, Instruments([instrument]))
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.serve)
        await done.wait()
        await trio.sleep(1)  # let the last attempts settle
        worker.drain()


class TestLoggingInstrument:
    """Each finished attempt is one event with the job's fields."""

    def test_outcomes_map_to_levels(self) -> None:
        instrument = LoggingInstrument(done_level="info")
        with capture_logs() as logs:
            for outcome in Outcome:
                instrument.job_finished(finished("w", outcome, 0.5))
        assert [(e["event"], e["log_level"]) for e in logs] == [
            ("job_done", "info"),
            ("job_retry", "warning"),
            ("job_dead", "error"),
            ("job_released", "info"),
            ("job_cancelled", "info"),
        ]
        assert all(e["worker"] == "w" and e["duration"] == 0.5 and e["task_id"] for e in logs)

    def test_successes_log_at_debug_by_default(self) -> None:
        configure_logging(json=True, level="info", stream=io.StringIO())
        instrument = LoggingInstrument()
        with capture_logs() as logs:
            instrument.job_finished(finished("w", Outcome.DONE))
            instrument.job_finished(finished("w", Outcome.DEAD))
        assert [e["event"] for e in logs] == ["job_dead"]

    def test_state_changes_and_sandbox_runs(self) -> None:
        instrument = LoggingInstrument()
        with capture_logs() as logs:
            instrument.worker_state_changed(state("w", "open", error="DependencyFailure"))
            instrument.worker_state_changed(state("w", "running"))
            instrument.sandbox_ran(
                SandboxRan(argv=("ls",), exit_code=None, duration=0.0, refused_rule="allow-list")
            )
        assert [(e["event"], e["log_level"]) for e in logs] == [
            ("worker_state", "error"),
            ("worker_state", "info"),
            ("sandbox_refused", "warning"),
        ]
        assert logs[0]["last_error"] == "DependencyFailure"
        assert logs[2]["rule"] == "allow-list"

    async def test_a_handlers_own_logger_gets_the_job_context(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            await _run_jobs(LoggingInstrument(done_level="info"), ["a"])
        inside = next(e for e in logs if e["event"] == "inside_handler")
        done = next(e for e in logs if e["event"] == "job_done")
        assert inside["worker"] == done["worker"] == "thumbs"
        assert inside["task_id"] == done["task_id"]
        assert inside["trace_id"] == done["trace_id"]
        assert inside["attempt"] == done["attempt"] == 1


class TestJsonLines:
    """Rendered for real, every line is one JSON object with the seed's fields."""

    async def test_every_line_is_json_with_the_seed_fields(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        out = io.StringIO()
        configure_logging(json=True, level="info", stream=out)
        await _run_jobs(LoggingInstrument(done_level="info"), ["a", "fail"])
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
        assert {line["message"] for line in lines} >= {"inside_handler", "job_done", "job_dead"}
        for line in lines:
            assert list(line)[: len(SEED_FIELDS) - 1] == list(SEED_FIELDS[:-1])
            assert "metadata" in line
            stamp = datetime.fromisoformat(line["timestamp"])
            assert stamp.utcoffset() == timedelta(0)
        job_lines = [line for line in lines if line["message"].startswith("job_")]
        for line in job_lines:
            assert line["worker"] == "thumbs"
            assert line["task_id"]
            assert line["duration"] >= 0
            assert line["metadata"]["queue"] == "q"
        dead = next(line for line in lines if line["message"] == "job_dead")
        assert dead["level"] == "error"
        assert "bad input" in dead["metadata"]["error"]
        inside = next(line for line in lines if line["message"] == "inside_handler")
        assert inside["metadata"] == {"step": "resize"}
        assert inside["worker"] == "thumbs"

    def test_a_terminal_gets_console_lines(self) -> None:
        class Terminal(io.StringIO):
            def isatty(self) -> bool:
                return True

        out = Terminal()
        configure_logging(stream=out)
        structlog.get_logger().info("hello", worker="w")
        assert "hello" in out.getvalue()
        assert not out.getvalue().startswith("{")

    def test_lines_below_the_level_are_dropped(self) -> None:
        out = io.StringIO()
        configure_logging(json=True, level="warning", stream=out)
        structlog.get_logger().info("quiet")
        structlog.get_logger().warning("loud")
        assert [json.loads(line)["message"] for line in out.getvalue().splitlines()] == ["loud"]

    def test_unknown_level_is_refused(self) -> None:
        with pytest.raises(ValueError, match="unknown log level"):
            configure_logging(level="chatty")


class TestSeedFields:
    """The processor fills absent seed fields with null and nests the rest."""

    def test_absent_fields_are_null_and_extras_nest(self) -> None:
        out = SeedFields()(
            None, "info", {"event": "x", "level": "info", "user": 7, "metadata": {"a": 1}}
        )
        assert out == {
            "timestamp": None,
            "level": "info",
            "worker": None,
            "task_id": None,
            "message": "x",
            "duration": None,
            "metadata": {"a": 1, "user": 7},
        }
