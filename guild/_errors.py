"""Every exception guild raises, in one tree.

::

    GuildError
    ├── BrokerError
    │   ├── BrokerClosed            you closed the broker, then used it
    │   ├── BrokerUnavailable       the backend is unreachable (cause in __cause__)
    │   ├── BrokerDataError         a record the broker keeps is not what guild wrote (a key of another type)
    │   ├── BrokerFileReplaced      the SQLite file was deleted or replaced under the broker
    │   ├── SchemaMismatch          the stored schema (key layout) is older or newer than this guild's
    │   ├── MigrationFailed         `guild migrate` failed its checks: the file was left as it was or restored
    │   └── UnknownBrokerURL        a URL whose scheme or form no broker accepts (also ValueError)
    ├── JobError
    │   ├── PayloadDecodeError      the stored payload is not valid JSON (also ValueError)
    │   ├── PayloadEncodeError      JSON cannot encode a payload: nothing enqueued (also TypeError)
    │   ├── ResultEncodeError       JSON cannot encode a handler's result: that attempt failed (also TypeError)
    │   └── JobTimeout              the handler ran past job.timeout (also TimeoutError)
    ├── DependencyFailure           raise (or subclass) in a handler: a dependency, not the job, failed
    ├── SupervisorError
    │   ├── GaveUp                  restart intensity exceeded; the supervisor stopped its children
    │   └── WorkerEnded             a worker stopped without being drained: a crash, restarted
    ├── ConfigError                 a bad guild.toml or option: path, key, expected (also ValueError)
    ├── InvalidQueueName            empty, too long, whitespace-padded or control characters (ValueError)
    ├── InvalidField                a job key, id or trace id (or a name): empty, too long, control characters (ValueError)
    ├── InvalidHandler              a handler that is not `async def h(job)`, refused at registration (also TypeError)
    ├── InvalidWorkflow             a workflow refused at submission: rule, step, reason (also ValueError)
    ├── NotAWorkflowStep            StepInput.of(job) for a job that no workflow enqueued (also ValueError)
    ├── UnknownWorkflow             no workflow with that id in the broker (also LookupError)
    ├── SandboxError
    │   ├── CommandRefused          the policy refused an argv, naming the rule (also PermissionError)
    │   ├── SandboxTimeout          the command ran past its timeout; carries partial output
    │   └── IsolationUnavailable    isolation was asked for (the default) and this host offers none
    └── RateLimitError              a rate limiter was misused (over-release, double-acquire)

Control-flow requests a handler may raise (not failures):

* :class:`Retry` — run this job again, after ``after`` seconds if given.
* :class:`Reject` — do not run this job again: dead-letter it now, with the reason.

Backend exceptions (``sqlite3``, coredis, OS errors) never escape a broker: each
broker translates them at one boundary into the most specific class here, with the
original in ``__cause__``.
"""

from __future__ import annotations

import copyreg

import attrs

from ._exports import publish


class _Portable(Exception):
    """Pickles by state, not by calling ``__init__`` again.

    Exception's own pickling calls ``cls(*self.args)``: ``args`` holds the
    message, and an ``__init__`` that takes other arguments (``JobTimeout(job_id,
    timeout)``) then fails to unpickle, or rebuilds a message around the message.
    Errors cross processes (a process pool in a handler, the sandbox), so every
    error here is rebuilt from its message and attributes instead; notes travel
    with them (they live in ``__dict__``).
    """

    def __reduce__(self) -> tuple[object, ...]:
        # copyreg.__newobj__ is cls.__new__(cls, *args); the state then goes
        # through BaseException.__setstate__, args with it (an OSError subclass,
        # JobTimeout say, sets its args in __init__, which is not called).
        # Nothing of guild's own is named, so a pickle names only guild.X.
        newobj = copyreg.__newobj__  # type: ignore[attr-defined]  # typeshed omits it
        return (newobj, (type(self), *self.args), {**self.__dict__, "args": self.args})


class GuildError(_Portable):
    """Base class of every error guild raises."""


# --- brokers -----------------------------------------------------------------------


class BrokerError(GuildError):
    """A broker could not do what was asked."""


class BrokerClosed(BrokerError):
    """The broker was closed by its owner and then used."""


