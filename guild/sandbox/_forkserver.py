"""The fork server: a small helper process that keeps one forked child ready.

It runs as its own interpreter (``python -I -S _forkserver.py MODE FD …``) and
imports only built-in modules (plus ``ctypes``, for its session keyring and in
``kernel`` mode), so it stays small and forking it is cheap. It forks a *spare*
through an intermediate that exits at once, so the spare is re-parented to the
worker (a child subreaper), which waits for it like any child of its own. The
spare blocks on the control socket for one request (in a memfd when large) and
then, for that one run: starts a new session, joins
the run's cgroups (descriptors the worker opened), wires stdin to /dev/null and
stdout/stderr to the run's pipes, closes every other descriptor (but one the
request has the program inherit: bwrap's filter), restores default signal
handling, changes into the job directory, sets the rlimits, drops to the run's
uid/gid (no supplementary groups), sends its pid to the worker and ``execve``s
the argv with the run's environment. If a step fails it
sends its pid and the errno and exits without running anything; if ``execve``
succeeds, the close-on-exec job socket tells the worker so. The server forks
the next spare once this one has ``exec``'d, so the fork never competes with
the handover.

In ``kernel`` mode the namespaces are made before the request, off the run's
critical path: the intermediate enters new namespaces (``_namespaces.enter``),
and its child — the spare the worker waits for — is PID 1 of the new PID
namespace: it mounts the namespace's ``/proc``, the scratch tmpfs (a
kernel-mode server serves one scratch size) and, as root, a tmpfs on the job
directories' parent (``_namespaces.mount_jobs``), starts the session, makes its
report socket and forks the *job process* that takes the request, with stdin
and signals, ``no_new_privs`` and the keyring filter already set and the
request's calls rehearsed (``_rehearse``: a fork's first write to a page is a
fault, which the run's path then does not take). After the
request the job process attaches the job directory (``prepare_run``), sends
the worker PID 1's pid with the report socket's other end (PID 1 is not woken)
and ``exec``s; its close-on-exec job socket tells the worker, as in the plain
mode. Once the job process exits, PID 1 kills and reaps whatever else is left
in the namespace (``_empty_namespace``), then reports the job's wait status and
whether a scratch tmpfs filled, with a descriptor of the run's mount namespace,
and exits: the report is the end of the run, and the worker reaps PID 1 once
the result is complete. Holding that descriptor keeps the unmounting of the
run's mount tree (an RCU grace period and a dozen tmpfs) out of PID 1's exit,
which the worker waits for before the run returns: the worker passes it on to
the server's *dropper*, a child of the server that only receives such
descriptors and closes them (on a socket of its own), so the teardown — 1 to
11 ms on a loaded host — delays neither a spare waiting for its request nor the
server forking the next one. The worker does that once the run's result is
complete, and the dropper closes its copy after the worker's (see
``_dropper``): the last close pays for the teardown.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # no stubs; `signal` would import enum
import _socket
import _struct
import errno
import gc
import marshal
import os
import resource
import sys

TYPE_CHECKING = False  # typing is not imported here: see the module doc
if TYPE_CHECKING:
    import ctypes

_INT = _struct.Struct("=i")
# A request's descriptors: the job socket, two pipes, a spilled request, a
# detached tree (kernel mode) or bwrap's filter, a cgroup file per hierarchy
# (three on a v1 host), and room.
_MAX_FDS = 10
_FDS = _socket.CMSG_LEN(_MAX_FDS * _INT.size)
_MAX_REQUEST = 1 << 20
# A request larger than this is sent in a memfd (its descriptor first after the
# pipes) and the message is SPILLED: a message of the control socket
# (SOCK_SEQPACKET) cannot exceed its send buffer, ~208 KiB by default, while argv
# and environment may reach 1 MiB. A marshalled request never is one byte.
SPILL_OVER = 64 << 10
SPILLED = b"M"
# The most a spilled request may hold: 1 MiB of argv and environment, and the rest.
_MAX_SPILLED = 2 << 20
# What a request unpacks to, as _spawn sends it (argv, env, cwd, rlimits,
# identity, a detached tree, prove, the argument naming an inherited
# descriptor): see _spare.
_JOB_PATH = "/run/guild/jobs/job-1-0123456789abcdef"
_REQUEST_SHAPE = marshal.dumps(
    (
        ["/usr/bin/true"],
        {
            "LANG": "C.UTF-8",
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": _JOB_PATH,
            "TMPDIR": _JOB_PATH,
            "GUILD_SANDBOX_RUN": "0123456789abcdef01234567",
        },
        _JOB_PATH,
        # Values of the default policy's size: ints past 2**30 are objects of two digits.
        [
            (60, 60),
            (4 << 30, 4 << 30),
            (64 << 20, 64 << 20),
            (256, 256),
            (80, 80),
            (0, 0),
            (0, 0),
            (0, 0),
        ],
        (200000, 65534),
        True,
        True,
        -1,
    )
)


# keyctl(2)'s number by machine, and the two operations seal_session_keyring uses.
_KEYCTL_CALL = {"x86_64": 250, "aarch64": 219, "riscv64": 219}
_KEYCTL_JOIN_SESSION_KEYRING = 1
_KEYCTL_SETPERM = 5


def seal_session_keyring(libc: ctypes.CDLL | None = None) -> None:
    """Replace this process's session keyring (and so its children's, from now on)
    with a new, empty one that nobody may use.

    The session keyring is inherited through ``fork``, ``execve`` and ``setuid``,
    and a process whose session holds a keyring *possesses* it: possessor
    permissions (all of them, by default) whatever its uid. A job started from a
    worker's session keyring read and wrote it, in a bubblewrap user namespace
    too (a secret a service keeps there, a key planted for it). The new keyring
    grants no permission to anyone, possessor included; a job may still make a
    session keyring of its own. Kernel mode's seccomp filter refuses the keyring
    calls as well. Left as it is: a kernel without keyrings (``ENOSYS``), a
    seccomp filter that refuses ``keyctl`` (``EPERM``, as Docker's default
    profile does: every descendant, the job too, inherits the filter), and a
    machine whose ``keyctl`` number is not known here.

    ``libc``: a handle made before a fork (``dlopen`` in the fork of a threaded
    worker could wait forever for a lock another thread held); else one is made.

    Raises:
        OSError: the kernel has keyrings and refused a new one, or its permissions.
    """
    number = _KEYCTL_CALL.get(os.uname().machine)
    if number is None:
        return
    # Here only: a plain server needs ctypes for this one call at its start.
    import ctypes

    if libc is None:
        libc = ctypes.CDLL(None, use_errno=True)
    keyctl = libc.syscall
    keyctl.restype = ctypes.c_long
    ring = keyctl(number, _KEYCTL_JOIN_SESSION_KEYRING, None)
    if ring < 0:
        code = ctypes.get_errno()
        if code in (errno.ENOSYS, errno.EPERM):
            return
        raise OSError(code, "a new session keyring")
    if keyctl(number, _KEYCTL_SETPERM, ctypes.c_long(ring), 0) < 0:
        raise OSError(ctypes.get_errno(), "the session keyring's permissions")


# PF_NPROC_EXCEEDED in the flags of /proc/self/stat (Linux 3.1 and later).
_NPROC_EXCEEDED = 0x1000


def _nproc_threshold() -> int:
    """The soft ``RLIMIT_NPROC`` under which ``setuid`` flags the process exactly when
    another process runs as the new uid: the kernel compares the other processes'
    count to the limit with ``>=`` before Linux 5.14 and with ``>`` since (the
    count moved to ucounts)."""
    release = os.uname().release.split(".")
    try:
        version = (int(release[0]), int("".join(c for c in release[1][:3] if c.isdigit())))
    except (IndexError, ValueError):
        return 0
    return 0 if version >= (5, 14) else 1


# Once per process (the fork server's spares inherit it): not a uname and a parse
# on the path from a run's request to its exec.
_NPROC_THRESHOLD = _nproc_threshold()


def apply_in_child(
    limits: list[tuple[int, int]], identity: tuple[int, int] | None, prove: bool = False
) -> None:
    """The rlimits, then the drop to ``identity`` (uid, gid; no supplementary
    groups), in a child about to exec. Both spawn paths call this: the spare here,
    and the ``preexec_fn`` fallback in ``_spawn``.

    ``prove`` (the spare's path): show that no other process runs as the uid, or
    raise ``OSError(EUSERS)``. ``setuid`` compares how many processes already
    run as the new uid with the soft ``RLIMIT_NPROC`` and, when over, marks this
    process ``PF_NPROC_EXCEEDED`` (for ``execve`` to refuse); with the limit at
    :func:`_nproc_threshold` the mark means one other process at least. The mark
    is read back from /proc/self/stat, and the limit restored before ``exec``,
    which clears the mark. This replaces a scan of the host's /proc in the
    worker, whose cost grows with the number of processes on the host; it needs
    no extra process (a clone under the limit would, and waiting for a new task
    to be scheduled cost milliseconds on a loaded host).
    """
    for which, value in limits:
        resource.setrlimit(which, (value, value))
    if identity is not None:
        os.setgroups([])
        os.setgid(identity[1])
        nproc = resource.getrlimit(resource.RLIMIT_NPROC)
        if prove:
            resource.setrlimit(resource.RLIMIT_NPROC, (_NPROC_THRESHOLD, nproc[1]))
        os.setuid(identity[0])
        if prove:
            resource.setrlimit(resource.RLIMIT_NPROC, nproc)
            if _nproc_exceeded():
                raise OSError(errno.EUSERS, "another process runs as the run's uid")


def _nproc_exceeded() -> bool:
    """Whether this process is marked ``PF_NPROC_EXCEEDED`` (/proc/self/stat)."""
    fd = os.open("/proc/self/stat", os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    return bool(int(data[data.rindex(b")") + 2 :].split()[6]) & _NPROC_EXCEEDED)


# The rlimits a run sets (Sandbox._limits), which _rehearse sets to what they are.
_RUN_LIMITS = (
    resource.RLIMIT_CPU,
    resource.RLIMIT_AS,
    resource.RLIMIT_FSIZE,
    resource.RLIMIT_NOFILE,
    resource.RLIMIT_NPROC,
    resource.RLIMIT_CORE,
    resource.RLIMIT_RTPRIO,
    resource.RLIMIT_NICE,
)


def _rehearse(kernel: _Kernel | None) -> None:
    """Before the request, the calls the spare makes after it, with no effect.

    The spare is a fork: every page it writes is first copied from its parent's
    at a fault (refcounts of the functions and modules it calls, the frames and
    the C stack beneath them, ctypes' objects). Run once here, off the run's path,
    the same calls leave 15 faults between request and ``exec`` instead of 61
    (request to ``exec`` 0.45 -> 0.28 ms in kernel mode, medians on a loaded
    2-core VM, timestamps included). A collection by the cyclic
    garbage collector would write to every tracked object's page: none is run
    in a process that is about to ``exec``.
    """
    gc.disable()
    try:
        for which in _RUN_LIMITS:
            resource.setrlimit(which, resource.getrlimit(which))
        _nproc_exceeded()
        os.dup2(1, 1)
        os.chdir(".")
        sorted({0, 1, 2} - {-1})  # the descriptors kept at the close of the rest
        if kernel is not None:
            _namespaces.rehearse_attach(kernel.jobs)
            pair = kernel.pair.fileno()
            _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM, 0, pair).detach()
            [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, _INT.pack(pair))]
    except OSError:
        pass  # only a rehearsal: the request's own calls say what fails


def join_cgroups(fds: list[int]) -> None:
    """Move this process into the run's cgroups (each fd from ``RunCgroup.open_procs``)."""
    for fd in fds:
        os.write(fd, b"0")
        os.close(fd)


class _Kernel:
    """What the job process of a kernel-isolated run shares with its PID 1."""

    def __init__(
        self, init_pid: int, pair: _socket.socket, covered: dict[str, int], jobs: str
    ) -> None:
        self.init_pid = init_pid
        self.pair = pair
        self.covered = covered
        self.jobs = jobs


def _receive(ctl: _socket.socket) -> tuple[bytes, list[int], int]:
    try:
        # Close-on-exec, so that nothing received reaches the job by accident.
        message, ancillary, flags, _ = ctl.recvmsg(_MAX_REQUEST, _FDS, _socket.MSG_CMSG_CLOEXEC)
    except TimeoutError:
        raise  # the dropper's wait (no other socket here has a timeout)
    except OSError:
        return b"", [], 0
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            usable = len(data) - len(data) % _INT.size
            fds += _struct.unpack(f"={usable // _INT.size}i", data[:usable])
    return message, fds, flags


def _spare(ctl: _socket.socket, taken: int, kernel: _Kernel | None) -> None:
    unhardened: OSError | None = None
    if kernel is not None:
        # What no request changes, done while waiting for one. (PID 1's session
        # has no terminal, so no ^C meant for the worker reaches this process.)
        _stdin_and_signals()
        try:
            _namespaces.harden()
        except OSError as exc:
            unhardened = exc  # the run fails with it, before anything runs
    # A request's objects are allocated in memory this process still shares with
    # the server since the fork, and the first write to each page copies it (a
    # fault apiece: 0.1 ms of the run's start). Unpacking a request-shaped
    # message while waiting makes those copies now.
    marshal.loads(_REQUEST_SHAPE)
    _rehearse(kernel)
    message, fds, flags = _receive(ctl)
    while message == b"P":
        # The cgroup the next run will have, joined now, before the run asks.
        join_cgroups(fds)
        message, fds, flags = _receive(ctl)
    if len(fds) < 3:
        os.write(taken, b"x")  # the control socket closed: the worker is gone
        os._exit(0)
    job_fd, out_w, err_w = fds[:3]
    rest = fds[3:]
    # The family and type given: a bare fileno costs three calls to look them up.
    job = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM, 0, job_fd)
    code = 1
    sent = False
    try:
        if flags & (_socket.MSG_TRUNC | _socket.MSG_CTRUNC):
            raise OSError(7, "request too large")  # E2BIG
        if message == SPILLED:
            message = _unspill(rest.pop(0))
        argv, env, cwd, limits, identity, has_tree, prove, fd_arg = marshal.loads(message)
        tree = rest.pop(0) if kernel is not None and has_tree else -1
        # A descriptor the program keeps across exec (bwrap's filter), its
        # number written where the request's argv names it.
        inherited = rest.pop(0) if fd_arg >= 0 else -1
        if inherited >= 0:
            argv[fd_arg] = str(inherited)
            os.set_inheritable(inherited, True)
        join_cgroups(rest)
        if kernel is None:
            os.setsid()
            _stdin_and_signals()
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        # What the hidden directories cover is needed only to bind a job directory
        # without a detached tree (prepare_run); else closed with the rest, at once.
        covered = kernel.covered if kernel is not None and tree < 0 else {}
        mine = (tree, kernel.pair.fileno(), *covered.values()) if kernel is not None else ()
        keep = sorted({job_fd, taken, inherited, *mine} - {-1})
        low = 3
        for fd in keep:
            if fd > low:  # the kept descriptors are mostly adjacent: no empty ranges
                os.closerange(low, fd)
            low = fd + 1
        os.closerange(low, 1 << 20)
        if kernel is not None:
            if unhardened is not None:
                raise unhardened
            _namespaces.prepare_run(cwd, tree, covered, kernel.jobs)
            for fd in covered.values():
                os.close(fd)
        os.chdir(cwd)
        apply_in_child(limits, identity, prove)
        # The pid last, just before the exec: the worker, woken by it, did not
        # compete with the steps above for a CPU, and mostly finds the exec's
        # end of file with it (one wake-up for both).
        _send_pid(job, kernel)
        sent = True
        os.execve(argv[0], argv, env)
    except OSError as exc:
        code = exc.errno or 1
    except BaseException:
        code = 1
    try:
        if not sent:
            _send_pid(job, kernel)
        job.sendall(_INT.pack(code))
    finally:
        os._exit(127)


def _unspill(fd: int) -> bytes:
    """The request the worker wrote to memfd ``fd`` (closed here)."""
    try:
        chunks: list[bytes] = []
        size = 0
        while size <= _MAX_SPILLED:
            chunk = os.pread(fd, _MAX_SPILLED + 1 - size, size)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
        raise OSError(7, "request too large")  # E2BIG
    finally:
        os.close(fd)


def _send_pid(job: _socket.socket, kernel: _Kernel | None) -> None:
    """The pid the worker waits for: this process's, or in kernel mode PID 1's,
    with the other end of PID 1's report socket (for the job's wait status). The
    job socket stays here (close-on-exec: the worker sees end of file at exec)."""
    if kernel is None:
        job.sendall(_INT.pack(os.getpid()))
        return
    rights = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, _INT.pack(kernel.pair.fileno()))]
    job.sendmsg([_INT.pack(kernel.init_pid)], rights)
    kernel.pair.close()


