"""``supervise_processes``: the supervision policy over OS processes.

``guild run --processes N`` runs N copies of the worker command under one
:class:`Supervisor` (one_for_one, permanent children): a child that dies —
even by SIGKILL — is started again with backoff, and too many deaths within
the period make the parent give up (exit code 1). Each child finds its index
(kept across its restarts) in ``$GUILD_PROCESS_INDEX``.

Signals: children run in sessions of their own, so a terminal's Ctrl-C reaches
only the parent, which forwards one SIGTERM to every child (each drains: stops
claiming, finishes or hands back its jobs) and waits up to ``grace`` seconds
before SIGKILL. Each child also gets SIGTERM if the parent itself dies
(``PR_SET_PDEATHSIG``), so no worker outlives its supervisor.

A child killed after its grace dies holding jobs. ``on_killed(pid)`` runs once
it is gone, so the caller can hand those back at once (``guild run`` releases
every job its consumers held, uncounted) instead of leaving them to their leases.

Start-up reports (with ``on_ready``): each child gets the write end of a pipe
(its number in ``$GUILD_STARTUP_FD``) and writes one line there: that it is
ready, or why it cannot start (:class:`StartupReport`). The parent spawns at
once and imports nothing of the app: a child that says it cannot start before
any child has said it is ready stops the fleet, without a restart, with
:class:`StartFailed` (a bad app or an unreachable broker fails the same way in
every child, and again at every restart). A child that dies without a word is
restarted as before, and once one child was ready a failed start is a death too.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import signal
import subprocess
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Mapping,
    MutableMapping,
    Sequence,
)
from typing import Any

import structlog
import trio

from .._errors import GaveUp
from .._groups import unwrap
from ._policy import Backoff, Restart, Strategy
from ._supervisor import ChildSpec, Supervisor

_log = structlog.get_logger("guild.supervision")
_PR_SET_PDEATHSIG = 1
INDEX_VARIABLE = "GUILD_PROCESS_INDEX"
"""Set in each child's environment to its index in the fleet (0 to count - 1)."""
STARTUP_FD_VARIABLE = "GUILD_STARTUP_FD"
"""Set (with ``on_ready``) in each child's environment to the pipe its start-up report goes to."""


def drain_signals() -> tuple[signal.Signals, ...]:
    """The signals that drain a run: SIGTERM, SIGINT, and SIGHUP unless it is ignored.

    A hang-up (the terminal or SSH session of a foreground ``guild run`` closed)
    would otherwise kill the process at once, its jobs left to their leases. One
    started under ``nohup`` ignores SIGHUP, and keeps ignoring it.
    """
    found = [signal.SIGTERM, signal.SIGINT]
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        found.append(signal.SIGHUP)
    return tuple(found)


class ChildProcessDied(Exception):
    """A supervised process exited when nobody asked it to."""


class StartFailed(Exception):
    """A child said it cannot start before any child had started; the fleet was stopped.

    Attributes:
        index: the child's index.
        pid: its pid.
        report: the ``failed`` value it wrote (see :class:`StartupReport`).
    """

    def __init__(self, index: int, pid: int, report: Any) -> None:
        super().__init__(f"process {index} (pid {pid}) could not start")
        self.index = index
        self.pid = pid
        self.report = report


class StartupReport:
    """A child's side of the start-up report: one JSON line, then the pipe is closed.

    ``{"ready": value}`` once it has started, or ``{"failed": value}`` when it
    cannot; each value is the caller's own (JSON-ready). Only the first call
    writes anything.
    """

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str] | None = None) -> StartupReport | None:
        """The report this process owes its supervisor (None: it has no supervisor waiting).

        The variable is taken out of the environment, so that processes this one
        starts do not inherit it.
        """
        value = (os.environ if environ is None else environ).pop(STARTUP_FD_VARIABLE, None)
        if value is None or not (value.isascii() and value.isdigit()):
            return None
        fd = int(value)
        try:
            os.set_inheritable(fd, False)
        except (OSError, OverflowError):  # no such descriptor here: nobody to report to
            return None
        return cls(fd)

    @property
    def pending(self) -> bool:
        """Nothing was written yet."""
        return self._fd is not None

    def ready(self, value: Any) -> None:
        self._write({"ready": value})

    def failed(self, value: Any) -> None:
        self._write({"failed": value})

    def _write(self, message: dict[str, Any]) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        data = (json.dumps(message, sort_keys=True) + "\n").encode()
        try:
            while data:
                data = data[os.write(fd, data) :]
        except OSError:  # the supervisor is gone: there is no one left to tell
            pass
        finally:
            os.close(fd)


