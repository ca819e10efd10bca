"""Erlang/OTP's supervisor_SUITE cases, on guild's Supervisor, in virtual time.

Each test names the OTP case it follows. The expected outcomes are written out
from OTP's documented semantics (the `supervisor` manual), not read from guild:

* a child whose start fails is the caller's error: ``start_child`` returns
  ``{error, Reason}``, and at init the supervisor fails; nothing is restarted or
  counted;
* ``start_child`` with an id in use returns ``already_started``/``already_present``
  and changes nothing;
* a supervisor that exceeds its intensity terminates its children and exits
  with ``shutdown``; a transient parent does not restart a child that exits
  with ``shutdown``, a permanent one does;
* a temporary child is never restarted and, once it ends (or a sibling's
  restart stops it), its spec is gone;
* intensity must be ``MaxR >= 0`` and ``MaxT > 0``;
* shutdown stops every child, latest started first, whatever it is doing.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from guild import ChildEvent, ChildSpec, GaveUp, Restart, Strategy, Supervisor
from guild.supervision import Backoff

NO_BACKOFF = Backoff(initial=0.0, jitter=0.0)
Start = Callable[..., Awaitable[None]]


def stays_up(log: list[str], name: str) -> Start:
    """Comes up and stays until stopped; logs its start and its stop."""

    async def start(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        log.append(f"start {name}")
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            log.append(f"stop {name}")

    return start


def fails_to_start(log: list[str], name: str) -> Start:
    async def start(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        log.append(f"start {name}")
        raise ConnectionRefusedError(f"{name}: no database")

    return start


def up_then_crash(log: list[str], name: str, after: float) -> Start:
    async def start(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        log.append(f"start {name}")
        task_status.started()
        try:
            await trio.sleep(after)
        finally:
            log.append(f"end {name}")
        raise RuntimeError(f"{name} crashed")

    return start


def slow_to_start(log: list[str], name: str, connect: float) -> Start:
    """Connects for ``connect`` seconds before it reports started."""

    async def start(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        log.append(f"start {name}")
        try:
            await trio.sleep(connect)
        except trio.Cancelled:
            log.append(f"cancelled while starting {name}")
            raise
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            log.append(f"stop {name}")

    return start


class TestStart:
    async def test_sup_start_fail(self, autojump_clock: trio.testing.MockClock) -> None:
        """sup_start_fail: a child that fails at init fails the supervisor; the
        children started before it are stopped (latest first), later ones never start."""
        log: list[str] = []
        supervisor = Supervisor(
            "top",
            children=[
                ChildSpec(name="a", start=stays_up(log, "a")),
                ChildSpec(name="b", start=stays_up(log, "b")),
                ChildSpec(name="bad", start=fails_to_start(log, "bad")),
                ChildSpec(name="never", start=stays_up(log, "never")),
            ],
        )
        with pytest.raises(ConnectionRefusedError, match="bad: no database") as caught:
            await supervisor.run()
        assert caught.value.__notes__ == ["child 'bad' of supervisor 'top' failed its first start"]
        assert log == ["start a", "start b", "start bad", "stop b", "stop a"]
        assert {n: s.state for n, s in supervisor.snapshot().items()} == {
            "a": "stopped",
            "b": "stopped",
        }

    async def test_start_child_error_return(self, autojump_clock: trio.testing.MockClock) -> None:
        """child_adm / start_child error return: the error goes to the caller; the
        child is not restarted, not kept, and counts nothing against intensity."""
        log: list[str] = []
        supervisor = Supervisor("top", max_restarts=0, backoff=NO_BACKOFF)
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            with pytest.raises(ConnectionRefusedError):
                await supervisor.start_child(ChildSpec(name="db", start=fails_to_start(log, "db")))
            await trio.sleep(100)
            assert log == ["start db"]
            assert supervisor.snapshot() == {}
            assert supervisor.policy.restarts_in_period(trio.current_time()) == 0
            # max_restarts=0: a counted restart would have made it give up. And
            # the name is free again.
            await supervisor.start_child(ChildSpec(name="db", start=stays_up(log, "db")))
            assert supervisor.snapshot()["db"].state == "running"
            nursery.cancel_scope.cancel()
        assert log == ["start db", "start db", "stop db"]

    async def test_duplicate_start_child_changes_nothing(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """child_adm: start_child with an id in use is refused (already_started),
        and the running child's spec is unchanged: its restart runs its own start."""
        log: list[str] = []
        supervisor = Supervisor("top", backoff=NO_BACKOFF)
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            await supervisor.start_child(ChildSpec(name="w", start=up_then_crash(log, "w", 10)))
            with pytest.raises(ValueError, match=r"child named 'w' already \(running\)"):
                await supervisor.start_child(
                    ChildSpec(name="w", start=stays_up(log, "impostor"), restart=Restart.TEMPORARY)
                )
            await trio.sleep(15)  # w crashed at 10 and was restarted
            nursery.cancel_scope.cancel()
        assert log == ["start w", "end w", "start w", "end w"]

    async def test_duplicate_children_at_init_are_refused(self) -> None:
        async def start(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            task_status.started()

        with pytest.raises(ValueError, match=r"children named \['x'\] more than once"):
            Supervisor("top", children=[ChildSpec(name="x", start=start)] * 2)


class TestSupFlags:
    """sup_flags: intensity must be MaxR >= 0 and MaxT > 0."""

    @pytest.mark.parametrize(
        ("max_restarts", "period", "named"),
        [(1, 0.0, "period"), (1, -5.0, "period"), (-1, 5.0, "max_restarts")],
    )
    def test_bad_intensity(self, max_restarts: int, period: float, named: str) -> None:
        with pytest.raises(ValueError, match=f"'{named}' must be"):
            Supervisor("top", max_restarts=max_restarts, period=period)

    async def test_many_crashes_in_an_instant_give_up(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """The smallest period still counts: four crashes in no time exceed 3."""
        log: list[str] = []
        supervisor = Supervisor(
            "top",
            max_restarts=3,
            period=1e-9,
            backoff=NO_BACKOFF,
            children=[ChildSpec(name="c", start=up_then_crash(log, "c", 0.0))],
        )
        with pytest.raises(GaveUp, match="4 restarts within 1e-09s"):
            await supervisor.run()
        assert log.count("start c") == 4


class TestEscalation:
    @pytest.mark.parametrize("strategy", list(Strategy))
    async def test_escalation_raises_gave_up_itself(
        self, autojump_clock: trio.testing.MockClock, strategy: Strategy
    ) -> None:
        """one_for_one_escalation and friends: intensity exceeded, every child is
        stopped latest first, and `except GaveUp` catches it (no group around it)."""
        log: list[str] = []
        supervisor = Supervisor(
            "top",
            strategy=strategy,
            max_restarts=1,
            period=100.0,
            backoff=NO_BACKOFF,
            children=[
                ChildSpec(name="a", start=stays_up(log, "a")),
                ChildSpec(name="c", start=up_then_crash(log, "c", 5.0)),
                ChildSpec(name="z", start=stays_up(log, "z")),
            ],
        )
        try:
            await supervisor.run()
        except GaveUp as error:
            gave_up = error
        assert gave_up.supervisor == "top" and gave_up.restarts == 2
        assert trio.current_time() == 10.0
        restarted = {
            Strategy.ONE_FOR_ONE: ["start c"],
            Strategy.ONE_FOR_ALL: ["stop z", "stop a", "start a", "start c", "start z"],
            Strategy.REST_FOR_ONE: ["stop z", "start c", "start z"],
        }[strategy]
        first = ["start a", "start c", "start z", "end c"]
        # After the give-up, every child still running is stopped, latest first.
        assert log == [*first, *restarted, "end c", "stop z", "stop a"]
        assert {s.state for s in supervisor.snapshot().values()} <= {"stopped", "gave_up"}

    async def test_transient_child_supervisor_that_gave_up_is_not_restarted(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """transient_shutdown: a child supervisor that gives up exits as `shutdown`;
        its transient parent lets it go and carries on."""
        log: list[str] = []
        events: list[ChildEvent] = []
        inner = Supervisor(
            "inner",
            max_restarts=0,
            children=[ChildSpec(name="c", start=up_then_crash(log, "c", 1.0))],
        )
        outer = Supervisor("outer", max_restarts=0, on_event=events.append)
        async with trio.open_nursery() as nursery:
            await nursery.start(outer.run)
            await outer.start_child(
                ChildSpec(name="inner", start=inner.run, restart=Restart.TRANSIENT)
            )
            await outer.start_child(ChildSpec(name="sibling", start=stays_up(log, "sibling")))
            await trio.sleep(50)
            assert set(outer.snapshot()) == {"sibling"}
            assert outer.snapshot()["sibling"].state == "running"
            nursery.cancel_scope.cancel()
        assert log == ["start c", "start sibling", "end c", "stop sibling"]
        (exited,) = [e for e in events if e.child == "inner" and e.state == "exited"]
        assert exited.detail is not None and exited.detail.startswith("shutdown: GaveUp")
        assert not [e for e in events if e.state == "crashed"]

    async def test_permanent_child_supervisor_that_gave_up_is_restarted(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """permanent_shutdown: a permanent child is restarted after `shutdown` too."""
        log: list[str] = []
        starts = 0

        async def inner_run(
            *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
        ) -> None:
            nonlocal starts
            starts += 1
            child = up_then_crash(log, f"c{starts}", 1.0) if starts == 1 else stays_up(log, "c2")
            inner = Supervisor("inner", max_restarts=0, children=[ChildSpec(name="c", start=child)])
            await inner.run(task_status=task_status)

        outer = Supervisor("outer", max_restarts=1, backoff=NO_BACKOFF)
        async with trio.open_nursery() as nursery:
            await nursery.start(outer.run)
            await outer.start_child(ChildSpec(name="inner", start=inner_run))
            await trio.sleep(50)
            assert outer.snapshot()["inner"].state == "running"
            nursery.cancel_scope.cancel()
        assert log == ["start c1", "end c1", "start c2", "stop c2"]


class TestTemporary:
    async def test_temporary_bystander(self, autojump_clock: trio.testing.MockClock) -> None:
        """temporary_bystander: one_for_all stops a temporary sibling for good; it
        is not started again and its spec is gone."""
        log: list[str] = []
        supervisor = Supervisor("top", strategy=Strategy.ONE_FOR_ALL, backoff=NO_BACKOFF)
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            await supervisor.start_child(
                ChildSpec(name="temp", start=stays_up(log, "temp"), restart=Restart.TEMPORARY)
            )
            await supervisor.start_child(ChildSpec(name="p", start=up_then_crash(log, "p", 5.0)))
            await trio.sleep(7)
            assert set(supervisor.snapshot()) == {"p"}
            # The name is free: a new temporary child of that name may start.
            await supervisor.start_child(
                ChildSpec(name="temp", start=stays_up(log, "temp2"), restart=Restart.TEMPORARY)
            )
            nursery.cancel_scope.cancel()
        assert log[:5] == ["start temp", "start p", "end p", "stop temp", "start p"]
        assert log[5:] == ["start temp2", "stop temp2", "end p"]


class TestShutdownNeverHangs:
    """Cancelling a supervisor at any point of a child's start returns."""

    async def test_cancelled_while_an_init_child_connects(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        log: list[str] = []
        supervisor = Supervisor(
            "top",
            children=[
                ChildSpec(name="a", start=stays_up(log, "a")),
                ChildSpec(name="slow", start=slow_to_start(log, "slow", connect=10_000)),
            ],
        )
        with trio.move_on_after(3):
            await supervisor.run()
        assert trio.current_time() == 3.0
        assert log == ["start a", "start slow", "cancelled while starting slow", "stop a"]

    async def test_cancelled_while_start_child_waits(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        log: list[str] = []
        supervisor = Supervisor("top")
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            nursery.start_soon(
                supervisor.start_child,
                ChildSpec(name="slow", start=slow_to_start(log, "slow", connect=10_000)),
            )
            await trio.sleep(2)
            nursery.cancel_scope.cancel()
        assert trio.current_time() == 2.0
        assert log == ["start slow", "cancelled while starting slow"]

    async def test_cancelled_during_a_rest_for_one_restart(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """The restarted children connect slowly; shutdown comes mid-restart."""
        log: list[str] = []
        connects = crashes = 0

        async def crasher(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            nonlocal crashes
            crashes += 1
            once = up_then_crash(log, "crasher", 5.0) if crashes == 1 else stays_up(log, "crasher")
            await once(task_status=task_status)

        async def db(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            nonlocal connects
            connects += 1
            # The first connect is quick; after the crash the database is slow.
            await slow_to_start(log, "db", connect=1 if connects == 1 else 10_000)(
                task_status=task_status
            )

        supervisor = Supervisor(
            "top",
            strategy=Strategy.REST_FOR_ONE,
            backoff=NO_BACKOFF,
            children=[
                ChildSpec(name="crasher", start=crasher),
                ChildSpec(name="db", start=db),
            ],
        )
        with trio.move_on_after(20):
            await supervisor.run()
        assert trio.current_time() == 20.0
        assert log == [
            "start crasher",
            "start db",
            "end crasher",
            "stop db",
            "start crasher",
            "start db",
            "cancelled while starting db",
            "stop crasher",
        ]

    async def test_a_child_that_overstays_its_grace_holds_the_supervisor_up(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """The documented difference: Trio cannot kill a task, so a child that
        ignores its cancellation for 50 s holds up its supervisor for those 50 s."""
        log: list[str] = []

        async def stubborn(
            *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
        ) -> None:
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True):
                    await trio.sleep(50)
                log.append("stubborn finally left")

        supervisor = Supervisor(
            "top",
            children=[ChildSpec(name="stubborn", start=stubborn, shutdown_grace=5.0)],
        )
        with trio.move_on_after(10):
            await supervisor.run()
        assert log == ["stubborn finally left"]
        assert trio.current_time() == 60.0
        assert supervisor.snapshot()["stubborn"].state == "stopped"


class TestEndingUnasked:
    async def test_a_leaked_cancellation_is_a_crash(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A child ended by a Cancelled that no scope of its supervisor sent (one
        leaked from another task) did not exit normally: it crashed, and is restarted."""
        events: list[ChildEvent] = []
        starts = 0

        async def leaky(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            nonlocal starts
            starts += 1
            task_status.started()
            if starts > 1:
                await trio.sleep_forever()
            leaked: trio.Cancelled | None = None
            with trio.CancelScope() as elsewhere:
                elsewhere.cancel()
                try:
                    await trio.sleep(1)
                except trio.Cancelled as cancelled:
                    leaked = cancelled
                    raise
            assert leaked is not None
            raise leaked

        supervisor = Supervisor("top", backoff=NO_BACKOFF, on_event=events.append)
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            await supervisor.start_child(
                ChildSpec(name="leaky", start=leaky, restart=Restart.TRANSIENT)
            )
            await trio.sleep(10)
            assert supervisor.snapshot()["leaky"].state == "running"
            nursery.cancel_scope.cancel()
        assert starts == 2
        (crash,) = [e for e in events if e.state == "crashed"]
        assert crash.last_error is not None
        assert crash.last_error.startswith("LeakedCancellation: leaky ended by a cancellation")


_SLOW_RESTART = """
import signal, sys
import trio
import guild

starts = 0

async def db(*, task_status=trio.TASK_STATUS_IGNORED):
    global starts
    starts += 1
    if starts == 1:
        task_status.started()
        raise ConnectionError("lost the database")
    print("connecting again", flush=True)
    await trio.sleep_forever()  # the database never answers: no started()

async def main():
    supervisor = guild.Supervisor(
        "top", backoff=guild.Backoff(initial=0.0, jitter=0.0),
        children=[guild.ChildSpec(name="db", start=db)],
    )
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(supervisor.run)
            async for _ in signals:
                nursery.cancel_scope.cancel()
    print("shut down", flush=True)

trio.run(main)
"""


async def test_sigterm_during_a_slow_restart_shuts_down() -> None:
    """A real SIGTERM while a restarted child is still connecting: the process
    exits on its own (before, it hung until SIGKILL)."""
    with trio.fail_after(60):  # a hang fails the test instead of stalling the suite
        process = await trio.lowlevel.open_process(
            [sys.executable, "-c", _SLOW_RESTART], stdout=subprocess.PIPE
        )
        try:
            assert process.stdout is not None
            seen = b""
            while b"connecting again" not in seen:
                chunk = await process.stdout.receive_some()
                assert chunk, seen
                seen += chunk
            process.send_signal(signal.SIGTERM)
            while chunk := await process.stdout.receive_some():
                seen += chunk
            assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        # The rest of stdout is the supervisor's log lines, timestamp first.
        said = [line for line in seen.decode().splitlines() if not line[:4].isdigit()]
        assert said == ["connecting again", "shut down"]
