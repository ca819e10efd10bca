"""Pure: the bubblewrap argv that isolates one run.

What it builds: new user, pid, net, ipc, uts and cgroup namespaces (no network,
no view of other processes), a read-only view of the system directories that
exist, a private /proc, /dev and /tmp, and the job directory as the only
writable place, which is also the working directory. ``--die-with-parent`` and
the pid namespace mean that when bwrap goes, everything inside goes with it.
"""

from __future__ import annotations

from collections.abc import Iterable

READ_ONLY = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
# bwrap refuses a command line of more arguments than this, its own included
# ("Exceeded maximum number of arguments"), and the run's command is on it.
MAX_ARGS = 9000


def bwrap_argv(bwrap: str, workdir: str, present: Iterable[str]) -> list[str]:
    """The bwrap prefix for a run in ``workdir``; ``present`` lists which of
    :data:`READ_ONLY` exist on this machine (the caller looks)."""
    argv = [bwrap, "--unshare-all", "--die-with-parent", "--new-session"]
    for path in present:
        argv += ["--ro-bind", path, path]
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    argv += ["--bind", workdir, workdir, "--chdir", workdir]
    return argv


def room(present: Iterable[str]) -> int:
    """How many arguments the run's command may have under bwrap (:data:`MAX_ARGS`
    less the prefix :func:`bwrap_argv` puts before it, and bwrap's own name)."""
    return MAX_ARGS - len(bwrap_argv("bwrap", "/", present))
