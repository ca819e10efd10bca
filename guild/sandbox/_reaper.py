"""Finding and killing every process a run left behind, however it tried to hide.

The worker makes itself a *child subreaper*: a process whose parent dies is
re-parented to the worker instead of to init. So whatever a run leaves behind —
a grandchild that ignored SIGTERM, a double-forked daemon that called
``setsid`` to leave the process group — ends up, once its own parents are
gone, as a child of the worker. After killing the run's process group, the
worker looks only at its own children (``/proc/self/task/*/children``, a few
entries, not the whole process table), kills those that belong to the run (they
carry the run's token in their environment, or run as the run's own uid) and
reaps the dead ones, until the group is empty and no such child is left.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterable

import attrs

TOKEN_VARIABLE = "GUILD_SANDBOX_RUN"
_PR_SET_CHILD_SUBREAPER = 36
_subreaper_set = False


def become_subreaper() -> bool:
    """Make this process the reaper of orphaned descendants (Linux); once per process."""
    global _subreaper_set
    if not _subreaper_set:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            _subreaper_set = libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
        except (OSError, AttributeError):
            _subreaper_set = False
    return _subreaper_set


@attrs.frozen
class Child:
    pid: int
    zombie: bool
    session: int
    uid: int


def _child(pid: int) -> Child | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
        uid = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()
    return Child(pid=pid, zombie=fields[0] == b"Z", session=int(fields[3]), uid=uid)


def children(exclude: set[int]) -> list[Child]:
    """This process's children outside its own session, except ``exclude``.

    The worker's own session holds the children the application (and Trio)
    started and will wait for; every sandbox run lives in sessions of its own.
    """
    pids: set[int] = set()
    for task in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError), open(f"/proc/self/task/{task}/children") as handle:
            pids.update(int(p) for p in handle.read().split())
    my_session = os.getsid(0)
    found = []
    for pid in pids - exclude:
        child = _child(pid)
        if child is not None and child.session != my_session:
            found.append(child)
    return found


def belongs(child: Child, token: str, uid: int | None) -> bool:
    """Whether a live child is the run's: its uid, or the token in its environment."""
    if uid is not None and child.uid == uid:
        return True
    needle = f"{TOKEN_VARIABLE}={token}".encode()
    try:
        with open(f"/proc/{child.pid}/environ", "rb") as handle:
            return needle in handle.read().split(b"\0")
    except OSError:
        return False


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def kill_all(pids: Iterable[int], sig: int = 9) -> None:
    for pid in pids:
        if pid > 1 and pid != os.getpid():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)


def reap(pids: Iterable[int]) -> None:
    """Collect exit statuses of dead orphans (no zombies left behind)."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