class _Child:
    """A child started from the Trio thread itself, and awaited through a pidfd.

    ``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child ends, not
    the process: ``trio.lowlevel.open_process`` forks in a worker thread, which
    Trio's thread cache retires after 10 idle seconds, and every child then got
    SIGTERM 10 s after its start. Forked from the thread that runs the
    supervisor, the signal comes only when the supervisor is gone.
    """

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    async def wait(self) -> int:
        if self._popen.returncode is None:
            # Readable once the child exits; it stays a zombie (its pid ours) until reaped.
            fd = os.pidfd_open(self.pid)
            try:
                await trio.lowlevel.wait_readable(fd)
            finally:
                os.close(fd)
        return self._popen.wait()

    def send_signal(self, signum: int) -> None:
        self._popen.send_signal(signum)

    def kill(self) -> None:
        self._popen.kill()


def _child_setup() -> None:
    # Runs in the child between fork and exec: die (drain) with the parent.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _spawn(argv: list[str], env: Mapping[str, str], pass_fds: Sequence[int] = ()) -> _Child:
    # Blocks the Trio thread for the fork and exec (milliseconds): on purpose, see _Child.
    return _Child(
        subprocess.Popen(
            argv,
            env=env,
            start_new_session=True,
            preexec_fn=_child_setup,
            stdin=subprocess.DEVNULL,
            pass_fds=pass_fds,
        )
    )


OnKilled = Callable[[int], Awaitable[None]]
"""Called with the pid of a child that was SIGKILLed after its grace, once it exited."""
OnStarted = Callable[[int, int], None]
"""Called with a child's index and pid each time that index is started (again)."""
OnExited = Callable[[int, int, int], None]
"""Called with a child's index, pid and exit code once it has exited, whatever the cause."""
OnReady = Callable[[int, int, Any], None]
"""Called with a child's index, pid and the ``ready`` value of its start-up report."""


