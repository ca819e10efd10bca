"""``guild enqueue --priority``: the level is stored, and a bad one is one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import trio

import guild
from guild.brokers.sqlite import SqliteBroker

from .conftest import run_guild


async def _claimed(path: Path) -> list[tuple[object, guild.Priority]]:
    broker = await SqliteBroker.open(path)
    try:
        got = await broker.claim("q", consumer="c", limit=100, lease=60)
        return [(d.job.payload, d.job.priority) for d in got]
    finally:
        await broker.aclose()


def test_priority_levels_by_name_and_number(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/guild.db"
    for payload, extra in [
        ("1", []),
        ("2", ["--priority", "low"]),
        ("3", ["--priority", "HIGH"]),
        ("4", ["--priority", "-1"]),
        ("5", ["--priority", "1"]),
    ]:
        done = run_guild("enqueue", "q", payload, "--broker", url, *extra)
        assert done.returncode == 0, done.stderr
    many = run_guild(
        "enqueue", "q", "-", "--broker", url, "--priority", "high", "--json", input="6\n7\n"
    )
    assert many.returncode == 0, many.stderr
    assert len(json.loads(many.stdout)) == 2
    high, normal, low = guild.Priority.HIGH, guild.Priority.NORMAL, guild.Priority.LOW
    assert trio.run(_claimed, tmp_path / "guild.db") == [
        (3, high),
        (5, high),
        (6, high),
        (7, high),
        (1, normal),
        (2, low),
        (4, low),
    ]


def test_bad_priority_is_one_clear_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/guild.db"
    for bad in ["urgent", "2", "1.5", ""]:
        done = run_guild("enqueue", "q", "1", "--broker", url, "--priority", bad)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("guild: error: ") and "--priority" in lines[0]
        assert "high, normal, low" in lines[0], lines[0]
    assert not (tmp_path / "guild.db").exists() or trio.run(_claimed, tmp_path / "guild.db") == []
