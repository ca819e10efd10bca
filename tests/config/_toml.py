"""Writing the guild.toml a config test loads."""

from __future__ import annotations

from pathlib import Path

# The least a guild.toml holds; a test adds the keys it is about below it.
APP = """
[guild]
app = "mypkg.jobs:app"
"""


def write_toml(tmp_path: Path, text: str, name: str = "guild.toml") -> Path:
    """``text`` written as ``tmp_path / name``; its path."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def write_app_toml(tmp_path: Path, text: str) -> Path:
    """A guild.toml of :data:`APP` then ``text``; its path."""
    return write_toml(tmp_path, APP + text)
