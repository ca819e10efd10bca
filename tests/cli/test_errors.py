"""How ``guild.cli`` turns what ended a command into its one line and exit code."""

from __future__ import annotations

import pytest

import guild
from guild.cli import classify
from guild.cli._args import UsageError, wants_json
from guild.cli._dlq import NoSuchDeadJob


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (UsageError("argument --delay: bad"), (2, "argument --delay: bad", "UsageError")),
        (guild.BrokerUnavailable("redis: down"), (2, "redis: down", "BrokerUnavailable")),
        (
            ExceptionGroup("nursery", [ExceptionGroup("inner", [guild.BrokerUnavailable("down")])]),
            (2, "down", "BrokerUnavailable"),
        ),
        (
            ExceptionGroup("nursery", [guild.GaveUp("app", 3, 60.0, "boom")]),
            (1, "supervisor 'app' gave up: 3 restarts within 60s (last error: boom)", "GaveUp"),
        ),
        (NoSuchDeadJob("J1"), (1, "no dead job with id J1", "NoSuchDeadJob")),
        (
            guild.ConfigError("guild.toml", "guild.app", "a string", "line one\nline two"),
            (
                2,
                "guild.toml: guild.app: expected a string, got 'line one\\nline two'",
                "ConfigError",
            ),
        ),
        (guild.BrokerError("first\n  second"), (2, "first second", "BrokerError")),
        (
            ExceptionGroup("two", [guild.BrokerError("same"), guild.BrokerError("same")]),
            (2, "same", "BrokerError"),
        ),
    ],
)
def test_guild_errors(error: BaseException, expected: tuple[int, str, str]) -> None:
    assert classify(error) == expected


def test_anything_else_is_a_fault_exit_1() -> None:
    code, message, name = classify(ExceptionGroup("g", [guild.BrokerError("x"), KeyError("k")]))
    assert (code, name) == (1, "KeyError")
    assert message == "unexpected KeyError: 'k' (GUILD_DEBUG=1 shows the traceback)"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["stats", "--json"], True),
        (["stats"], False),
        (["enqueue", "q", "--", "--json"], False),  # after --, "--json" is a value
    ],
)
def test_wants_json(argv: list[str], expected: bool) -> None:
    assert wants_json(argv) is expected
