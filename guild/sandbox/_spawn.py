"""Starting one sandboxed child: through the fork server, or with a ``preexec_fn``.

The fork server (``_forkserver.py``) keeps a pre-forked spare child of this
process ready; a run hands it the argv, environment, job directory, rlimits and
identity plus its output pipes, and the spare applies them and ``exec``s. That
spares the worker a ``fork()`` of its whole address space per run (CPython
cannot use ``vfork`` with a ``preexec_fn`` or a uid change). When the server
cannot be used (no child subreaper, no ``pidfd_open``, the helper will not
start, or ``GUILD_SANDBOX_SPAWN=preexec``), runs fall back to
``trio.lowlevel.open_process`` with the same limits applied in ``preexec_fn``.
Both paths apply the same things in the same order.

Kernel-namespace isolation (``isolate`` resolving to ``"kernel"``) always goes
through a fork server of its own (mode ``kernel``), whose spares enter the
namespaces before a run asks for them; it has no ``preexec_fn`` form.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import ctypes
import errno
import fcntl
import marshal
import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import trio

from . import _cgroup, _namespaces, _reaper
from ._forkserver import SPILL_OVER, SPILLED, join_cgroups, seal_session_keyring
from ._forkserver import apply_in_child as apply_in_child

Limits = Sequence[tuple[int, int]]
Identity = tuple[int, int] | None
# A run's cgroup budgets: memory bytes, processes, CPU seconds.
Budget = tuple[int, int, float]
_SERVER_SCRIPT = str(Path(__file__).with_name("_forkserver.py"))
_INT = struct.Struct("=i")
# For preexec: made here, not in the fork of a threaded worker (see seal_session_keyring).
_LIBC = ctypes.CDLL(None, use_errno=True)


def preexec(limits: Limits, identity: Identity, cgroups: Sequence[int]) -> None:
    """The ``preexec_fn`` of the fallback path: what a fork-server spare applies
    (the server's sealed session keyring too, not the worker's)."""
    seal_session_keyring(_LIBC)
    join_cgroups(list(cgroups))
    apply_in_child(list(limits), identity)


class ServerUnavailable(Exception):
    """The fork server could not take this run; use the ``preexec_fn`` path."""


class Child:
    """A child started by the fork server: a pid this process waits for, and its pipes.

    In kernel mode (``reports``) the pid is the namespace's PID 1, and ``report``
    the socket on which it sends the job process's wait status (and a full
    scratch tmpfs), with a descriptor of the run's mount namespace that
    ``server`` drops elsewhere; without a status from it the job counts as killed.
    PID 1 reports once every other process of the run is gone
    (``_forkserver._empty_namespace``): :meth:`wait` returns then, and
    :meth:`reaped` waits for PID 1 itself, once the run's result is complete.
    """

    def __init__(
        self,
        pid: int,
        pidfd: int,
        stdout: int,
        stderr: int,
        report: socket.socket | None,
        server: ForkServer | None = None,
        reports: bool = False,
    ) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.scratch_full = ""
        self.cgroup: _cgroup.RunCgroup | None = None
        self._pidfd = pidfd
        self._status = -9  # the pid's own exit code, once reaped
        self._report = report
        self._reports = reports or report is not None
        self._server = server
        # The run's mount namespace, sent with the report (see drop_namespace).
        self._held: list[int] = []
        # The read ends of the run's output pipes (non-blocking), read by the
        # caller (``Sandbox._follow``) until :meth:`close_pipes`.
        self.stdout_fd = stdout
        self.stderr_fd = stderr

    def end_fd(self) -> int:
        """The descriptor that turns readable when :meth:`settle` may have news: PID
        1's report socket (kernel mode), else the pid's pidfd; -1 once settled."""
        if self.returncode is not None:
            return -1
        return self._report.fileno() if self._report is not None else self._pidfd

    def settle(self) -> bool:
        """Without blocking: read PID 1's report or reap the pid if either is there;
        whether the job's exit code is known (``returncode``)."""
        if self.returncode is None and self._report is not None:
            self._read_report()
        if self.returncode is None and self._report is None and self._reap():
            # No report: PID 1 was killed (the kernel killed the rest of the
            # namespace before PID 1 can be reaped), or this is no kernel run.
            self.returncode = -9 if self._reports and self._status == 0 else self._status
        return self.returncode is not None

    async def wait(self) -> int:
        """The job's exit code, once no process of the run is left (in kernel mode
        PID 1 may still be exiting: see :meth:`reaped`). No pass through the
        scheduler when :meth:`settle` already knows it."""
        while not self.settle():
            await trio.lowlevel.wait_readable(self.end_fd())
        assert self.returncode is not None
        return self.returncode

    def _read_report(self) -> None:
        assert self._report is not None
        try:
            data, ancillary, _, _ = self._report.recvmsg(
                256, socket.CMSG_SPACE(_INT.size), socket.MSG_DONTWAIT
            )
        except BlockingIOError:
            return
        except OSError:
            data, ancillary = b"", []
        self._held = [
            fd
            for level, kind, fds in ancillary
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS
            for fd in struct.unpack(f"={len(fds) // _INT.size}i", fds)
        ]
        if len(data) >= _INT.size:
            self.returncode = os.waitstatus_to_exitcode(_INT.unpack(data[: _INT.size])[0])
            self.scratch_full = data[_INT.size :].decode(errors="replace")
        self._report.close()
        self._report = None

    async def reaped(self) -> None:
        """Wait for the pid itself (PID 1 in kernel mode) to exit, and reap it."""
        while not self._reap():
            await trio.lowlevel.wait_readable(self._pidfd)

    def _reap(self) -> bool:
        """Reap the pid if it has exited (without blocking); whether it is reaped."""
        if self._pidfd < 0:
            return True
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = self.pid, -1
        if pid == 0:
            return False
        self._status = -9 if status < 0 else os.waitstatus_to_exitcode(status)
        os.close(self._pidfd)
        self._pidfd = -1
        return True

    def drop_namespace(self) -> None:
        """Hand the finished run's mount namespace (sent with PID 1's report)
        to the server's dropper and close it here. The dropper closes it last (see
        ``_forkserver._dropper``), so its teardown (a dozen unmounts under the
        host's mount lock, an RCU grace period) runs there. Called once the run's
        result is complete (``Sandbox.run``): the close of the run's detached job
        directory, before it, is then not the one that frees its tmpfs, and the
        teardown does not compete with the run's last steps for a CPU."""
        held, self._held = self._held, []
        if held and self._server is not None:
            self._server.drop(held)
        for fd in held:
            os.close(fd)

    def close_pipes(self) -> None:
        for fd in (self.stdout_fd, self.stderr_fd):
            if fd >= 0:
                os.close(fd)
        self.stdout_fd = self.stderr_fd = -1


