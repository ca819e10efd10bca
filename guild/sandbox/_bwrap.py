"""Pure: the bubblewrap argv that isolates one run.

What it builds: new user, pid, net, ipc, uts and cgroup namespaces (no network,
no view of other processes), a read-only view of the system directories that
exist, a private /proc, /dev and /tmp, and the job directory as the only
writable place, which is also the working directory. ``--die-with-parent`` and
the pid namespace mean that when bwrap goes, everything inside goes with it.
With ``filtered``, ``--seccomp FD`` has bwrap install kernel mode's system-call
filter (``_namespaces.FILTER_PROGRAM``, read from a descriptor the spawn passes)
just before it ``exec``s the command (and in its PID 1, which then only waits
for it), so the job's own calls are filtered and none of bwrap's set-up.
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


def bwrap_argv(
    bwrap: str, workdir: str, present: Iterable[str], filtered: bool = False
) -> list[str]:
    """The bwrap prefix for a run in ``workdir``; ``present`` lists which of
    :data:`READ_ONLY` exist on this machine (the caller looks); ``filtered``:
    with ``--seccomp`` (its descriptor at :data:`FILTER_ARG`)."""
    argv = [bwrap, *(["--seccomp", "-1"] if filtered else [])]
    argv += ["--unshare-all", "--die-with-parent", "--new-session"]
    for path in present:
        argv += ["--ro-bind", path, path]
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    argv += ["--bind", workdir, workdir, "--chdir", workdir]
    return argv


def room(present: Iterable[str], filtered: bool = False) -> int:
    """How many arguments the run's command may have under bwrap (:data:`MAX_ARGS`
    less the prefix :func:`bwrap_argv` puts before it, and bwrap's own name)."""
    return MAX_ARGS - len(bwrap_argv("bwrap", "/", present, filtered))
