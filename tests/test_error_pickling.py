"""Every public exception survives pickle: a job's error crosses processes (the
sandbox's fork server, ``guild run --processes N``, a handler's own process pool),
and one that cannot be rebuilt there turns into an unrelated TypeError."""

from __future__ import annotations

import copy
import inspect
import pickle
from typing import Any

import pytest

import guild
from guild._exports import EXPORTS
from guild.sandbox._process import _UidInUse
from guild.sandbox._spawn import ServerUnavailable

# Each exception, built with values written out, and the message and attributes
# it must have after the round trip (written out, not read from the original).
CASES: list[tuple[BaseException, str, dict[str, Any]]] = [
    (guild.GuildError("plain"), "plain", {}),
    (guild.BrokerError("broker fault"), "broker fault", {}),
    (guild.BrokerClosed("closed"), "closed", {}),
    (guild.BrokerUnavailable("down"), "down", {}),
    (guild.BrokerDataError("the key k holds a string"), "the key k holds a string", {}),
    (
        guild.BrokerFileReplaced("/tmp/g.db", "deleted"),
        "sqlite /tmp/g.db: the database file was deleted while the broker had it open;"
        " refusing to go on with a file nobody else sees (restart to open the one"
        " now at the path)",
        {"path": "/tmp/g.db"},
    ),
    (
        guild.SchemaMismatch("g.db", 3, 5, "guild migrate --broker sqlite:g.db"),
        "g.db has schema version 3, older than version 5, which this guild needs:"
        " run `guild migrate --broker sqlite:g.db`",
        {
            "where": "g.db",
            "found": 3,
            "supported": 5,
            "command": "guild migrate --broker sqlite:g.db",
        },
    ),
    (guild.MigrationFailed("restored"), "restored", {}),
    (
        guild.UnknownBrokerURL("ftp://x", "no broker for ftp"),
        "broker URL 'ftp://x': no broker for ftp",
        {"url": "ftp://x", "reason": "no broker for ftp"},
    ),
    (guild.JobError("job fault"), "job fault", {}),
    (
        guild.PayloadDecodeError("j1", b"{oops", "Expecting value"),
        "job j1: payload is not valid JSON (Expecting value): b'{oops'",
        {"job_id": "j1", "raw": b"{oops", "reason": "Expecting value"},
    ),
    (
        guild.PayloadEncodeError("payloads[2]['at']", "is a datetime", 2),
        "payloads[2]['at'] is a datetime",
        {"path": "payloads[2]['at']", "problem": "is a datetime", "index": 2},
    ),
    (
        guild.ResultEncodeError("result[0]", "is a set"),
        "result[0] is a set",
        {"path": "result[0]", "problem": "is a set"},
    ),
    (
        guild.JobTimeout("j2", 1.5),
        "job j2 timed out after 1.5s",
        {"job_id": "j2", "timeout": 1.5},
    ),
    (guild.UnknownJob("j3"), "no job with id 'j3'", {"job_id": "j3"}),
    (guild.DependencyFailure("db down"), "db down", {}),
    (guild.SupervisorError("sup"), "sup", {}),
    (
        guild.GaveUp("app", 6, 30.0, "ValueError: x"),
        "supervisor 'app' gave up: 6 restarts within 30s (last error: ValueError: x)",
        {"supervisor": "app", "restarts": 6, "period": 30.0, "last_error": "ValueError: x"},
    ),
    (
        guild.WorkerEnded("emails"),
        "worker 'emails' stopped without being drained",
        {"worker": "emails"},
    ),
    (
        guild.ConfigError("guild.toml", "workers.a.concurrency", "an integer", "x"),
        "guild.toml: workers.a.concurrency: expected an integer, got 'x'",
        {"path": "guild.toml", "key": "workers.a.concurrency", "expected": "an integer"},
    ),
    (
        guild.InvalidQueueName(" q", "padded with whitespace"),
        "queue name ' q': padded with whitespace",
        {"name": " q", "reason": "padded with whitespace"},
    ),
    (
        guild.InvalidField("key", "k" * 50, "must be at most 1,024 characters"),
        "key '" + "k" * 40 + "'...: must be at most 1,024 characters",
        {"field": "key", "value": "k" * 50, "reason": "must be at most 1,024 characters"},
    ),
    (
        guild.InvalidHandler("h", "h is not async"),
        "h is not async",
        {"handler": "h"},
    ),
    (
        guild.InvalidWorkflow("cycle", "b", "b depends on itself"),
        "invalid workflow (cycle): step 'b': b depends on itself",
        {"rule": "cycle", "step": "b", "reason": "b depends on itself"},
    ),
    (
        guild.NotAWorkflowStep("j4", "no workflow id"),
        "job j4 is not a workflow step: no workflow id",
        {"job_id": "j4", "reason": "no workflow id"},
    ),
    (guild.UnknownWorkflow("w1"), "no workflow with id 'w1'", {"workflow_id": "w1"}),
    (guild.SandboxError("sandbox fault"), "sandbox fault", {}),
    (
        guild.CommandRefused("inline-code", ("python", "-c", "1"), "inline code"),
        "refused by rule 'inline-code': inline code",
        {"rule": "inline-code", "argv": ("python", "-c", "1"), "detail": "inline code"},
    ),
    (
        guild.IsolationUnavailable(("bwrap: missing", "userns: off")),
        "no sandbox isolation works on this host (bwrap: missing; userns: off);"
        " install bubblewrap, allow user namespaces, or set isolate='never'"
        " to run commands unisolated",
        {"missing": ("bwrap: missing", "userns: off")},
    ),
    (
        guild.SandboxTimeout(("sleep", "9"), 2.0, b"out", b"err"),
        "command 'sleep' timed out after 2s",
        {"argv": ("sleep", "9"), "timeout": 2.0, "stdout": b"out", "stderr": b"err"},
    ),
    (guild.RateLimitError("over-release"), "over-release", {}),
    (guild.Retry(after=4.0), "retry requested (after=4.0)", {"after": 4.0}),
    (guild.Retry(), "retry requested (after=None)", {"after": None}),
    (guild.Reject("bad input"), "bad input", {"reason": "bad input"}),
    (
        guild.InvalidProgress(1.5, "outside [0, 1]"),
        "progress 1.5: outside [0, 1]",
        {"value": 1.5, "reason": "outside [0, 1]"},
    ),
    (guild.NotRunning("not running"), "not running", {}),
    (guild.ScheduleError("bad cron"), "bad cron", {}),
    (guild.ClaimerStalled("stalled"), "stalled", {}),
    (
        guild.CanaryTransitionError("promoted", "pause", "it is over"),
        "cannot pause a canary rollout that is promoted: it is over",
        {"phase": "promoted", "event": "pause"},
    ),
    (_UidInUse(61000), "uid 61000 has a process running as it", {"uid": 61000}),
    (ServerUnavailable("no spare"), "no spare", {}),
]
# Notes (what supervisors and workers add to say where an error happened) travel too.
NOTE = "while serving queue 'emails'"
for case in CASES:
    case[0].add_note(NOTE)


