"""Canary rollout, end to end: v1 keeps running while v2 joins as a canary.

Three processes besides this one share one broker (SQLite by default, or any
``--broker`` URL, Redis included):

* ``guild run app_v1:app``, the stable version;
* a producer, enqueueing orders with ``broker.enqueue`` and no idea a rollout
  exists (it records the share the broker held when it enqueued each job);
* ``guild run app_v2:app --canary``, which starts the rollout and drives it.

A healthy v2 walks 10 % → 50 % → 100 %; with ``--mode errors`` (20 % of its
attempts fail) or ``--mode slow`` (p95 1 s against a 0.5 s bound) it is rolled
back, and its jobs finish on v1. Then the demo checks that every job enqueued
has a result, and prints, per stage, the share of jobs each version ran
against the target share.

    python examples/canary/main.py [--mode healthy|errors|slow] [--broker URL] [--soak 2]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import attrs
import trio

import guild

HERE = Path(__file__).resolve().parent
QUEUE = "orders"


_PHASES = ["none", "soaking", "paused", "promoted", "rolled_back"]


def _order(share: float, phase: str) -> tuple[int, float]:
    return (_PHASES.index(phase) if phase in ("none", "rolled_back") else 1, share)


@attrs.frozen
class Stage:
    target: float
    phase: str
    """The rollout's phase when the jobs were enqueued (``none``: before it began)."""
    enqueued: int
    routed: int
    """Enqueued into the canary's lane."""
    ran_v2: int
    """Finished by v2 (the rest by v1, those moved back included)."""
    settled: int
    """Enqueued while the share held still (no rollout write between the producer's
    reads before and after its enqueue)."""
    settled_routed: int
    """Of those, sent to the lane."""


@attrs.frozen
class Report:
    mode: str
    outcome: str
    """``promoted`` or ``rolled_back``."""
    decided_after: float
    """Seconds from the rollout's start to its last decision."""
    stages: list[Stage]
    enqueued: int
    finished: int
    lost: int
    decisions: list[str]


# --- the producer (its own process) ------------------------------------------------


async def produce(url: str, out: Path, stop: Path, rate: float) -> None:
    """Enqueue orders at about ``rate`` a second until ``stop`` exists."""
    n = 0
    async with guild.open_broker(url) as broker:
        with out.open("w") as lines:
            while not stop.exists():
                before = await guild.read_canary(broker, QUEUE)
                jobs = [guild.Job(queue=QUEUE, payload={"n": n + i}) for i in range(5)]
                n += len(jobs)
                stored = await broker.enqueue(jobs)
                after = await guild.read_canary(broker, QUEUE)
                # The share held all along when no write came between the reads.
                settled = int(before.version == after.version)
                phase = "none" if before.state is None else before.state.phase.value
                for job in stored:
                    lines.write(f"{job.id}\t{before.share}\t{phase}\t{settled}\t{job.queue}\n")
                lines.flush()
                await trio.sleep(5 / rate)


# --- the orchestration ---------------------------------------------------------------


