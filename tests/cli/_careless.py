"""The careless-input tests' way to run the real CLI and read its one error line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def guild(
    cwd: Path, files: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """``python -m guild ARGS`` in ``cwd`` with this checkout and ``files`` (the
    test's apps and configs) importable, and none of this process's ``GUILD_*``
    settings or Prometheus directory but those ``env`` gives."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GUILD_")}
    full_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    full_env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(files)])
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "guild", *args],
        capture_output=True,
        cwd=cwd,
        env=full_env,
        timeout=60,
        check=False,
    )


def one_error_line(done: subprocess.CompletedProcess[bytes]) -> str:
    """The one line a refusal prints: ``guild: error: …``, no traceback."""
    stderr = done.stderr.decode("utf-8", "replace")
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("guild: error: "), stderr
    return lines[0]
