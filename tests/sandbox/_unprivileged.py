"""Running guild as uid 65534 (nobody): what the unprivileged-worker tests share."""

from __future__ import annotations

import subprocess
import sys

NOBODY = 65534
SETPRIV = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


def unprivileged_python(env: dict[str, str]) -> str | None:
    """An interpreter uid 65534 may run that finds guild and its dependencies
    (through ``env``'s PYTHONPATH), or ``None``."""
    system = f"/usr/bin/python3.{sys.version_info[1]}"
    for candidate in dict.fromkeys((system, "/usr/bin/python3", sys.executable)):
        # The sandbox starts helpers with sys.executable: that must work too.
        check = "import subprocess, sys, trio, attrs, structlog, guild\n"
        check += "subprocess.run([sys.executable, '-c', ''], check=True)"
        probe = subprocess.run(
            [*SETPRIV, candidate, "-c", check],
            env=env,
            capture_output=True,
            check=False,
            cwd="/",
        )
        if probe.returncode == 0:
            return candidate
    return None
