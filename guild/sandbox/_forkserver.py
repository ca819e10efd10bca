"""The fork server: a small helper process that keeps one forked child ready.

It runs as its own interpreter (``python -I -S _forkserver.py MODE FD``) and
imports only built-in modules (plus ``ctypes`` in ``kernel`` mode), so it stays
small and forking it is cheap. It forks a *spare* through an intermediate that
exits at once, so the spare is re-parented to the worker (a child subreaper),
which waits for it like any child of its own. The spare blocks on the control
socket for one request and then, for that one run: sends its pid to the worker,
starts a new session, joins the run's cgroups (descriptors the worker opened),
wires stdin to /dev/null and stdout/stderr to the run's pipes, closes every
other descriptor, restores default signal handling, changes into the job
directory, sets the rlimits, drops to the run's uid/gid (no supplementary
groups) and ``execve``s the argv with the run's environment. If a step fails it
sends the errno and exits without running anything; if ``execve`` succeeds, the
close-on-exec job socket tells the worker so. The server forks the next spare
once this one has ``exec``'d, so the fork never competes with the handover.

In ``kernel`` mode the namespaces are made before the request, off the run's
critical path: the intermediate enters new namespaces (``_namespaces.enter``),
and its child — the spare the worker waits for — is PID 1 of the new PID
namespace: it mounts the namespace's ``/proc`` and the scratch tmpfs (a
kernel-mode server serves one scratch size), starts the session, and forks the
*job process* that takes the request. After the request the job process
attaches the job directory (``prepare_run``),
hands the job socket to PID 1 and ``exec``s. PID 1 reports the exec (a 0) and,
once the job process exits, its wait status and whether a scratch tmpfs filled,
then exits — and the kernel kills whatever else is left in the namespace.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # no stubs; `signal` would import enum
import _socket
import _struct
import marshal
import os
import resource
import sys

_INT = _struct.Struct("=i")
_MAX_FDS = 8
_FDS = _socket.CMSG_LEN(_MAX_FDS * _INT.size)
_MAX_REQUEST = 1 << 20


def apply_in_child(limits: list[tuple[int, int]], identity: tuple[int, int] | None) -> None:
    """The rlimits, then the drop to ``identity`` (uid, gid; no supplementary
    groups), in a child about to exec. Both spawn paths call this: the spare here,
    and the ``preexec_fn`` fallback in ``_spawn``."""
    for which, value in limits:
        resource.setrlimit(which, (value, value))
    if identity is not None:
        os.setgroups([])
        os.setgid(identity[1])
        os.setuid(identity[0])


def join_cgroups(fds: list[int]) -> None:
    """Move this process into the run's cgroups (each fd a ``cgroup.procs`` file)."""
    for fd in fds:
        os.write(fd, b"0")
        os.close(fd)


class _Kernel:
    """What the job process of a kernel-isolated run shares with its PID 1."""

    def __init__(
        self, init_pid: int, pair: _socket.socket, exec_w: int, covered: dict[str, int]
    ) -> None:
        self.init_pid = init_pid
        self.pair = pair
        self.exec_w = exec_w
        self.covered = covered


def _receive(ctl: _socket.socket) -> tuple[bytes, list[int], int]:
    try:
        message, ancillary, flags, _ = ctl.recvmsg(_MAX_REQUEST, _FDS)
    except OSError:
        return b"", [], 0
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            usable = len(data) - len(data) % _INT.size
            fds += _struct.unpack(f"={usable // _INT.size}i", data[:usable])
    return message, fds, flags


def _spare(ctl: _socket.socket, taken: int, kernel: _Kernel | None) -> None:
    message, fds, flags = _receive(ctl)
    if message == b"P":
        # The cgroup the next run will have: joining is slow (the kernel waits for
        # an RCU grace period), so it is done now, before the run asks.
        join_cgroups(fds)
        message, fds, flags = _receive(ctl)
    if len(fds) < 3:
        os.write(taken, b"x")  # the control socket closed: the worker is gone
        os._exit(0)
    job_fd, out_w, err_w = fds[:3]
    job = _socket.socket(fileno=job_fd)
    code = 1
    try:
        if kernel is None:
            job.sendall(_INT.pack(os.getpid()))
        else:
            job.sendall(_INT.pack(kernel.init_pid))
            kernel.pair.sendmsg(
                [b"j"], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, _INT.pack(job_fd))]
            )
        if flags & (_socket.MSG_TRUNC | _socket.MSG_CTRUNC):
            raise OSError(7, "request too large")  # E2BIG
        argv, env, cwd, limits, identity, has_tree = marshal.loads(message)
        tree = fds[3] if kernel is not None and has_tree else -1
        join_cgroups(fds[3:] if tree < 0 else fds[4:])
        if kernel is None:
            os.setsid()
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        mine = (kernel.exec_w, tree, *kernel.covered.values()) if kernel is not None else ()
        keep = sorted({job_fd, taken, *mine} - {-1})
        low = 3
        for fd in keep:
            os.set_inheritable(fd, False)
            os.closerange(low, fd)
            low = fd + 1
        os.closerange(low, 1 << 20)
        _signal.signal(_signal.SIGINT, _signal.SIG_DFL)
        _signal.pthread_sigmask(_signal.SIG_SETMASK, ())
        if kernel is not None:
            _namespaces.prepare_run(cwd, tree, kernel.covered)
            for fd in kernel.covered.values():
                os.close(fd)
        os.chdir(cwd)
        apply_in_child(limits, identity)
        os.execve(argv[0], argv, env)
    except OSError as exc:
        code = exc.errno or 1
    except BaseException:
        code = 1
    try:
        job.sendall(_INT.pack(code))
        if kernel is not None:
            os.write(kernel.exec_w, _INT.pack(code))
    finally:
        os._exit(127)