@pytest.mark.parametrize(
    ("error", "message", "attributes"), CASES, ids=[type(c[0]).__name__ for c in CASES]
)
@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_round_trips_through_pickle(
    error: BaseException, message: str, attributes: dict[str, Any], protocol: int
) -> None:
    back = pickle.loads(pickle.dumps(error, protocol=protocol))
    assert type(back) is type(error)
    assert str(back) == message
    for name, value in attributes.items():
        assert getattr(back, name) == value, name
    assert back.__notes__ == [NOTE]


@pytest.mark.parametrize(
    ("error", "message", "attributes"),
    [CASES[4], CASES[12]],
    ids=["BrokerFileReplaced", "JobTimeout"],
)
def test_copies(error: BaseException, message: str, attributes: dict[str, Any]) -> None:
    # copy uses the same reduction as pickle.
    back = copy.deepcopy(error)
    assert str(back) == message
    for name, value in attributes.items():
        assert getattr(back, name) == value


def test_every_public_exception_is_covered() -> None:
    # A new exported exception without a case here would escape the check.
    exported = {
        name
        for name in EXPORTS
        if inspect.isclass(getattr(guild, name)) and issubclass(getattr(guild, name), BaseException)
    }
    covered = {type(error).__name__ for error, _, _ in CASES}
    assert exported - covered == set()