class BrokerUnavailable(BrokerError):
    """The broker's backend cannot be reached; the original error is ``__cause__``."""


class BrokerDataError(BrokerError):
    """The broker answered, but a record it keeps is not what guild wrote (a Redis
    key under guild's prefix that another program overwrote with another type, a
    stored job that cannot be decoded); the message names it. The same call fails
    the same way until someone repairs the record: a restart never does, so a
    worker meeting one waits it out like an outage, reporting the record by name
    (``/health`` check ``worker:<name>:broker``), and resumes once it is repaired.
    """


class BrokerFileReplaced(BrokerError):
    """The SQLite file was deleted or replaced while the broker had it open.

    The broker refuses every call from then on: it would go on writing to a file
    nobody else can see (its jobs lost when the process ends), while new
    enqueues go to the new file. Restart the process to serve the file now at
    the path.

    Attributes:
        path: the file's path.
    """

    def __init__(self, path: str, what: str) -> None:
        super().__init__(
            f"sqlite {path}: the database file was {what} while the broker had it open;"
            " refusing to go on with a file nobody else sees (restart to open the one"
            " now at the path)"
        )
        self.path = path


class SchemaMismatch(BrokerError):
    """The broker's stored schema (SQLite) or key layout (Redis) is not the version
    this guild understands: older ones wait for ``guild migrate``, newer ones for a
    newer guild. Nothing was changed.

    Attributes:
        where: the database or Redis prefix, for the message.
        found: the version stored.
        supported: the version this guild reads and writes.
        command: what to run (``guild migrate --broker …``) for an older one, else None.
    """

    def __init__(self, where: str, found: int, supported: int, command: str | None) -> None:
        if found < supported:
            advice = f"run `{command}`" if command else "migrate it"
            detail = f"older than version {supported}, which this guild needs: {advice}"
        else:
            detail = (
                f"newer than version {supported}, the latest this guild understands:"
                " upgrade guild to one that knows it"
            )
        super().__init__(f"{where} has schema version {found}, {detail}")
        self.where = where
        self.found = found
        self.supported = supported
        self.command = command


class MigrationFailed(BrokerError):
    """A migration's checks failed after its steps ran: the database was rolled back,
    or restored from the backup taken first. The message says which, and names the
    backup."""


class UnknownBrokerURL(BrokerError, ValueError):
    """A broker URL that no broker accepts.

    Attributes:
        url: the URL as given.
        reason: what was wrong with it.
    """

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"broker URL {url!r}: {reason}")
        self.url = url
        self.reason = reason


# --- jobs --------------------------------------------------------------------------


class JobError(GuildError):
    """A single job could not be run; the job's problem, never the worker's."""


class PayloadDecodeError(JobError, ValueError):
    """A stored payload could not be decoded as JSON.

    Attributes:
        job_id: the job whose payload failed.
        raw: the undecodable bytes (truncated to 200 bytes).
    """

    def __init__(self, job_id: str, raw: bytes | str, reason: str) -> None:
        shown = raw[:200]
        super().__init__(f"job {job_id}: payload is not valid JSON ({reason}): {shown!r}")
        self.job_id = job_id
        self.raw = shown
        self.reason = reason


class PayloadEncodeError(JobError, TypeError):
    """JSON cannot encode a job's payload; nothing was enqueued.

    Attributes:
        path: where in the payload, e.g. ``payload['when']``; in a call that
            enqueues several, ``payloads[437]['when']``.
        problem: what is there, e.g. ``is a datetime, which JSON cannot encode``.
        index: which of the call's payloads it is, when the call has several.
    """

    def __init__(self, path: str, problem: str, index: int | None = None) -> None:
        super().__init__(f"{path} {problem}")
        self.path = path
        self.problem = problem
        self.index = index


class ResultEncodeError(JobError, TypeError):
    """JSON cannot encode what a handler returned.

    The worker fails that attempt with it (then retries or dead-letters the job
    as its retry policy says); the handler's other jobs are unaffected.

    Attributes:
        path: where in the result, e.g. ``result[2]['at']``.
        problem: what is there, e.g. ``is a datetime, which JSON cannot encode``.
    """

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path} {problem}")
        self.path = path
        self.problem = problem