class ForkServer:
    """One per worker process and mode, started on first use; restarted if it dies."""

    def __init__(
        self, mode: str = "none", scratch: tuple[int, int] = (0, 0), jobs: str = ""
    ) -> None:
        self.mode = mode
        # Each prepared cgroup with the budgets already set on it (None: not yet).
        self._prepared: collections.deque[tuple[_cgroup.RunCgroup, Budget | None]] = (
            collections.deque()
        )
        self._order = trio.Lock()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # Kernel mode: the socket to the server's dropper (see drop()).
        drops = (
            socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) if mode == "kernel" else None
        )
        passed = (theirs.fileno(), *([drops[1].fileno()] if drops else []))
        try:
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    "-S",
                    "-B",
                    _SERVER_SCRIPT,
                    mode,
                    str(theirs.fileno()),
                    str(drops[1].fileno() if drops else -1),
                    *(str(n) for n in scratch),
                    *([jobs] if jobs else []),
                ],
                pass_fds=passed,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                close_fds=True,
            )
        except BaseException:
            if drops:
                drops[0].close()
            raise
        finally:
            theirs.close()
            if drops:
                drops[1].close()
        self._ctl = ours
        self._drops = drops[0] if drops else None
        if self._drops is not None:
            self._drops.setblocking(False)
        self._pid = os.getpid()
        self._dropper = -1
        ours.settimeout(10)
        try:
            ready = ours.recv(16)
            if len(ready) != 5 + _INT.size or not ready.startswith(b"ready"):
                raise OSError("fork server did not start")
            self._dropper = _INT.unpack(ready[5:])[0]
        except OSError:
            self.close()
            raise
        ours.setblocking(False)
        self._prepare_next()

    def _prepare_next(self, budget: Budget | None = None) -> None:
        """Send the next spare its cgroup (at most one pending: see :meth:`spawn`), with
        ``budget`` (the last run's, which the next one most likely shares) already set:
        the cgroup writes happen while the run just sent is starting, not when the
        next one asks."""
        if self._prepared:
            return
        group = _cgroup.blank()
        if group is None:
            return
        if budget is not None and not _cgroup.configure(group, *budget):
            return  # removed: that spare joins a cgroup at its request
        procs = group.open_procs()
        try:
            socket.send_fds(self._ctl, [b"P"], procs)
        except OSError:  # full or closed: that spare joins a cgroup at its request
            _cgroup.release(group)
            return
        finally:
            for fd in procs:
                os.close(fd)
        self._prepared.append((group, budget))

    def drop(self, fds: list[int]) -> None:
        """Hand descriptors to the server's dropper to close (a finished run's mount
        namespace, whose teardown is slow); the caller still closes its own."""
        if self._drops is None:
            return
        with contextlib.suppress(OSError):  # full or closed: the caller's close drops it
            socket.send_fds(self._drops, [b"D"], fds)

    def _drop_prepared(self) -> None:
        while self._prepared:
            _cgroup.release(self._prepared.popleft()[0])

    @property
    def alive(self) -> bool:
        return self._pid == os.getpid() and self._process.poll() is None

    def close(self) -> None:
        self._ctl.close()
        if self._drops is not None:
            self._drops.close()  # the dropper's end of file: it exits
        self._drop_prepared()
        if self._pid != os.getpid():
            return  # inherited through a fork: the server is the parent's
        with contextlib.suppress(OSError):
            self._process.kill()
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            self._process.wait(timeout=5)
        if self._dropper > 0:
            # The server is reaped, so its dropper is this process's child now (a
            # subreaper's); it exits at the end of file of its socket, closed above.
            for _ in range(100):
                with contextlib.suppress(ChildProcessError):
                    if os.waitpid(self._dropper, os.WNOHANG)[0] == 0:
                        time.sleep(0.01)
                        continue
                break

    async def spawn(
        self,
        argv: Sequence[str],
        env: dict[str, str],
        cwd: str,
        limits: Limits,
        identity: Identity,
        direct: set[int],
        budget: Budget | None = None,
        prove: bool = False,
        tree: int = -1,
        inherit: tuple[int, int] | None = None,
    ) -> Child:
        """Start ``argv``; the pid is in ``direct`` before it can exit.

        ``tree`` (kernel mode): a detached mount the job process attaches at
        ``cwd`` (``_jobdir.make`` with ``detached``; the caller keeps and closes
        it); -1: a clone of the mounts at ``cwd`` on the host is made here.

        ``inherit`` (descriptor, index): the program keeps that descriptor across
        ``exec`` (bwrap's filter; the caller keeps and closes its own), and
        ``argv[index]`` is replaced by the number it has in the child.

        ``prove``: the spare shows that no other process runs as ``identity``'s
        uid before it execs, or the run fails with ``OSError(EUSERS)``
        (``apply_in_child``).

        ``budget`` (memory, processes, CPU seconds): the child runs in a cgroup
        with those budgets (``Child.cgroup``), where one can be made. The spare
        that takes this run has usually joined one already: after each request
        the server is sent the next spare's cgroup (a ``P`` message), so the
        slow join happens between runs. Requests and ``P`` messages alternate
        and spares take them in order, so the n-th request goes to the spare
        that joined the n-th prepared cgroup.

        Raises:
            ServerUnavailable: the server is gone (nothing was started).
            OSError: the child could not ``exec`` (or apply a limit); nothing runs.
        """
        global handshakes
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        # The worker's ends only: the job's stay blocking, as a program expects.
        os.set_blocking(out_r, False)
        os.set_blocking(err_r, False)
        extra: list[int] = []
        cloned = -1
        report: socket.socket | None = None
        if self.mode == "kernel":
            # A clone of the job directory's mount (its own tmpfs, if it has one),
            # made here because the run's mount namespace predates the directory.
            if tree < 0:
                tree = cloned = _namespaces.open_tree(cwd)
            if tree >= 0:
                extra.append(tree)
        fd_arg = -1
        if inherit is not None:
            extra.append(inherit[0])
            fd_arg = inherit[1]
        payload = marshal.dumps(
            (list(argv), env, cwd, [tuple(x) for x in limits], identity, tree >= 0, prove, fd_arg)
        )
        child: Child | None = None
        group: _cgroup.RunCgroup | None = None
        procs: list[int] = []
        spilled = -1
        try:
            try:
                if len(payload) > SPILL_OVER:
                    # A message of the control socket (SOCK_SEQPACKET) cannot be
                    # larger than its send buffer (~208 KiB), and the policy lets
                    # argv and environment reach 1 MiB: the request goes in a
                    # memfd instead, named by a one-byte message.
                    spilled = _spill(payload)
                    payload = SPILLED
                    extra.insert(0, spilled)
                # No await from taking the prepared cgroup to sending the next
                # one: the order of the messages is what pairs runs with cgroups.
                async with _holding(self._order):
                    if self._prepared:
                        group, ready = self._prepared.popleft()
                        if budget not in (None, ready) and not _cgroup.configure(group, *budget):
                            group = None
                    elif budget is not None:
                        group = _cgroup.acquire(*budget)
                        procs = group.open_procs() if group is not None else []
                    fds = [theirs.fileno(), out_w, err_w, *extra, *procs]
                    while True:
                        try:
                            socket.send_fds(self._ctl, [payload], fds)
                            break
                        except BlockingIOError:
                            await trio.lowlevel.wait_writable(self._ctl)
                    self._prepare_next(budget)
            except OSError as exc:
                self._drop_prepared()
                raise ServerUnavailable(str(exc)) from exc
            finally:
                theirs.close()
                os.close(out_w)
                os.close(err_w)
                if spilled >= 0:
                    os.close(spilled)
                if cloned >= 0:
                    os.close(cloned)
                for fd in procs:
                    os.close(fd)
            # A spare has the request (or it was dropped, which ends the stream):
            # finish the handshake whatever happens to this task meanwhile.
            with trio.CancelScope(shield=True):
                mine.setblocking(False)
                # The child may exit before its pid is known here; while a
                # handshake is in flight the orphan sweep reaps no zombie, so the
                # pid cannot be reused under us.
                handshakes += 1
                try:
                    # One wake-up for the pid and the exec: the pid is sent just
                    # before it, and woken by the pid the worker mostly waited
                    # again for the end of file (on a loaded host, taking the
                    # CPU from the exec it waits for).
                    await _peer_closed(mine)
                    # In kernel mode PID 1's report socket (apart from the job
                    # socket, so that the exec is seen as the job socket's end of
                    # file) comes with the pid.
                    received: list[int] = []
                    pid = await _recv_int(mine, received if self.mode == "kernel" else None)
                    if received:
                        # Family and type given: two calls fewer than looking them up.
                        report = socket.socket(
                            socket.AF_UNIX, socket.SOCK_STREAM, 0, received.pop(0)
                        )
                    for fd in received:
                        os.close(fd)
                    if pid is None:
                        raise ServerUnavailable("the fork server dropped the request")
                    direct.add(pid)
                finally:
                    handshakes -= 1
                child = Child(
                    pid, os.pidfd_open(pid), out_r, err_r, report, self, self.mode == "kernel"
                )
                report = None
                child.cgroup, group = group, None
                failed = await _recv_int(mine)
                if failed:
                    await child.wait()
                    await child.reaped()
                    child.drop_namespace()
                    direct.discard(pid)
                    child.close_pipes()
                    if child.cgroup is not None:
                        _cgroup.release(child.cgroup)
                    raise OSError(failed, os.strerror(failed))
            assert child is not None
            return child
        finally:
            mine.close()
            if report is not None:
                report.close()
            if child is None:
                os.close(out_r)
                os.close(err_r)
                if group is not None:
                    _cgroup.release(group)


