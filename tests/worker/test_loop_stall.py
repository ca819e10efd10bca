"""The loop-stall watchdog: a handler that blocks the Trio loop is named.

The rule is a pure function (checked with written-out times); the watchdog is
checked with a real handler that calls time.sleep, on the real clock (a thread
watches real time, whatever clock the run uses).
"""

from __future__ import annotations

import time

import pytest
import structlog
import trio

import guild
from guild._stall import stalled_for
from guild.observability._metrics import PrometheusInstrument


@pytest.mark.parametrize(
    ("pending_since", "now", "threshold", "expected"),
    [
        (None, 100.0, 5.0, None),  # every probe answered
        (100.0, 104.0, 5.0, None),  # waiting, not yet long enough
        (100.0, 105.0, 5.0, 5.0),  # exactly the threshold
        (100.0, 112.5, 5.0, 12.5),  # well past it: how long so far
    ],
)
def test_the_rule(
    pending_since: float | None, now: float, threshold: float, expected: float | None
) -> None:
    assert stalled_for(pending_since, now, threshold) == expected


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), True, "5"])
def test_a_bad_threshold_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="loop_stall must be a positive number"):
        guild.Guild("x", loop_stall=bad)  # type: ignore[arg-type]


def _spin(seconds: float) -> None:
    # A CPU loop holds the GIL; the watchdog's thread still gets its turns.
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@pytest.mark.parametrize("block", ["sleep", "cpu"])
async def test_a_handler_that_blocks_the_loop_is_named_and_counted(block: str) -> None:
    metrics = PrometheusInstrument("stall")
    app = guild.Guild("stall", instruments=[metrics], loop_stall=0.2, workflow_poll=None)
    done = trio.Event()

    @app.worker("blocking")
    async def handler(job: guild.Job) -> None:
        # The fault under test.
        if block == "sleep":
            time.sleep(1.5)  # noqa: ASYNC251
        else:
            _spin(1.5)
        done.set()

    broker = guild.MemoryBroker()
    with structlog.testing.capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(app.run, broker)
            [job] = await broker.enqueue([guild.Job(queue="blocking", payload=1)])
            await done.wait()
            nursery.cancel_scope.cancel()
    stalls = [line for line in logs if line["event"] == "loop_stalled"]
    named = [line for line in stalls if line["jobs"] == {"blocking": (job.id,)}]
    assert named, stalls
    assert named[0]["log_level"] == "warning"
    assert named[0]["stalled"] >= 0.2
    assert "trio.to_thread.run_sync" in named[0]["advice"]
    # Reported once for that stall, however long it lasted (checks every 0.05 s).
    assert len(named) == 1
    ended = [line for line in logs if line["event"] == "loop_stall_ended"]
    assert ended and ended[0]["stalled"] >= named[0]["stalled"]
    count = metrics.registry.get_sample_value("guild_loop_stalls_total", {"app": "stall"})
    assert count is not None and count >= 1.0


async def test_no_watchdog_when_turned_off() -> None:
    app = guild.Guild("stall", loop_stall=None, workflow_poll=None)
    done = trio.Event()

    @app.worker("blocking")
    async def handler(job: guild.Job) -> None:
        time.sleep(0.5)  # noqa: ASYNC251  # the fault, with nobody watching
        done.set()

    broker = guild.MemoryBroker()
    with structlog.testing.capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(app.run, broker)
            await broker.enqueue([guild.Job(queue="blocking", payload=1)])
            await done.wait()
            nursery.cancel_scope.cancel()
    assert [line for line in logs if line["event"] == "loop_stalled"] == []
