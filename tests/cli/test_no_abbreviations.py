"""Options are taken by their whole name only: an abbreviation is an unknown
option, exit 2, naming it.

Before, argparse took ``guild run app --proc 2`` as ``--processes 2`` (its
``allow_abbrev`` defaults to true), so adding an option later would change what
an old command line meant, or make it ambiguous. One abbreviation for every
command and action goes through a real ``python -m guild``, with its outcome
written out; every option of every parser is then checked on the parser itself.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest

from guild.cli import parser
from guild.cli._args import UsageError
from tests.cli._careless import guild, one_error_line

ID = "01EJ3PX03VD2DW017341T7HN0H"

# (the command or action, a command line abbreviating one of its options, the
# words argparse leaves over: the abbreviation and the value after it, if any)
LINES = [
    ("(root)", ["--vers", "stats"], "--vers"),
    ("run", ["run", "tests.cli.apps:quick", "--proc", "2"], "--proc 2"),
    ("run", ["run", "tests.cli.apps:quick", "--conc", "4"], "--conc 4"),
    ("enqueue", ["enqueue", "q", "1", "--max-att", "3"], "--max-att 3"),
    ("result", ["result", ID, "--wai", "5"], "--wai 5"),
    ("job", ["job", "--js", "show", ID], "--js"),
    ("job show", ["job", "show", ID, "--js"], "--js"),
    ("job cancel", ["job", "cancel", ID, "--he"], "--he"),
    ("stats", ["stats", "--cou"], "--cou"),
    ("dlq", ["dlq", "--js", "list"], "--js"),
    ("dlq list", ["dlq", "list", "--lim", "5"], "--lim 5"),
    ("dlq show", ["dlq", "show", ID, "--he"], "--he"),
    ("dlq requeue", ["dlq", "requeue", "--al"], "--al"),
    ("purge", ["purge", "q", "--ye"], "--ye"),
    ("workflow", ["workflow", "--js", "list"], "--js"),
    ("workflow show", ["workflow", "show", "wf", "--he"], "--he"),
    ("workflow list", ["workflow", "list", "--lim", "5"], "--lim 5"),
    ("workflow cancel", ["workflow", "cancel", "wf", "--rea", "x"], "--rea x"),
    ("workflow purge", ["workflow", "purge", "--older", "60"], "--older 60"),
    ("status", ["status", "--time", "1"], "--time 1"),
    ("top", ["top", "--on"], "--on"),
    ("config", ["config", "--he", "show", "guild.toml"], "--he"),
    ("config show", ["config", "show", "guild.toml", "--proc", "2"], "--proc 2"),
    ("migrate", ["migrate", "--dry"], "--dry"),
    ("canary", ["canary", "--js", "status", "q"], "--js"),
    ("canary status", ["canary", "status", "q", "--he"], "--he"),
    ("canary start", ["canary", "start", "q", "--min", "5"], "--min 5"),
    ("canary promote", ["canary", "promote", "q", "--he"], "--he"),
    ("canary pause", ["canary", "pause", "q", "--he"], "--he"),
    ("canary rollback", ["canary", "rollback", "q", "--he"], "--he"),
]


def _parsers() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every parser ``guild`` builds: the root, each command's, each action's."""
    found = [("(root)", parser())]
    while found:
        name, here = found.pop(0)
        yield name, here
        for action in here._actions:
            if isinstance(action, argparse._SubParsersAction):
                for word, sub in action.choices.items():
                    found.append((word if name == "(root)" else f"{name} {word}", sub))


def test_the_lines_cover_every_command_and_action() -> None:
    assert sorted({name for name, _ in _parsers()}) == sorted({name for name, _, _ in LINES})


@pytest.mark.slow
@pytest.mark.parametrize(
    ("argv", "left"),
    [(argv, left) for _, argv, left in LINES],
    ids=[" ".join(a) for _, a, _ in LINES],
)
def test_an_abbreviated_option_is_refused_naming_it(
    tmp_path: Path, argv: list[str], left: str
) -> None:
    done = guild(tmp_path, tmp_path, *argv)
    assert one_error_line(done) == (
        f"guild: error: unrecognized arguments: {left} (see: guild --help)"
    )
    assert (done.returncode, done.stdout) == (2, b"")
    assert list(tmp_path.iterdir()) == [], "a refused command created a file"


def _placeholders(name: str, here: argparse.ArgumentParser) -> list[str]:
    """A command line reaching ``here``: its words, one value per positional."""
    words = [] if name == "(root)" else name.split()
    positionals = [
        a
        for a in here._actions
        if not a.option_strings and not isinstance(a, argparse._SubParsersAction)
    ]
    return words + ["x"] * len(positionals)


def test_every_option_of_every_parser_is_taken_whole_only() -> None:
    """Each long option less its last letter (when that is no option of its own)
    is an unrecognized argument, on every parser; the root and the commands with
    actions are reached through their first action."""
    checked = 0
    for name, here in _parsers():
        if name in ("(root)", "job", "dlq", "workflow", "config", "canary"):
            continue  # their options are checked in the lines above, through a process
        line = _placeholders(name, here)
        options = {o for a in here._actions for o in a.option_strings}
        for option in sorted(o for o in options if o.startswith("--")):
            short = option[:-1]
            if short in options or len(short) < 3:
                continue
            with pytest.raises(UsageError) as refused:
                parser().parse_args([*line, short])
            expected = f"unrecognized arguments: {short} (see: guild --help)"
            assert str(refused.value) == expected, (name, option)
            checked += 1
    assert checked >= 80