def _stdin_and_signals() -> None:
    """stdin from /dev/null, SIGINT back to its default, nothing blocked."""
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    _signal.signal(_signal.SIGINT, _signal.SIG_DFL)
    _signal.pthread_sigmask(_signal.SIG_SETMASK, ())


def _host_ids() -> tuple[int, int]:
    # Read before the namespace's own /proc is mounted: the host's /proc says
    # which pid the worker knows this process (and its parent) by; getpid() says 1.
    with open("/proc/self/stat", "rb") as handle:
        data = handle.read()
    return int(data.split()[0]), int(data[data.rindex(b")") + 2 :].split()[1])


def _await_reparent(reaped: int) -> None:
    """Return once the intermediate is gone and this process is the worker's child.

    The server writes a byte once it has reaped the intermediate: the kernel
    re-parents an exiting process's children before its parent can reap it. (A
    parent-death signal armed before then — bwrap's ``--die-with-parent``, PID
    1's own — would fire when the intermediate finished exiting.) End of file
    instead: the server is gone, and so is the worker; nothing runs.
    """
    ready = os.read(reaped, 1)
    os.close(reaped)
    if not ready:
        os._exit(0)


def _init(
    ctl: _socket.socket,
    taken: int,
    reaped: int,
    scratch: tuple[int, int],
    covered: dict[str, int],
    jobs: str,
) -> None:
    """PID 1 of a kernel-isolated run (see the module doc)."""
    code = 1
    try:
        _await_reparent(reaped)
        host_pid, worker = _host_ids()
        # From now on the worker's death kills the whole run.
        _namespaces.die_with_parent()
        if _host_ids()[1] != worker:
            return  # the worker died before the death signal was armed
        _namespaces.enter_pid()
        scratch_mounts = _namespaces.mount_scratch(*scratch)
        covered.update(scratch_mounts)
        ready = _namespaces.mount_jobs(jobs) if jobs else ""
        # Sent with the report, so that this process's exit does not tear the
        # mount namespace down while the worker waits for it (see _spare's "D").
        mounts = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        os.setsid()
        # The report socket: the job process hands the other end to the worker
        # with its pid, when the request comes (PID 1 is not woken for it).
        mine, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
        job_pid = os.fork()
        if job_pid == 0:
            mine.close()
            os.close(mounts)
            _spare(ctl, taken, _Kernel(host_pid, theirs, covered, ready))
        theirs.close()
        os.close(taken)
        for fd in covered.values():
            os.close(fd)  # the host's hidden directories: only the job process needs them
        ctl.close()
        _rehearse_report(tuple(scratch_mounts), mounts)
        while True:
            pid, status = os.waitpid(-1, 0)
            if pid == job_pid:
                break
        _empty_namespace()
        # Only what was mounted is read (no statvfs of a missing /var/tmp between
        # the job's exit and the report the worker waits for).
        full = _namespaces.full(tuple(scratch_mounts)).encode()
        rights = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, _INT.pack(mounts))]
        # No request was taken (the worker is gone) if the other end is closed.
        try:  # noqa: SIM105 - contextlib would grow the process for one call
            mine.sendmsg([_INT.pack(status) + full], rights, _socket.MSG_NOSIGNAL)
        except OSError:
            pass
        code = 0
    finally:
        os._exit(code)


