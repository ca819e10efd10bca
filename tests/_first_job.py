"""Which modules a real ``guild run`` has loaded by the time its first job runs.

The probe app's one handler writes ``sorted(sys.modules)`` to a file: what a
worker process imports before its first job is what every start-up pays.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_PROBE_APP = """
import json, sys
import guild

app = guild.Guild("lean")

@app.worker("q")
async def handle(job: guild.Job) -> int:
    with open({report!r}, "w") as out:
        json.dump(sorted(sys.modules), out)
    return job.payload * 2
"""


def probe_env(folder: Path) -> dict[str, str]:
    """The environment of a process that imports the probe app from ``folder``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(ROOT)])}
    env.pop("GUILD_BROKER", None)
    return env


@contextmanager
def probe_run(folder: Path, url: str) -> Iterator[Callable[[], set[str]]]:
    """Run ``guild run lean_app:app`` on ``url`` for the block; the callable it
    yields waits (60 s at most) for the first job of queue ``q`` and returns the
    modules loaded then. The worker is stopped with SIGTERM when the block ends,
    and must have ended cleanly."""
    report = folder / "loaded.json"
    (folder / "lean_app.py").write_text(textwrap.dedent(_PROBE_APP.format(report=str(report))))
    command = ["run", "lean_app:app", "--broker", url, "--log-level", "warning"]
    worker = subprocess.Popen(
        [sys.executable, "-m", "guild", *command],
        cwd=folder,
        env=probe_env(folder),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def loaded() -> set[str]:
        deadline = time.monotonic() + 60
        while not report.exists() or not report.read_text().endswith("]"):
            assert worker.poll() is None, worker.communicate()[1].decode()
            assert time.monotonic() < deadline, "the job did not run within 60 s"
            time.sleep(0.05)
        return set(json.loads(report.read_text()))

    try:
        yield loaded
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err.decode()
