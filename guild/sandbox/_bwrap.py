"""Pure: the bubblewrap argv that isolates one run.

What it builds: new user, pid, net, ipc, uts and cgroup namespaces (no network,
no view of other processes), a read-only view of the system directories that
exist, a private /proc and /dev, scratch /tmp and /dev/shm of the run's size,
and the job directory as the only writable place besides them, which is also
the working directory. bwrap's own tmpfs (the new root, where it makes the
mount points, and ``/dev``) are made read-only once everything is mounted: left
writable, they were a job's to fill, with no size and no inode limit. The
scratch is either a root worker's directory (``_scratch``: a tmpfs of
``tmpfs_size`` bytes and ``tmpfs_inodes`` inodes holding ``tmp`` and ``shm``,
and a devpts of at most ``_namespaces.PTYS`` pseudo-terminals in ``pts``), bound
over bwrap's, or, without root, bwrap's own tmpfs of ``--size`` bytes on /tmp
and /dev/shm (bwrap sets no inode limit, and its devpts no pty cap).
``--die-with-parent`` and the pid namespace mean that when bwrap goes,
everything inside goes with it. With ``filtered``, ``--seccomp FD`` has bwrap
install kernel mode's system-call filter (``_namespaces.FILTER_PROGRAM``, read
from a descriptor the spawn passes) just before it ``exec``s the command (and
in its PID 1, which then only waits for it), so the job's own calls are
filtered and none of bwrap's set-up.
"""

from __future__ import annotations

from collections.abc import Iterable

READ_ONLY = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
# bwrap refuses a command line of more arguments than this, its own included
# ("Exceeded maximum number of arguments"), and the run's command is on it.
MAX_ARGS = 9000
# Where a filtered prefix names the descriptor bwrap reads the filter from: the
# spawn puts the number the descriptor has in the child there. Left as it is
# ("-1"), bwrap refuses it and nothing runs unfiltered.
FILTER_ARG = 2
# The option a sized tmpfs of bwrap's own needs (bubblewrap 0.7.0 and later).
SIZE_OPTION = "--size"


def bwrap_argv(
    bwrap: str,
    workdir: str,
    present: Iterable[str],
    filtered: bool = False,
    *,
    scratch: str = "",
    size: int = 0,
) -> list[str]:
    """The bwrap prefix for a run in ``workdir``; ``present`` lists which of
    :data:`READ_ONLY` exist on this machine (the caller looks); ``filtered``:
    with ``--seccomp`` (its descriptor at :data:`FILTER_ARG`).

    ``scratch``: a host directory holding ``tmp``, ``shm`` and ``pts``, bound on
    ``/tmp``, ``/dev/shm`` and ``/dev/pts``; else ``size``: the bytes of bwrap's
    own tmpfs on ``/tmp`` and on ``/dev/shm``.

    Raises:
        ValueError: neither a scratch directory nor a positive size is given.
    """
    if not scratch and size <= 0:
        raise ValueError(f"bwrap_argv needs a scratch directory or a tmpfs size, got {size!r}")
    argv = [bwrap, *(["--seccomp", "-1"] if filtered else [])]
    argv += ["--unshare-all", "--die-with-parent", "--new-session"]
    for path in present:
        argv += ["--ro-bind", path, path]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    if scratch:
        argv += ["--bind", f"{scratch}/tmp", "/tmp", "--bind", f"{scratch}/shm", "/dev/shm"]
        # Over bwrap's own devpts (mounted without max=): /dev/ptmx is its
        # pts/ptmx, so every pty the run opens is one of this instance's.
        argv += ["--dev-bind", f"{scratch}/pts", "/dev/pts"]
    else:
        for place in ("/tmp", "/dev/shm"):
            argv += ["--perms", "1777", SIZE_OPTION, str(size), "--tmpfs", place]
    argv += ["--bind", workdir, workdir]
    # Last, once every mount point is made: not recursive, so what is mounted
    # below (/dev/shm, the job directory) stays as it is.
    argv += ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", workdir]
    return argv


def room(present: Iterable[str], filtered: bool = False, scratch: bool = True) -> int:
    """How many arguments the run's command may have under bwrap (:data:`MAX_ARGS`
    less the prefix :func:`bwrap_argv` puts before it, and bwrap's own name);
    ``scratch``: the runs bind a scratch directory, else they size bwrap's tmpfs."""
    if scratch:
        prefix = bwrap_argv("bwrap", "/", present, filtered, scratch="/s")
    else:
        prefix = bwrap_argv("bwrap", "/", present, filtered, size=1)
    return MAX_ARGS - len(prefix)
