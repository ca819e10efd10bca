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
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence

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


class ChildProcessDied(Exception):
    """A supervised process exited when nobody asked it to."""


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


def _spawn(argv: list[str], env: Mapping[str, str]) -> _Child:
    # Blocks the Trio thread for the fork and exec (milliseconds): on purpose, see _Child.
    return _Child(
        subprocess.Popen(
            argv,
            env=env,
            start_new_session=True,
            preexec_fn=_child_setup,
            stdin=subprocess.DEVNULL,
        )
    )


OnKilled = Callable[[int], Awaitable[None]]
"""Called with the pid of a child that was SIGKILLed after its grace, once it exited."""
OnStarted = Callable[[int, int], None]
"""Called with a child's index and pid each time that index is started (again)."""
OnExited = Callable[[int, int, int], None]
"""Called with a child's index, pid and exit code once it has exited, whatever the cause."""


class _Fleet:
    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None,
        grace: float,
        on_killed: OnKilled | None = None,
        on_started: OnStarted | None = None,
        on_exited: OnExited | None = None,
    ) -> None:
        self.on_started = on_started
        self.on_exited = on_exited
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
        process = _spawn(self.argv, env)
        self.processes[index] = process
        _log.info("process_started", index=index, pid=process.pid)
        if self.on_started is not None:
            self.on_started(index, process.pid)
        task_status.started()
        try:
            code = await process.wait()
        finally:
            if process.returncode is None:
                with trio.CancelScope(shield=True):
                    await self._stop(process)
            self.processes.pop(index, None)
            if self.on_exited is not None and process.returncode is not None:
                self.on_exited(index, process.pid, process.returncode)
        if self.draining:
            if code != 0:
                self.failed_exits += 1
            await trio.sleep_forever()  # drained on purpose: nothing for the policy
        raise ChildProcessDied(f"process {index} (pid {process.pid}) exited with {code}")

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
    task_status: trio.TaskStatus[list[int]] = trio.TASK_STATUS_IGNORED,
) -> int:
    """Run ``count`` copies of ``argv`` until SIGTERM/SIGINT; restart any that dies.

    ``on_killed(pid)`` is awaited for each child killed after ``grace`` seconds,
    once it has exited; it should bound its own time and not raise (an error
    would end the supervision). ``on_started(index, pid)`` and
    ``on_exited(index, pid, code)`` are called (synchronously; they must not
    raise) as each child starts and ends, so the caller can keep a view of the
    fleet (``guild run`` answers ``/health`` for every process from it).

    Returns:
        0 when every child drained cleanly on a signal; 1 when the supervisor
        gave up, a child had to be killed after ``grace``, or one exited with an
        error while draining.
    """
    fleet = _Fleet(argv, env, grace, on_killed, on_started, on_exited)
    supervisor = Supervisor(
        "processes",
        strategy=Strategy.ONE_FOR_ONE,
        max_restarts=max_restarts,
        period=period,
        backoff=backoff or Backoff(initial=0.5, maximum=10.0),
    )
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        try:
            with unwrap(GaveUp):
                await _run_fleet(fleet, supervisor, count, signals, task_status)
        except GaveUp as error:
            _log.error("gave_up", error=str(error))
            with trio.CancelScope(shield=True):
                await fleet.drain()
            return 1
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
        async for signum in signals:
            _log.info(
                "draining", signal=signal.Signals(signum).name, processes=len(fleet.processes)
            )
            await fleet.drain()
            break
        nursery.cancel_scope.cancel(reason="drained")


def child_pids() -> list[int]:
    """This process's children (for tests and tools)."""
    pids: list[int] = []
    for task in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError), open(f"/proc/self/task/{task}/children") as handle:
            pids += [int(p) for p in handle.read().split()]
    return pids