class JobTimeout(JobError, TimeoutError):
    """A handler ran longer than its job's timeout and was cancelled."""

    def __init__(self, job_id: str, timeout: float) -> None:
        super().__init__(f"job {job_id} timed out after {timeout:g}s")
        self.job_id = job_id
        self.timeout = timeout


class UnknownJob(GuildError, LookupError):
    """No job with that id is known to the broker (never enqueued, or expired).

    Attributes:
        job_id: the id asked for.
    """

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id


class DependencyFailure(GuildError):
    """Raised by a handler when something the worker depends on failed.

    A plain exception is the job's problem (retry, then dead letter). A
    ``DependencyFailure`` (or any exception type listed in the worker's
    ``dependency_errors``) also counts toward the worker's failure streak: after
    ``dependency_threshold`` in a row the worker crashes and its supervisor takes
    over (restart with backoff, and the circuit if enabled). The job itself is
    still retried.
    """


# --- supervision -------------------------------------------------------------------


class SupervisorError(GuildError):
    """A supervisor could not keep its children running."""


class GaveUp(SupervisorError):
    """Restart intensity was exceeded: the supervisor stopped every child.

    Attributes:
        supervisor: the supervisor's name.
        restarts: restarts counted inside the window.
        period: the window, in seconds.
    """

    def __init__(self, supervisor: str, restarts: int, period: float, last_error: str) -> None:
        super().__init__(
            f"supervisor {supervisor!r} gave up: {restarts} restarts within {period:g}s"
            f" (last error: {last_error})"
        )
        self.supervisor = supervisor
        self.restarts = restarts
        self.period = period
        self.last_error = last_error


class WorkerEnded(SupervisorError):
    """A worker ended without being told to drain (its tasks all returned, say,
    after a cancellation that was not its own leaked in). Raised in place of the
    quiet return so its supervisor restarts it like any crash.

    Attributes:
        worker: the worker's name.
    """

    def __init__(self, worker: str) -> None:
        super().__init__(f"worker {worker!r} stopped without being drained")
        self.worker = worker


# --- configuration -----------------------------------------------------------------


class ConfigError(GuildError, ValueError):
    """A configuration value is wrong.

    Attributes:
        path: the file (or ``"<option>"`` for a command-line option).
        key: the dotted key, e.g. ``workers.emails.concurrency``.
        expected: what the key must be.
    """

    def __init__(self, path: str, key: str, expected: str, got: object = attrs.NOTHING) -> None:
        message = f"{path}: {key}: expected {expected}"
        if got is not attrs.NOTHING:
            message += f", got {got!r}"
        super().__init__(message)
        self.path = path
        self.key = key
        self.expected = expected


def shown(value: object) -> str:
    """``repr(value)``, a long string cut to its start: an error names a pasted
    100 kB value by its first characters, not by all of them."""
    if isinstance(value, str) and len(value) > _SHOWN:
        return f"{value[:_SHOWN]!r}..."
    return repr(value)


_SHOWN = 40


class InvalidQueueName(GuildError, ValueError):
    """A queue name no broker should store: empty, too long, padded with
    whitespace, or holding control characters (they break log lines, key names
    and tables).

    Attributes:
        name: the name as given.
        reason: what is wrong with it.
    """

    def __init__(self, name: object, reason: str) -> None:
        super().__init__(f"queue name {shown(name)}: {reason}")
        self.name = name
        self.reason = reason


class InvalidField(GuildError, ValueError):
    """A job's idempotency key, id or trace id (or a schedule's name) no broker
    should store: not a string, empty, too long, or holding control characters.

    Attributes:
        field: what the value is (``"key"``, ``"trace_id"``, ...).
        value: the value as given.
        reason: what is wrong with it.
    """

    def __init__(self, field: str, value: object, reason: str) -> None:
        super().__init__(f"{field} {shown(value)}: {reason}")
        self.field = field
        self.value = value
        self.reason = reason


class InvalidHandler(GuildError, TypeError):
    """A worker's handler that could never run a job (a plain ``def``, or one that
    cannot take the job as its one argument), refused when it is registered.

    Attributes:
        handler: the handler's name.
    """

    def __init__(self, handler: str, message: str) -> None:
        super().__init__(message)
        self.handler = handler