class Sealed:
    """``data`` in a sealed memfd made once, of which each child gets a descriptor
    of its own (:meth:`open`) to read through once: bwrap's ``--seccomp`` reads its
    descriptor to end of file, so one shared offset would serve one run only.

    Raises:
        OSError: the memfd could not be made, written or sealed.
    """

    def __init__(self, data: bytes) -> None:
        fd = os.memfd_create("guild-filter", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            if os.pwrite(fd, data, 0) != len(data):
                raise OSError(errno.EIO, "a short write to a memfd")
            seals = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals | fcntl.F_SEAL_WRITE)
        except BaseException:
            os.close(fd)
            raise
        self._path = f"/proc/self/fd/{fd}"

    def open(self) -> int:
        """A new close-on-exec, read-only descriptor of the data at offset 0, for
        the caller to close: one ``open`` of ``/proc/self/fd/N``, 8-9 us with the
        close on a loaded 2-core VM, where a memfd made and written per run took
        15-16 us (a page allocated, written and freed each time)."""
        return os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)


def _spill(payload: bytes) -> int:
    """A close-on-exec memfd holding ``payload``, for the spare to read (see ``spawn``)."""
    fd = os.memfd_create("guild-request", os.MFD_CLOEXEC)
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.asynccontextmanager
async def _holding(lock: trio.Lock) -> AsyncIterator[None]:
    """``lock`` held; taken without a pass through the scheduler when it is free
    (``Lock.acquire`` always yields once, and a run's start waits for that pass)."""
    try:
        lock.acquire_nowait()
    except trio.WouldBlock:
        await lock.acquire()
    try:
        yield
    finally:
        lock.release()