def _rehearse_report(scratch: tuple[str, ...], mounts: int) -> None:
    """In PID 1, once the job process is forked: the calls of its report to no
    effect (see _rehearse). The fork left every page shared with the job process
    and write-protected, and the report, on the run's path, took 47 faults (0.175
    ms from PID 1's wake-up to its report, against 15 and 0.13 ms after this)."""
    gc.disable()
    try:
        os.waitpid(-1, os.WNOHANG)  # the job process runs: (0, 0)
        raise ChildProcessError(errno.ECHILD, "rehearsed")  # _empty_namespace's usual end
    except ChildProcessError:
        pass
    full = _namespaces.full(scratch).encode()
    [_INT.pack(0) + full, (_socket.SOL_SOCKET, _socket.SCM_RIGHTS, _INT.pack(mounts))]


def _empty_namespace() -> None:
    """In PID 1, once the job process has exited: kill and reap every other process
    of the namespace, so that the report says the run is over and the worker
    need not wait for PID 1's own exit (its address space and namespaces torn
    down) to know it. Every process of the namespace descends from PID 1 (an
    orphan is re-parented within it), so none is left when PID 1 has no child.
    ``kill(-1)`` from PID 1 reaches every other process of the namespace (and
    of namespaces below it) and no other; a fork racing it fails, its parent
    having the SIGKILL pending (``copy_process``)."""
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return  # the usual case: the job left nothing behind
    os.kill(-1, _signal.SIGKILL)
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