class InvalidWorkflow(GuildError, ValueError):
    """A workflow that cannot run, refused before anything of it is stored.

    Attributes:
        rule: which check refused it: ``empty``, ``workflow-id``, ``step-name``,
            ``duplicate-step``, ``unknown-dependency``, ``cycle``,
            ``unknown-compensation``, ``duplicate-compensation``, ``payload``,
            ``unknown-queue``, ``duplicate-id``, ``name`` or ``queue-name``.
        step: the step it is about (``None`` when about the whole workflow).
        reason: a human sentence.
    """

    def __init__(self, rule: str, step: str | None, reason: str) -> None:
        where = f"step {shown(step)}: " if step is not None else ""
        super().__init__(f"invalid workflow ({rule}): {where}{reason}")
        self.rule = rule
        self.step = step
        self.reason = reason


class NotAWorkflowStep(GuildError, ValueError):
    """A job that is not a workflow's step or compensation was read as one.

    Attributes:
        job_id: the job.
        reason: what its payload lacks.
    """

    def __init__(self, job_id: str, reason: str) -> None:
        super().__init__(f"job {job_id} is not a workflow step: {reason}")
        self.job_id = job_id
        self.reason = reason


class UnknownWorkflow(GuildError, LookupError):
    """No workflow with that id is stored in the broker (never submitted, or purged).

    Attributes:
        workflow_id: the id asked for.
    """

    def __init__(self, workflow_id: str) -> None:
        super().__init__(f"no workflow with id {workflow_id!r}")
        self.workflow_id = workflow_id


# --- sandbox -----------------------------------------------------------------------


class SandboxError(GuildError):
    """The sandbox could not run a command."""


class CommandRefused(SandboxError, PermissionError):
    """The sandbox policy refused a command before any process started.

    Attributes:
        rule: the name of the rule that refused it (e.g. ``"inline-code"``).
        argv: the argv as asked.
        detail: a human sentence.
    """

    def __init__(self, rule: str, argv: tuple[str, ...], detail: str) -> None:
        super().__init__(f"refused by rule {rule!r}: {detail}")
        self.rule = rule
        self.argv = argv
        self.detail = detail


class IsolationUnavailable(SandboxError):
    """The policy asks for isolation (``isolate="auto"``, the default) and none works here.

    Attributes:
        missing: one sentence per isolation mode, saying what it lacks.
    """

    def __init__(self, missing: tuple[str, ...]) -> None:
        super().__init__(
            "no sandbox isolation works on this host ("
            + "; ".join(missing)
            + "); install bubblewrap, allow user namespaces, or set isolate='never'"
            " to run commands unisolated"
        )
        self.missing = missing


class SandboxTimeout(SandboxError, TimeoutError):
    """A sandboxed command ran past its timeout; its process group was killed.

    Attributes:
        timeout: the limit, in seconds.
        stdout: output captured before the kill.
        stderr: error output captured before the kill.
    """

    def __init__(self, argv: tuple[str, ...], timeout: float, stdout: bytes, stderr: bytes) -> None:
        super().__init__(f"command {argv[0]!r} timed out after {timeout:g}s")
        self.argv = argv
        self.timeout = timeout
        self.stdout = stdout
        self.stderr = stderr


class RateLimitError(GuildError, RuntimeError):
    """A rate limiter was misused (released a token it does not hold, or re-acquired)."""


# --- requests (control flow, not failures) -------------------------------------------


class Retry(_Portable):
    """Raise from a handler to ask for the job to run again.

    The attempt still counts toward ``max_attempts``.

    Args:
        after: seconds to wait before the next attempt; ``None`` uses the worker's
            retry schedule.
    """

    def __init__(self, after: float | None = None) -> None:
        super().__init__(f"retry requested (after={after})")
        self.after = after


class Reject(_Portable):
    """Raise from a handler to dead-letter the job at once, whatever attempts remain.

    For input that can never succeed (a refused command, a malformed request):
    retrying it would only waste attempts.

    Args:
        reason: why the job is rejected; it becomes the dead letter's error.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Reprs, tracebacks and pickles name guild.X (see guild._exports).
publish(globals())