async def _peer_closed(sock: socket.socket) -> None:
    """Return once the other end of ``sock`` is closed (all it sent is then there):
    the spare's job socket closes at its ``exec``, or when it exits after a failure."""
    poller = select.epoll(1)
    try:
        poller.register(sock.fileno(), select.EPOLLRDHUP)
        while not poller.poll(0):
            await trio.lowlevel.wait_readable(poller)
    finally:
        poller.close()


async def _recv_int(sock: socket.socket, fds: list[int] | None = None) -> int | None:
    """Four bytes from ``sock`` as an int, or None at end of stream; descriptors
    sent with them are appended to ``fds`` (close-on-exec), when given."""
    data = b""
    space = socket.CMSG_SPACE(_INT.size) if fds is not None else 0
    while len(data) < _INT.size:
        try:
            chunk, ancillary, _, _ = sock.recvmsg(
                _INT.size - len(data), space, socket.MSG_CMSG_CLOEXEC
            )
        except BlockingIOError:
            await trio.lowlevel.wait_readable(sock)
            continue
        for level, kind, payload in ancillary:
            if fds is not None and level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                usable = len(payload) - len(payload) % _INT.size
                fds.extend(struct.unpack(f"={usable // _INT.size}i", payload[:usable]))
        if not chunk:
            return None
        data += chunk
    return int(_INT.unpack(data)[0])