class _Hearing:
    """The parent's end of one child's start-up report pipe (non-blocking)."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self.heard = False  # the line was whole, or the child closed the pipe
        self._data = bytearray()
        self._closed = False

    @property
    def silent(self) -> bool:
        """The child wrote nothing (it died before it could, or closed the pipe)."""
        return not self._data

    def take(self) -> bool:
        """Read what is there; True once (the line is whole, or the pipe ended) to act on it."""
        if self.heard or self._closed:
            return False
        while b"\n" not in self._data:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                return False
            if not chunk:
                break
            self._data += chunk
        self.heard = True
        return True

    def message(self) -> Any:
        line, newline, _ = bytes(self._data).partition(b"\n")
        if not newline:
            return None  # closed without a whole line: no report
        try:
            return json.loads(line)
        except ValueError:
            return None

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self.fd)


class _Fleet:
    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None,
        grace: float,
        on_killed: OnKilled | None = None,
        on_started: OnStarted | None = None,
        on_exited: OnExited | None = None,
        on_ready: OnReady | None = None,
    ) -> None:
        self.on_started = on_started
        self.on_exited = on_exited
        self.on_ready = on_ready
        self.any_ready = False
        self.start_failed: StartFailed | None = None
        self.start_failed_event = trio.Event()
        self.argv = list(argv)
        self.env = dict(env) if env is not None else None
        self.grace = grace
        self.on_killed = on_killed
        self.processes: dict[int, _Child] = {}
        self.draining = False
        self.killed = 0
        self.failed_exits = 0

    async def run_child(self, index: int, *, task_status: trio.TaskStatus[None]) -> None:
        # Each child knows its place in the fleet (a restart keeps it), for
        # whatever it names after it (`guild run`: its private HTTP socket).
        env = {**(self.env if self.env is not None else os.environ), INDEX_VARIABLE: str(index)}
        await trio.lowlevel.checkpoint()
        if self.on_ready is None:
            process = _spawn(self.argv, env)
            hearing = None
        else:
            reader, writer = os.pipe()
            try:
                process = _spawn(self.argv, {**env, STARTUP_FD_VARIABLE: str(writer)}, (writer,))
            except BaseException:
                os.close(reader)
                raise
            finally:
                os.close(writer)
            hearing = _Hearing(reader)
        self.processes[index] = process
        # With start-up reports, "started" is logged when the child says it is:
        # a fleet that cannot start says only why (one line), not that it began.
        if hearing is None:
            _log.info("process_started", index=index, pid=process.pid)
        if self.on_started is not None:
            self.on_started(index, process.pid)
        task_status.started()
        try:
            if hearing is None:
                code = await process.wait()
            else:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._listen, hearing, index, process.pid)
                    code = await process.wait()
                    nursery.cancel_scope.cancel(reason="the child exited")
                # Written before it exited, perhaps not read yet.
                if hearing.take():
                    self._heard(hearing, index, process.pid)
        finally:
            if hearing is not None:
                hearing.close()
            if process.returncode is None:
                with trio.CancelScope(shield=True):
                    await self._stop(process)
            self.processes.pop(index, None)
            if self.on_exited is not None and process.returncode is not None:
                self.on_exited(index, process.pid, process.returncode)
        if self.draining:
            # Ended by the drain's own SIGTERM, not drained by it: the child was
            # still starting (its drain handler, set before any claim, was not up),
            # so it held no job. A clean stop, like a drained one.
            if code not in (0, -signal.SIGTERM):
                self.failed_exits += 1
            await trio.sleep_forever()  # drained on purpose: nothing for the policy
        if self.start_failed is not None and self.start_failed.pid == process.pid:
            self.start_failed_event.set()
            await trio.sleep_forever()  # the fleet stops: nothing for the policy
        raise ChildProcessDied(f"process {index} (pid {process.pid}) exited with {code}")

    async def _listen(self, hearing: _Hearing, index: int, pid: int) -> None:
        while not hearing.heard:
            await trio.lowlevel.wait_readable(hearing.fd)
            if hearing.take():
                self._heard(hearing, index, pid)

    def _heard(self, hearing: _Hearing, index: int, pid: int) -> None:
        """Act on child ``index``'s report, once its line is whole."""
        message = hearing.message()
        if isinstance(message, dict) and "ready" in message:
            self.any_ready = True
            _log.info("process_started", index=index, pid=pid)
            if self.on_ready is not None:
                self.on_ready(index, pid, message["ready"])
        elif isinstance(message, dict) and "failed" in message:
            if not self.any_ready and self.start_failed is None:
                self.start_failed = StartFailed(index, pid, message["failed"])
        elif not hearing.silent:
            _log.warning("bad_startup_report", index=index, pid=pid)

    async def _stop(self, process: _Child) -> None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        with trio.move_on_after(self.grace):
            await process.wait()
        if process.returncode is None:
            await self._kill(process)

    async def _kill(self, process: _Child) -> None:
        self.killed += 1
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        if self.on_killed is not None:
            await self.on_killed(process.pid)

    async def drain(self) -> None:
        self.draining = True
        live = list(self.processes.values())
        for process in live:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        with trio.move_on_after(self.grace):
            for process in live:
                await process.wait()
        for process in live:
            if process.returncode is None:
                await self._kill(process)