# How long the dropper keeps the last descriptors it received (see _dropper).
_DROP_LAG = 0.01


def _dropper(drop: _socket.socket) -> None:
    """Close every descriptor received on ``drop`` (finished runs' mount namespaces:
    see the module doc) until the worker closes its end.

    The last close of a mount namespace runs its teardown, and the worker closes
    its own copy just after sending it here: closed here at once, the worker's
    close was often the last one (0.9 to 2.2 ms of the worker's time per run,
    profiled on a loaded 2-core host, against 0.05 ms now). So each batch is
    closed when the next one comes (the worker closed its copies of this one
    before it sent that one) or after :data:`_DROP_LAG`, whichever is first."""
    pending: list[int] = []
    while True:
        drop.settimeout(_DROP_LAG if pending else None)
        try:
            message, fds, _ = _receive(drop)
        except TimeoutError:
            message, fds = b"D", []
        for fd in pending:
            os.close(fd)
        pending = fds
        if not message:
            for fd in pending:
                os.close(fd)
            os._exit(0)


def main(
    mode: str, ctl_fd: int, scratch: tuple[int, int] = (0, 0), jobs: str = "", drop_fd: int = -1
) -> None:
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
    try:
        # Not the worker's: every spare, and so every run, inherits this one.
        seal_session_keyring()
    except OSError:
        return  # no "ready": the worker sees the server gone
    ctl = _socket.socket(fileno=ctl_fd)
    dropper = -1
    if drop_fd >= 0:
        drop = _socket.socket(fileno=drop_fd)
        dropper = os.fork()
        if dropper == 0:
            ctl.close()
            _dropper(drop)
        drop.close()  # only the dropper holds it: no spare, and so no job, inherits it
    kernel = mode == "kernel"
    root = os.geteuid() == 0
    ready = False
    while True:
        taken_r, taken_w = os.pipe()
        reaped_r, reaped_w = os.pipe()
        middle = os.fork()
        if middle == 0:
            os.close(taken_r)
            os.close(reaped_w)
            covered: dict[str, int] = {}
            if kernel:
                try:
                    covered = _namespaces.enter(root)
                except OSError:
                    os._exit(1)
            if os.fork() == 0:
                if kernel:
                    _init(ctl, taken_w, reaped_r, scratch, covered, jobs)
                _await_reparent(reaped_r)
                _spare(ctl, taken_w, None)
            os._exit(0)
        os.close(taken_w)
        os.close(reaped_r)
        _, status = os.waitpid(middle, 0)
        if status == 0:
            os.write(reaped_w, b"r")
        os.close(reaped_w)
        if status != 0:
            return  # no namespaces: the worker sees the server gone
        if not ready:
            ctl.sendall(b"ready" + _INT.pack(dropper))  # the worker reaps it at the end
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
    # MODE CTL [DROP SIZE INODES [JOBS]]
    extra = sys.argv[3:]
    sizes = (int(extra[1]), int(extra[2])) if len(extra) > 2 else (0, 0)
    drop_fd = int(extra[0]) if extra else -1
    main(sys.argv[1], int(sys.argv[2]), sizes, extra[3] if len(extra) > 3 else "", drop_fd)
else:
    from . import _namespaces
