"""Host-wide uid leases: no two runs on one host hold the same uid at the same time.

A run's uid is leased by an exclusive ``flock`` on ``LOCK_DIR/<uid>`` (a
root-owned 0700 directory), which every worker process and every ``Sandbox``
object on the host takes the same way; the kernel drops the lock if the holder
dies, so a crashed worker leaks nothing. A uid whose lock is free is still
refused while any process runs as it (a straggler of a crashed worker, or a
user of that uid outside guild): either the process table is scanned once per
lease, or — when the run starts through a fork-server spare — the spare shows
it before exec (``setuid`` under a soft ``RLIMIT_NPROC`` of 0 marks the process
when another one runs as the uid: ``_forkserver.apply_in_child``), and the run
retries with the next uid when one is in use. The scan costs a ``stat`` per
process on the host, on the worker's event loop (over 100 ms with 15,000
processes); the mark costs one read of /proc/self/stat whatever the host runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat

import attrs

from .._errors import SandboxError

LOCK_DIR = "/run/guild/uids"


@attrs.define
class Lease:
    """A uid held by one run until :meth:`release`."""

    uid: int
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the only descriptor drops the flock
            self.fd = -1


def _lock_dir(path: str) -> int:
    """The lock directory, made root-owned 0700 if missing; refused if anyone else could write it."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        # Made once: each lease after the first opens it straight away (a makedirs
        # is three more calls per run, on the way to its start).
        os.makedirs(path, mode=0o700, exist_ok=True)
        fd = os.open(path, flags)
    info = os.fstat(fd)
    if info.st_uid != 0 or stat.S_IMODE(info.st_mode) & 0o022:
        os.close(fd)
        raise SandboxError(
            f"uid lock directory {path} must be owned by root and not writable by others"
        )
    return fd


def running_uids() -> set[int]:
    """The owners of every process on the host (one pass over /proc)."""
    found: set[int] = set()
    with os.scandir("/proc") as entries:
        for entry in entries:
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    found.add(entry.stat(follow_symlinks=False).st_uid)
    return found


_next = 0


def acquire(pool: tuple[int, int], lock_dir: str = LOCK_DIR, scan: bool = True) -> Lease:
    """Lease a uid of ``pool`` (inclusive) that no other run holds and no process uses.

    ``scan=False``: leave out the scan of /proc (one ``stat`` per process on the
    host), for a caller that shows the uid unused itself before any process of
    the run starts (a fork-server spare does: ``_forkserver.apply_in_child``).

    Raises:
        SandboxError: every uid of the pool is leased or in use.
    """
    global _next
    low, high = pool
    size = high - low + 1
    directory = _lock_dir(lock_dir)
    try:
        busy = running_uids() if scan else set()
        # Start after the last uid this process leased, so a uid just released
        # (whose last processes the kernel may still be tearing down) rests.
        for step in range(size):
            uid = low + (_next + step) % size
            if uid in busy:
                continue
            fd = os.open(
                str(uid),
                os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                0o600,
                dir_fd=directory,
            )
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            _next = (uid - low + 1) % size
            return Lease(uid, fd)
    finally:
        os.close(directory)
    raise SandboxError(f"all {size} sandbox uids of the pool {low}-{high} are leased or in use")
