"""The fork server: a small helper process that keeps one forked child ready.

It runs as its own interpreter (``python -I -S _forkserver.py FD``) and imports
only built-in modules, so it stays small and forking it is cheap. It forks a
*spare* through an intermediate that exits at once, so the spare is re-parented
to the worker (a child subreaper), which waits for it like any child of its
own. The spare blocks on the control socket for one request and then, for that
one run: sends its pid to the worker, starts a new session, wires stdin to
/dev/null and stdout/stderr to the run's pipes, closes every other descriptor,
restores default signal handling, changes into the job directory, sets the
rlimits, drops to the run's uid/gid (no supplementary groups) and ``execve``s the
argv with the run's environment. If a step fails it sends the errno and exits
without running anything; if ``execve`` succeeds, the close-on-exec job socket
tells the worker so. The server forks the next spare once this one has
``exec``'d, so the fork never competes with the handover.
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
_FDS = _socket.CMSG_LEN(3 * _INT.size)
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


def _spare(ctl: _socket.socket, taken: int) -> None:
    try:
        message, ancillary, flags, _ = ctl.recvmsg(_MAX_REQUEST, _FDS)
    except OSError:
        message, ancillary, flags = b"", [], 0
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            usable = len(data) - len(data) % _INT.size
            fds += _struct.unpack(f"={usable // _INT.size}i", data[:usable])
    if len(fds) != 3:
        os.write(taken, b"x")  # the control socket closed: the worker is gone
        os._exit(0)
    job_fd, out_w, err_w = fds
    job = _socket.socket(fileno=job_fd)
    code = 1
    try:
        job.sendall(_INT.pack(os.getpid()))
        if flags & (_socket.MSG_TRUNC | _socket.MSG_CTRUNC):
            raise OSError(7, "request too large")  # E2BIG
        argv, env, cwd, limits, identity = marshal.loads(message)
        os.setsid()
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        low, high = sorted((job_fd, taken))
        os.set_inheritable(low, False)
        os.set_inheritable(high, False)
        os.closerange(3, low)
        os.closerange(low + 1, high)
        os.closerange(high + 1, 1 << 20)
        _signal.signal(_signal.SIGINT, _signal.SIG_DFL)
        _signal.pthread_sigmask(_signal.SIG_SETMASK, ())
        os.chdir(cwd)
        apply_in_child(limits, identity)
        os.execve(argv[0], argv, env)
    except OSError as exc:
        code = exc.errno or 1
    except BaseException:
        code = 1
    try:
        job.sendall(_INT.pack(code))
    finally:
        os._exit(127)


def main(ctl_fd: int) -> None:
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
    ready = False
    while True:
        taken_r, taken_w = os.pipe()
        middle = os.fork()
        if middle == 0:
            os.close(taken_r)
            if os.fork() == 0:
                _spare(ctl, taken_w)
            os._exit(0)
        os.close(taken_w)
        os.waitpid(middle, 0)
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
    main(int(sys.argv[1]))