def _spawn(argv: list[str], log: Path, **env: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:  # the child holds its own copy
        return subprocess.Popen(
            argv,
            cwd=HERE,
            env={**os.environ, "PYTHONPATH": str(HERE), **env},
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def _wait_for_end(url: str, timeout: float) -> guild.CanaryRecord:
    deadline = time.monotonic() + timeout
    async with guild.open_broker(url) as broker:
        while time.monotonic() < deadline:
            record = await guild.read_canary(broker, QUEUE)
            if record.state is not None and record.state.phase in (
                guild.CanaryPhase.PROMOTED,
                guild.CanaryPhase.ROLLED_BACK,
            ):
                return record
            await trio.sleep(0.2)
    raise TimeoutError(f"the rollout of {QUEUE} neither promoted nor rolled back in {timeout}s")


async def _results(url: str, ids: list[str]) -> dict[str, guild.Result | None]:
    async with guild.open_broker(url) as broker:
        return {job_id: await broker.get_result(job_id, wait=30) for job_id in ids}


def scenario(
    url: str, mode: str, workdir: Path, *, soak: float = 2.0, rate: float = 200.0
) -> Report:
    """Run v1, a producer and a canary v2 on ``url``; report what became of every job."""
    run = [sys.executable, "-m", "guild", "run", "--broker", url, "--log-format", "json"]
    canary = [
        "--canary",
        "--canary-soak",
        str(soak),
        "--canary-min-jobs",
        "20",
        "--canary-p95",
        "0.5",
    ]
    out, stop = workdir / "produced.tsv", workdir / "stop"
    v1 = _spawn([*run, "app_v1:app"], workdir / "v1.log")
    producer = _spawn(
        [sys.executable, str(HERE / "main.py"), "produce", url, str(out), str(stop), str(rate)],
        workdir / "producer.log",
    )
    v2: subprocess.Popen[bytes] | None = None
    try:
        time.sleep(1.0)  # v1 and the producer under way: the canary joins a live queue
        v2 = _spawn([*run, "app_v2:app", *canary], workdir / "v2.log", CANARY_DEMO=mode)
        record = trio.run(_wait_for_end, url, 120.0)
        # Let the last stage (100 %, or 0 % after a rollback) take some jobs too.
        time.sleep(soak)
        stop.touch()
        producer.wait(timeout=30)
        produced = [line.split("\t") for line in out.read_text().splitlines()]
        results = trio.run(_results, url, [p[0] for p in produced])
    finally:
        stop.touch()
        for process in (producer, v2, v1):
            if process is not None:
                _stop(process)
    assert record.state is not None
    start = next(d.at for d in record.decisions if d.event == "start")
    by_share: dict[tuple[float, str], Counter[str]] = defaultdict(Counter)
    finished = 0
    for job_id, share, phase, settled, queue in produced:
        counter = by_share[(float(share), phase)]
        counter["enqueued"] += 1
        counter["routed"] += queue == guild.canary_lane(QUEUE)
        if settled == "1":
            counter["settled"] += 1
            counter["settled_routed"] += queue == guild.canary_lane(QUEUE)
        result = results[job_id]
        if result is not None and result.ok:
            finished += 1
            counter["v2"] += result.value["version"] == "v2"
    return Report(
        mode=mode,
        outcome=record.state.phase.value,
        decided_after=record.decisions[-1].at - start,
        stages=[
            Stage(
                target=share,
                phase=phase,
                enqueued=c["enqueued"],
                routed=c["routed"],
                ran_v2=c["v2"],
                settled=c["settled"],
                settled_routed=c["settled_routed"],
            )
            for (share, phase), c in sorted(by_share.items(), key=lambda item: _order(*item[0]))
        ],
        enqueued=len(produced),
        finished=finished,
        lost=len(produced) - finished,
        decisions=[
            f"{d.event}: {d.from_phase} {d.from_share:.0%} -> {d.to_phase} {d.to_share:.0%}"
            f" ({d.reason})"
            for d in record.decisions
        ],
    )


def show(report: Report) -> None:
    print(f"mode {report.mode}: {report.outcome} {report.decided_after:.1f}s after the start")
    for line in report.decisions:
        print(f"  decision {line}")
    print("  phase, target share | jobs enqueued | sent to canary lane | run by v2 | run by v1")
    for s in report.stages:
        v1 = s.enqueued - s.ran_v2
        print(
            f"  {s.phase:>13} {s.target:>5.0%} | {s.enqueued:>13} | {s.routed / s.enqueued:>19.1%}"
            f" | {s.ran_v2 / s.enqueued:>9.1%} | {v1 / s.enqueued:>9.1%}"
        )
    print(f"  {report.enqueued} jobs enqueued, {report.finished} finished, {report.lost} lost")


def main() -> None:
    if sys.argv[1:2] == ["produce"]:
        url, out, stop, rate = sys.argv[2:6]
        trio.run(produce, url, Path(out), Path(stop), float(rate))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["healthy", "errors", "slow"], action="append")
    parser.add_argument("--broker", help="broker URL (default: a SQLite file in a temp dir)")
    parser.add_argument("--soak", type=float, default=2.0, help="seconds per stage")
    parser.add_argument("--json", action="store_true", help="print the reports as JSON")
    args = parser.parse_args()
    for mode in args.mode or ["healthy", "errors"]:
        with tempfile.TemporaryDirectory(prefix="guild-canary-") as tmp:
            url = args.broker or f"sqlite:///{tmp}/canary.db"
            report = scenario(url, mode, Path(tmp), soak=args.soak)
            if args.json:
                print(json.dumps(attrs.asdict(report)))
            else:
                show(report)


if __name__ == "__main__":
    main()
