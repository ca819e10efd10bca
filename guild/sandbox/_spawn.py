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
"""

from __future__ import annotations

import atexit
import contextlib
import marshal
import os
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import trio

from . import _reaper
from ._forkserver import apply_in_child as apply_in_child

Limits = Sequence[tuple[int, int]]
Identity = tuple[int, int] | None
_SERVER_SCRIPT = str(Path(__file__).with_name("_forkserver.py"))
_INT = struct.Struct("=i")


class ServerUnavailable(Exception):
    """The fork server could not take this run; use the ``preexec_fn`` path."""


class Child:
    """A child started by the fork server: a pid this process waits for, and its pipes."""

    def __init__(self, pid: int, pidfd: int, stdout: int, stderr: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._pidfd = pidfd
        self.stdout = trio.lowlevel.FdStream(stdout)
        self.stderr = trio.lowlevel.FdStream(stderr)

    async def wait(self) -> int:
        if self.returncode is None:
            await trio.lowlevel.wait_readable(self._pidfd)
            self._reap()
        assert self.returncode is not None
        return self.returncode

    def _reap(self) -> None:
        try:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            self.returncode = -9
        os.close(self._pidfd)
        self._pidfd = -1

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await self.stdout.aclose()
            await self.stderr.aclose()


class ForkServer:
    """One per worker process, started on first use; restarted if it dies."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-I", "-S", "-B", _SERVER_SCRIPT, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                close_fds=True,
            )
        finally:
            theirs.close()
        self._ctl = ours
        self._pid = os.getpid()
        ours.settimeout(10)
        try:
            if ours.recv(16) != b"ready":
                raise OSError("fork server did not start")
        except OSError:
            self.close()
            raise
        ours.setblocking(False)

    @property
    def alive(self) -> bool:
        return self._pid == os.getpid() and self._process.poll() is None

    def close(self) -> None:
        self._ctl.close()
        if self._pid != os.getpid():
            return  # inherited through a fork: the server is the parent's
        with contextlib.suppress(OSError):
            self._process.kill()
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            self._process.wait(timeout=5)

    async def spawn(
        self,
        argv: Sequence[str],
        env: dict[str, str],
        cwd: str,
        limits: Limits,
        identity: Identity,
        direct: set[int],
    ) -> Child:
        """Start ``argv``; the pid is in ``direct`` before it can exit.

        Raises:
            ServerUnavailable: the server is gone (nothing was started).
            OSError: the child could not ``exec`` (or apply a limit); nothing runs.
        """
        global handshakes
        payload = marshal.dumps((list(argv), env, cwd, [tuple(x) for x in limits], identity))
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        child: Child | None = None
        try:
            try:
                while True:
                    try:
                        socket.send_fds(self._ctl, [payload], [theirs.fileno(), out_w, err_w])
                        break
                    except BlockingIOError:
                        await trio.sleep(0.001)
            except OSError as exc:
                raise ServerUnavailable(str(exc)) from exc
            finally:
                theirs.close()
                os.close(out_w)
                os.close(err_w)
            # A spare has the request (or it was dropped, which ends the stream):
            # finish the handshake whatever happens to this task meanwhile.
            with trio.CancelScope(shield=True):
                mine.setblocking(False)
                # The child may exit before its pid is known here; while a
                # handshake is in flight the orphan sweep reaps no zombie, so the
                # pid cannot be reused under us.
                handshakes += 1
                try:
                    pid = await _recv_int(mine)
                    if pid is None:
                        raise ServerUnavailable("the fork server dropped the request")
                    direct.add(pid)
                finally:
                    handshakes -= 1
                child = Child(pid, os.pidfd_open(pid), out_r, err_r)
                failed = await _recv_int(mine)
                if failed is not None:
                    await child.wait()
                    direct.discard(pid)
                    await child.aclose()
                    raise OSError(failed, os.strerror(failed))
            assert child is not None
            return child
        finally:
            mine.close()
            if child is None:
                os.close(out_r)
                os.close(err_r)


async def _recv_int(sock: socket.socket) -> int | None:
    """Four bytes from ``sock`` as an int, or None at end of stream."""
    data = b""
    while len(data) < _INT.size:
        try:
            chunk = sock.recv(_INT.size - len(data))
        except BlockingIOError:
            await trio.lowlevel.wait_readable(sock)
            continue
        if not chunk:
            return None
        data += chunk
    return int(_INT.unpack(data)[0])


# Fork-server handshakes in flight: the child may already have exited before its
# pid is known, so the orphan sweep must not reap zombies meanwhile.
handshakes = 0
_server: ForkServer | None = None
_broken = False
_lock = threading.Lock()


def _close_at_exit() -> None:
    # Stop the helper with the interpreter rather than leave it to Popen.__del__.
    if _server is not None:
        _server.close()


atexit.register(_close_at_exit)


def server() -> ForkServer | None:
    """The process's fork server, started (or restarted) if needed; None to use preexec."""
    global _server, _broken
    if _broken or os.environ.get("GUILD_SANDBOX_SPAWN") == "preexec":
        return None
    if _server is not None and _server.alive:
        return _server
    with _lock:
        if _server is not None and _server.alive:
            return _server
        if _server is not None:
            _server.close()
            _server = None
        if not (_reaper.become_subreaper() and hasattr(os, "pidfd_open")):
            _broken = True
            return None
        try:
            _server = ForkServer()
        except OSError:
            _broken = True
            return None
        return _server
