"""What a process supervisor does so that its children's metrics add up.

``guild run --processes N`` (and any supervisor of guild processes) calls
:func:`prepare_multiprocess` once before starting children and passes the
returned environment to each, then :func:`process_exited` for each child that
ends. The children need nothing else: with ``PROMETHEUS_MULTIPROC_DIR`` set
before they import prometheus_client, their metrics live in that directory,
and whoever renders it (``guild run``'s parent, see :mod:`._fleet_http`; or
any process's :func:`serve_http`) answers with the sum over all of them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess(directory: str | os.PathLike[str]) -> dict[str, str]:
    """Empty (or create) ``directory`` and return the environment children need.

    The directory must be emptied at each start: files left by an earlier run
    would be added to this run's counters.
    """
    path = Path(directory)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return {ENV: str(path)}


def process_exited(pid: int, directory: str | os.PathLike[str]) -> None:
    """Forget a child's live gauges (jobs running, worker states); its counters stay."""
    # Here, not at the top: the parent of `guild run --processes N` prepares the
    # directory before it spawns, and its children should not wait on this import.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]