async def supervise_processes(
    argv: Sequence[str],
    count: int,
    *,
    grace: float = 30.0,
    max_restarts: int = 5,
    period: float = 30.0,
    backoff: Backoff | None = None,
    env: Mapping[str, str] | None = None,
    on_killed: OnKilled | None = None,
    on_started: OnStarted | None = None,
    on_exited: OnExited | None = None,
    on_ready: OnReady | None = None,
    task_status: trio.TaskStatus[list[int]] = trio.TASK_STATUS_IGNORED,
) -> int:
    """Run ``count`` copies of ``argv`` until SIGTERM/SIGINT/SIGHUP; restart any that dies.

    ``on_killed(pid)`` is awaited for each child killed after ``grace`` seconds,
    once it has exited; it should bound its own time and not raise (an error
    would end the supervision). ``on_started(index, pid)`` and
    ``on_exited(index, pid, code)`` are called (synchronously; they must not
    raise) as each child starts and ends, so the caller can keep a view of the
    fleet (``guild run`` answers ``/health`` for every process from it).

    With ``on_ready``, each child owes a start-up report (see the module
    docstring and :class:`StartupReport`); ``on_ready(index, pid, value)`` is
    called (synchronously; it must not raise) as each child says it is ready.

    Returns:
        0 when every child drained cleanly on a signal; 1 when the supervisor
        gave up, a child had to be killed after ``grace``, or one exited with an
        error while draining.

    Raises:
        StartFailed: (with ``on_ready``) a child said it cannot start before any
            child was ready; the others were stopped as on a signal.
    """
    fleet = _Fleet(argv, env, grace, on_killed, on_started, on_exited, on_ready)
    supervisor = Supervisor(
        "processes",
        strategy=Strategy.ONE_FOR_ONE,
        max_restarts=max_restarts,
        period=period,
        backoff=backoff or Backoff(initial=0.5, maximum=10.0),
    )
    with trio.open_signal_receiver(*drain_signals()) as signals:
        try:
            with unwrap(GaveUp):
                await _run_fleet(fleet, supervisor, count, signals, task_status)
        except GaveUp as error:
            _log.error("gave_up", error=str(error))
            with trio.CancelScope(shield=True):
                await fleet.drain()
            return 1
    if fleet.start_failed is not None:
        raise fleet.start_failed
    failed = fleet.killed + fleet.failed_exits
    _log.info("stopped", killed=fleet.killed, failed_exits=fleet.failed_exits)
    return 0 if failed == 0 else 1


async def _run_fleet(
    fleet: _Fleet,
    supervisor: Supervisor,
    count: int,
    signals: AsyncIterator[int],
    task_status: trio.TaskStatus[list[int]],
) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        for index in range(count):
            await supervisor.start_child(
                ChildSpec(
                    name=f"process-{index}",
                    start=functools.partial(fleet.run_child, index),
                    restart=Restart.PERMANENT,
                )
            )
        task_status.started([p.pid for p in fleet.processes.values()])
        async with trio.open_nursery() as waiting:
            waiting.start_soon(_until_signal, fleet, signals, waiting.cancel_scope)
            waiting.start_soon(_until_start_failed, fleet, waiting.cancel_scope)
        await fleet.drain()
        nursery.cancel_scope.cancel(reason="drained")


async def _until_signal(fleet: _Fleet, signals: AsyncIterator[int], done: trio.CancelScope) -> None:
    async for signum in signals:
        _log.info("draining", signal=signal.Signals(signum).name, processes=len(fleet.processes))
        break
    done.cancel(reason="a signal asked the fleet to stop")


async def _until_start_failed(fleet: _Fleet, done: trio.CancelScope) -> None:
    await fleet.start_failed_event.wait()
    done.cancel(reason="a child cannot start")


def child_pids() -> list[int]:
    """This process's children (for tests and tools)."""
    pids: list[int] = []
    for task in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError), open(f"/proc/self/task/{task}/children") as handle:
            pids += [int(p) for p in handle.read().split()]
    return pids
