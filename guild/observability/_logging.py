"""structlog, configured once: JSON lines for machines, readable lines for people.

``configure_logging()`` picks the renderer from the stream (JSON when it is not
a terminal) unless told. A JSON line always has the seed's fields, in this order::

    {"timestamp": "2026-11-24T04:50:00.123456Z", "level": "info", "worker": "emails",
     "task_id": "01J…", "message": "job_done", "duration": 0.0123,
     "trace_id": "01J…", "attempt": 1, "metadata": {"queue": "emails"}}

``worker``, ``task_id``, ``trace_id`` and ``attempt`` come from structlog's
contextvars, which the worker binds around every handler call, so a handler's
own ``structlog.get_logger().info(...)`` carries them too. Fields that are not
the seed's go under ``metadata``; a seed field with nothing to say is ``null``.

:class:`LoggingInstrument` turns runtime events into those lines. Successful
jobs log at ``debug`` by default (``done_level`` changes it); retries at
``warning``; dead letters, crashes and open circuits at ``error``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import TYPE_CHECKING, Any, TextIO

import structlog

from ..supervision._states import WorkerState
from ._events import Instrument, JobFinished, Outcome, WorkerStateChanged

if TYPE_CHECKING:
    from ._feature_events import JobLimitWaited, RateLimited, SandboxRan

SEED_FIELDS = ("timestamp", "level", "worker", "task_id", "message", "duration", "metadata")
"""Fields every JSON line has (the seed's log format)."""
EXTRA_TOP_LEVEL = ("trace_id", "attempt", "logger", "exception")
"""Fields kept beside the seed's rather than under ``metadata`` when present."""


class SeedFields:
    """Processor: the seed's fields first (``null`` when absent), the rest in ``metadata``.

    Args:
        top_level: extra keys to keep at the top when present.
        message_key: where the event name goes (``message`` in the seed).
    """

    def __init__(
        self, top_level: Iterable[str] = EXTRA_TOP_LEVEL, *, message_key: str = "message"
    ) -> None:
        self._top_level = tuple(top_level)
        self._message_key = message_key

    def __call__(
        self, logger: object, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        pop = event_dict.pop
        out: dict[str, Any] = {
            "timestamp": pop("timestamp", None),
            "level": pop("level", method_name),
            "worker": pop("worker", None),
            "task_id": pop("task_id", None),
            "message": pop("event", pop(self._message_key, None)),
            "duration": pop("duration", None),
        }
        for key in self._top_level:
            if key in event_dict:
                out[key] = pop(key)
        metadata = pop("metadata", None)
        nested = dict(metadata) if isinstance(metadata, dict) else {}
        nested.update(event_dict)
        out["metadata"] = nested
        return out


def _level_number(level: str | int) -> int:
    if isinstance(level, int):
        return level
    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ValueError(f"unknown log level {level!r}; expected debug, info, warning, error")
    return number


def processors(*, json: bool) -> list[Any]:
    """The processor chain :func:`configure_logging` installs."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
    ]
    if not json:
        return [*shared, structlog.dev.ConsoleRenderer(colors=False)]
    return [
        *shared,
        structlog.processors.format_exc_info,
        SeedFields(),
        structlog.processors.JSONRenderer(default=str),
    ]


def configure_logging(
    *, json: bool | None = None, level: str | int = "info", stream: TextIO | None = None
) -> None:
    """Configure structlog for guild (and its users) once, at start-up.

    Args:
        json: JSON lines (True) or console lines (False); None: JSON unless
            ``stream`` is a terminal.
        level: the lowest level written; lower calls cost one ``return None``.
        stream: where lines go (default: ``sys.stderr``).

    Raises:
        ValueError: ``level`` is not a level name.
    """
    out = stream if stream is not None else sys.stderr
    if json is None:
        json = not (hasattr(out, "isatty") and out.isatty())
    structlog.configure(
        processors=processors(json=json),
        wrapper_class=structlog.make_filtering_bound_logger(_level_number(level)),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=True,
    )


_WARN_STATES = frozenset(
    {
        WorkerState.CRASHED,
        WorkerState.FAILED_TO_START,
        WorkerState.RESTARTING,
        WorkerState.HALF_OPEN,
        WorkerState.DRAINING,
    }
)
_ERROR_STATES = frozenset({WorkerState.OPEN, WorkerState.GAVE_UP})


class LoggingInstrument(Instrument):
    """Writes one structured line per finished job attempt, state change and sandbox run.

    It listens to ``job_finished``, not ``job_started``: a finished line carries
    the attempt, its duration and its outcome, and the worker is spared
    building a start event per job for a line nobody reads.

    Args:
        logger: a structlog logger (default ``structlog.get_logger("guild.jobs")``,
            resolved at the first event so :func:`configure_logging` may come later).
        done_level: the level of successful jobs. ``debug`` by default: at tens
            of thousands of jobs a second a line per success costs more than
            the jobs (see docs/operations.md); retries, dead letters and state
            changes always log at ``warning`` or above.
    """

    def __init__(self, *, logger: Any = None, done_level: str = "debug") -> None:
        self._given = logger
        self._log: Any = None
        self._done_level = _level_number(done_level)
        self._done: Any = None

    def _logger(self) -> Any:
        if self._log is None:
            log = self._given if self._given is not None else structlog.get_logger("guild.jobs")
            # Resolve the lazy proxy once: every call on a proxy re-binds it.
            self._log = log.bind() if hasattr(log, "bind") else log
            enabled = getattr(self._log, "is_enabled_for", None)
            if enabled is None or enabled(self._done_level):
                self._done = getattr(self._log, logging.getLevelName(self._done_level).lower())
        return self._log

    def job_finished(self, event: JobFinished) -> None:
        log = self._log if self._log is not None else self._logger()
        outcome = event.outcome
        if outcome is Outcome.DONE:
            if self._done is None:
                return  # below the configured level: skip building the line
            emit = self._done
            extra: dict[str, Any] = {}
        elif outcome is Outcome.RETRY:
            emit, extra = log.warning, {"error": event.error, "retry_at": event.retry_at}
        elif outcome is Outcome.DEAD:
            emit, extra = log.error, {"error": event.error}
        else:
            emit, extra = log.info, {}
        job = event.job
        emit(
            f"job_{_VERBS[outcome]}",
            worker=event.worker,
            task_id=job.id,
            trace_id=job.trace_id,
            attempt=job.attempt,
            duration=round(event.duration, 6),
            queue=job.queue,
            **extra,
        )

    def worker_state_changed(self, event: WorkerStateChanged) -> None:
        log = self._logger()
        state = event.state
        if state in _ERROR_STATES:
            method = log.error
        elif state in _WARN_STATES:
            method = log.warning
        else:
            method = log.info
        method(
            "worker_state",
            worker=event.worker,
            state=state,
            detail=event.detail,
            restarts_in_period=event.restarts_in_period,
            last_error=event.last_error,
        )

    def rate_limited(self, event: RateLimited) -> None:
        self._logger().debug("rate_limited", limiter=event.limiter, duration=event.waited)

    def job_limit_waited(self, event: JobLimitWaited) -> None:
        if event.waited > 0:
            self._logger().debug(
                "job_limited",
                worker=event.worker,
                task_id=event.job.id,
                key=event.key,
                duration=event.waited,
            )

    def sandbox_ran(self, event: SandboxRan) -> None:
        fields = {
            "argv": list(event.argv),
            "exit_code": event.exit_code,
            "duration": event.duration,
        }
        if event.refused_rule is not None:
            self._logger().warning("sandbox_refused", rule=event.refused_rule, **fields)
        else:
            self._logger().info("sandbox_ran", **fields)


_VERBS = {
    Outcome.DONE: "done",
    Outcome.RETRY: "retry",
    Outcome.DEAD: "dead",
    Outcome.RELEASED: "released",
    Outcome.CANCELLED: "cancelled",
}
