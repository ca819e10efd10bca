"""``supervise_processes``: the supervision policy over OS processes.

``guild run --processes N`` runs N copies of the worker command under one
:class:`Supervisor` (one_for_one, permanent children): a child that dies —
even by SIGKILL — is started again with backoff, and too many deaths within
the period make the parent give up (exit code 1).

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


class ChildProcessDied(Exception):
    """A supervised process exited when nobody asked it to."""


def _child_setup() -> None:
    # Runs in the child between fork and exec: die (drain) with the parent.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


OnKilled = Callable[[int], Awaitable[None]]
"""Called with the pid of a child that was SIGKILLed after its grace, once it exited."""


class _Fleet:
    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None,
        grace: float,
        on_killed: OnKilled | None = None,
    ) -> None:
        self.argv = list(argv)
        self.env = dict(env) if env is not None else None
        self.grace = grace
        self.on_killed = on_killed
        self.processes: dict[int, trio.Process] = {}
        self.draining = False
        self.killed = 0
        self.failed_exits = 0

    async def run_child(self, index: int, *, task_status: trio.TaskStatus[None]) -> None:
        process = await trio.lowlevel.open_process(
            self.argv,
            env=self.env,
            start_new_session=True,
            preexec_fn=_child_setup,
            stdin=subprocess.DEVNULL,
        )
        self.processes[index] = process
        _log.info("process_started", index=index, pid=process.pid)
        task_status.started()
        try:
            code = await process.wait()
        finally:
            if process.returncode is None:
                with trio.CancelScope(shield=True):
                    await self._stop(process)
            self.processes.pop(index, None)
        if self.draining:
            if code != 0:
                self.failed_exits += 1
            await trio.sleep_forever()  # drained on purpose: nothing for the policy
        raise ChildProcessDied(f"process {index} (pid {process.pid}) exited with {code}")

    async def _stop(self, process: trio.Process) -> None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        with trio.move_on_after(self.grace):
            await process.wait()
        if process.returncode is None:
            await self._kill(process)

    async def _kill(self, process: trio.Process) -> None:
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
    task_status: trio.TaskStatus[list[int]] = trio.TASK_STATUS_IGNORED,
) -> int:
    """Run ``count`` copies of ``argv`` until SIGTERM/SIGINT; restart any that dies.

    ``on_killed(pid)`` is awaited for each child killed after ``grace`` seconds,
    once it has exited; it should bound its own time and not raise (an error
    would end the supervision).

    Returns:
        0 when every child drained cleanly on a signal; 1 when the supervisor
        gave up, a child had to be killed after ``grace``, or one exited with an
        error while draining.
    """
    fleet = _Fleet(argv, env, grace, on_killed)
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