def _host_ids() -> tuple[int, int]:
    # Read before the namespace's own /proc is mounted: the host's /proc says
    # which pid the worker knows this process (and its parent) by; getpid() says 1.
    with open("/proc/self/stat", "rb") as handle:
        data = handle.read()
    return int(data.split()[0]), int(data[data.rindex(b")") + 2 :].split()[1])


def _await_reparent(parent_gone: int, middle: int) -> None:
    """Return once the intermediate is gone and this process is the worker's child.

    The pipe reaches end of file before the kernel re-parents (descriptors close
    first in exit), so the parent pid is watched too. A parent-death signal armed
    before then (bwrap's ``--die-with-parent``, PID 1's own) would fire when the
    intermediate finished exiting.
    """
    os.read(parent_gone, 1)
    os.close(parent_gone)
    while _host_ids()[1] == middle:
        os.sched_yield()


def _init(
    ctl: _socket.socket,
    taken: int,
    parent_gone: int,
    middle: int,
    scratch: tuple[int, int],
    covered: dict[str, int],
) -> None:
    """PID 1 of a kernel-isolated run (see the module doc)."""
    code = 1
    try:
        _await_reparent(parent_gone, middle)
        host_pid, worker = _host_ids()
        # From now on the worker's death kills the whole run.
        _namespaces.die_with_parent()
        if _host_ids()[1] != worker:
            return  # the worker died before the death signal was armed
        _namespaces.enter_pid()
        covered.update(_namespaces.mount_scratch(*scratch))
        os.setsid()
        mine, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
        exec_r, exec_w = os.pipe()
        job_pid = os.fork()
        if job_pid == 0:
            mine.close()
            os.close(exec_r)
            _spare(ctl, taken, _Kernel(host_pid, theirs, exec_w, covered))
        theirs.close()
        os.close(exec_w)
        os.close(taken)
        for fd in covered.values():
            os.close(fd)  # the host's hidden directories: only the job process needs them
        ctl.close()
        _, ancillary, _, _ = mine.recvmsg(1, _socket.CMSG_LEN(_INT.size))
        if not ancillary:
            os.waitpid(job_pid, 0)
            os._exit(0)  # no request came: the worker is gone
        job = _socket.socket(fileno=_INT.unpack(ancillary[0][2][: _INT.size])[0])
        failed = os.read(exec_r, _INT.size)
        if not failed:
            job.sendall(_INT.pack(0))
        while True:
            pid, status = os.waitpid(-1, 0)
            if pid == job_pid:
                break
        if not failed:
            full = _namespaces.full(_namespaces.SCRATCH).encode()
            job.sendall(_INT.pack(status) + full)
        code = 0
    finally:
        os._exit(code)


def main(mode: str, ctl_fd: int, scratch: tuple[int, int] = (0, 0)) -> None:
    # Whatever the worker ignored or blocked is not passed on to the runs; the
    # server itself ignores SIGINT (a terminal's ^C is for the worker), and each
    # spare restores it before exec.
    for sig in _signal.valid_signals():
        if sig not in (_signal.SIGKILL, _signal.SIGSTOP):
            try:  # noqa: SIM105 - contextlib would grow the process for one loop
                _signal.signal(sig, _signal.SIG_DFL)
            except (OSError, ValueError):
                pass
    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
    _signal.pthread_sigmask(_signal.SIG_SETMASK, ())
    ctl = _socket.socket(fileno=ctl_fd)
    kernel = mode == "kernel"
    root = os.geteuid() == 0
    ready = False
    while True:
        taken_r, taken_w = os.pipe()
        middle = os.fork()
        if middle == 0:
            os.close(taken_r)
            covered: dict[str, int] = {}
            if kernel:
                try:
                    covered = _namespaces.enter(root)
                except OSError:
                    os._exit(1)
            gone_r, gone_w = os.pipe()
            me = os.getpid()  # the host's pid: unshare(CLONE_NEWPID) moves only children
            if os.fork() == 0:
                os.close(gone_w)
                if kernel:
                    _init(ctl, taken_w, gone_r, me, scratch, covered)
                _await_reparent(gone_r, me)
                _spare(ctl, taken_w, None)
            os._exit(0)
        os.close(taken_w)
        _, status = os.waitpid(middle, 0)
        if status != 0:
            return  # no namespaces: the worker sees the server gone
        if not ready:
            ctl.sendall(b"ready")
            ready = True
        # End of file: the spare exec'd (or exited) and the next one may be
        # forked. A byte: it found the control socket closed; the worker is gone.
        gone = os.read(taken_r, 1)
        os.close(taken_r)
        if gone:
            return


if __name__ == "__main__":
    if sys.argv[1] == "kernel":
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import _namespaces  # type: ignore[import-not-found]
    sizes = (int(sys.argv[3]), int(sys.argv[4])) if len(sys.argv) > 4 else (0, 0)
    main(sys.argv[1], int(sys.argv[2]), sizes)
else:
    from . import _namespaces
