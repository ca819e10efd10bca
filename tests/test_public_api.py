"""The public API is what guild/__init__.py says it is, and guild_workers keeps to it."""

from __future__ import annotations

import ast
from pathlib import Path

import guild

ROOT = Path(__file__).resolve().parent.parent


class TestExports:
    """__all__ lists exactly the public names, each reporting guild as its module."""

    def test_all_matches_public_names(self) -> None:
        public = {
            name
            # dir(), not vars(): some names load on first use (PEP 562).
            for name in dir(guild)
            if not name.startswith("_")
            and name not in {"annotations"}
            and not isinstance(getattr(guild, name), type(guild))
        }
        assert set(guild.__all__) == public | {"__version__"}
        assert len(guild.__all__) == len(set(guild.__all__))

    def test_classes_report_the_public_module(self) -> None:
        assert guild.Job.__module__ == "guild"
        assert guild.Guild.__module__ == "guild"
        assert repr(guild.Job(queue="q", id="X")).startswith("Job(")


class TestWorkersUsePublicApi:
    """guild_workers imports nothing from guild's private modules."""

    def test_no_private_imports(self) -> None:
        offenders = []
        for path in (ROOT / "guild_workers").rglob("*.py"):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                names: list[str] = []
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                elif isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                for name in names:
                    parts = name.split(".")
                    if parts[0] == "guild" and any(p.startswith("_") for p in parts[1:]):
                        offenders.append(f"{path.name}: {name}")
        assert offenders == []