# Fork-server handshakes in flight: the child may already have exited before its
# pid is known, so the orphan sweep must not reap zombies meanwhile.
handshakes = 0
_servers: dict[str, ForkServer] = {}
_broken: set[str] = set()
_lock = threading.Lock()


def _close_at_exit() -> None:
    # Stop the helpers with the interpreter rather than leave them to Popen.__del__.
    for running in list(_servers.values()):
        running.close()


atexit.register(_close_at_exit)


def server(
    mode: str = "none", scratch: tuple[int, int] = (0, 0), jobs: str = ""
) -> ForkServer | None:
    """The process's fork server for ``mode`` (``"none"`` or ``"kernel"``; a kernel
    one per ``scratch`` size, which its spares mount before a run asks, and per
    job directory parent ``jobs``, which they prepare as well when given),
    started (or restarted) if needed; None when it cannot run (unisolated runs
    then use the ``preexec_fn`` path; kernel runs cannot start)."""
    if mode in _broken or (mode == "none" and os.environ.get("GUILD_SANDBOX_SPAWN") == "preexec"):
        return None
    key = mode if mode == "none" else f"{mode}:{scratch[0]}:{scratch[1]}:{jobs}"
    running = _servers.get(key)
    if running is not None and running.alive:
        return running
    with _lock:
        running = _servers.get(key)
        if running is not None and running.alive:
            return running
        if running is not None:
            running.close()
            del _servers[key]
        if not (_reaper.become_subreaper() and hasattr(os, "pidfd_open")):
            _broken.add(mode)
            return None
        try:
            running = _servers[key] = ForkServer(mode, scratch, jobs)
        except OSError:
            _broken.add(mode)
            return None
        return running
