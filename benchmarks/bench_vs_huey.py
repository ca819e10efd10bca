"""guild's SQLite broker beside Huey's SqliteHuey at equal durability, interleaved in one run.

    python benchmarks/bench_vs_huey.py [-n 5000] [--rounds 3] [--synchronous NORMAL,FULL]
        [--huey-python /tmp/huey-venv/bin/python] [--huey-workers 2,8] [--processes 1,2]
        [--callers 1,16] [--json]

Huey runs under its own interpreter (``--huey-python``, or ``$HUEY_PYTHON``; any
venv with ``pip install huey``), from ``benchmarks/huey_side.py``. For every
round, every ``synchronous`` level and every system (the order alternates between
rounds, so load from elsewhere lands on all alike), on a fresh SQLite file:

* **enqueue**: a fresh process enqueues N no-op jobs **one per call** (Huey:
  ``noop(i)``, one commit each; guild: ``await app.enqueue(...)``, or with
  ``--guild-enqueue sync`` ``guild.Client.enqueue``, which on SQLite commits in
  the calling thread as Huey does); timed from
  the first call to the last return, inside that process.
* **concurrent callers** (``--callers C,...``, rows of their own): C callers at
  once, each enqueueing one job per call, N in all, on a fresh file (Huey: C
  threads calling ``noop(i)``, as a web server's request threads would, which
  Huey's storage serializes on its one connection, a commit each; guild: C Trio
  tasks each ``await app.enqueue(...)``, whose writes that wait together share
  one commit, or with ``--guild-enqueue sync`` C threads calling
  ``guild.Client.enqueue``); enqueue only, ratios to Huey's row with the same C.
* **drain** (left out with ``--enqueue-only``): the queue's own worker CLI is spawned (``huey_consumer`` with
  threads and a 1-10 ms poll, as the shared embedded anchor runs it, once per
  ``--huey-workers`` count; ``guild run`` with ``--concurrency 64`` and
  ``--processes P``) and timed from the spawn to the last job body, so start-up
  counts; *steady* is first job to last.

Equal durability: both sides run WAL with the same ``synchronous`` (Huey's own
default is FULL; NORMAL is set on Huey's connections by ``huey_side.py``; Huey's
enqueue process reads the pragma back into the JSON). ``FULL=ENQUEUE`` runs Huey
at FULL beside guild at ``synchronous=ENQUEUE``; ``FULL=default`` beside guild's
default. Ratios are to the best Huey row at that durability. Every job body
writes its id and CLOCK_MONOTONIC to a FIFO the driver reads; every id must
arrive, and duplicates are counted.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import select
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio
from _callers import shares, timed_threads

import guild

HERE = Path(__file__).resolve().parent
RECORD = struct.Struct("<QQ")
QUEUE = "bench"
STALL_S = 20.0

app = guild.Guild("bench-vs-huey")
_fifo: list[int] = []


@app.worker(QUEUE, concurrency=64, timeout=60.0)
async def noop(job: guild.Job) -> int:
    x: int = job.payload
    if not _fifo:
        _fifo.append(os.open(os.environ["BENCH_FIFO"], os.O_WRONLY))
    os.write(_fifo[0], RECORD.pack(x, time.monotonic_ns()))
    return x


async def _enqueue(url: str, n: int, callers: int = 1) -> dict[str, object]:
    async with guild.open_broker(url) as broker:

        async def call(share: range) -> None:
            for i in share:
                await app.enqueue(QUEUE, i, broker=broker)

        c0, t0 = time.process_time_ns(), time.monotonic_ns()
        if callers == 1:
            await call(range(n))
        else:
            async with trio.open_nursery() as nursery:
                for share in shares(n, callers):
                    nursery.start_soon(call, share)
        t1, c1 = time.monotonic_ns(), time.process_time_ns()
    return {"t0": t0, "t1": t1, "cpu_ns": c1 - c0, "version": guild.__version__}


def _run_json(argv: list[str], env: dict[str, str], timeout: float) -> dict[str, object]:
    done = subprocess.run(
        argv, env=env, cwd=HERE, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{argv[:3]} exited {done.returncode}:\n{done.stderr[-2000:]}")
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> bool:
    """SIGTERM the worker's process group; SIGKILL it after ``grace``. True if killed."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    try:
        proc.wait(timeout=grace)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return True


def _drain(
    argv: list[str], env: dict[str, str], n: int, fifo: Path, timeout: float, log: Path
) -> dict[str, object]:
    """Spawn ``argv`` and time it until ``n`` distinct jobs ran; then stop it."""
    os.mkfifo(fifo)
    # Our own write end keeps reads from seeing EOF before the worker opens the FIFO.
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    wfd = os.open(fifo, os.O_WRONLY)
    seen: dict[int, int] = {}
    duplicates = 0
    buf = b""
    with log.open("wb") as out:
        spawn = time.monotonic_ns()
        proc = subprocess.Popen(
            argv,
            env=dict(env, BENCH_FIFO=str(fifo)),
            cwd=HERE,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + timeout
            # A worker that stopped making progress fails the run early, not at the timeout.
            stalled_at = time.monotonic() + STALL_S
            while len(seen) < n and time.monotonic() < min(deadline, stalled_at):
                if proc.poll() is not None:
                    break
                ready, _, _ = select.select([rfd], [], [], 0.1)
                if not ready:
                    continue
                stalled_at = time.monotonic() + STALL_S
                buf += os.read(rfd, 1 << 16)
                whole = len(buf) - len(buf) % RECORD.size
                for off in range(0, whole, RECORD.size):
                    job, at = RECORD.unpack_from(buf, off)
                    if job in seen:
                        duplicates += 1
                    elif len(seen) < n:  # with a larger backlog, the first n jobs are timed
                        seen[job] = at
                buf = buf[whole:]
        finally:
            killed = _stop(proc)
            os.close(rfd)
            os.close(wfd)
    if len(seen) < n:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{argv[:5]}: {len(seen)} of {n} jobs ran; its output ends:\n{tail}")
    first, last = min(seen.values()), max(seen.values())
    return {
        "jobs_per_s": n / ((last - spawn) / 1e9),
        "steady_jobs_per_s": (n - 1) / ((last - first) / 1e9) if last > first else math.nan,
        "first_job_after_s": (first - spawn) / 1e9,
        "duplicates": duplicates,
        "sigkill": killed,
    }


def _label(system: str, n: int) -> str:
    return f"huey -w {n}" if system == "huey" else f"guild --processes {n}"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH", "")) if p)
    env.pop("GUILD_BROKER", None)
    return env


def _guild_url(folder: Path, level: str) -> str:
    guild_level = level.split("=")[-1]
    url = f"sqlite:///{folder}/guild.db"
    if guild_level != "DEFAULT":
        url += f"?synchronous={guild_level}"
    return url


def _fresh(system: str, level: str, work: Path, tag: str) -> tuple[Path, dict[str, str]]:
    """A new folder under ``work`` for one measurement, and its processes' environment
    (for Huey: its database file in that folder, and the ``synchronous`` level)."""
    folder = work / tag
    folder.mkdir()
    env = _env()
    if system == "huey":
        env.update(
            HUEY_BENCH_DB=str(folder / "huey.db"), HUEY_BENCH_SYNCHRONOUS=level.split("=")[0]
        )
    return folder, env


def _callers_label(system: str, callers: int, guild_enqueue: str) -> str:
    kind = "thread" if system == "huey" or guild_enqueue == "sync" else "task"
    return f"{system}, {callers} calling {kind}{'s' if callers > 1 else ''}"


def callers_one(
    system: str, level: str, callers: int, args: argparse.Namespace, work: Path, tag: str
) -> dict[str, object]:
    """N one-job enqueues by ``callers`` callers at once, on a fresh file: no worker."""
    folder, env = _fresh(system, level, work, tag)
    if system == "huey":
        argv = [args.huey_python, "huey_side.py", "enqueue", str(args.n), str(callers)]
    else:
        argv = [sys.executable, __file__, "_enqueue", _guild_url(folder, level), str(args.n)]
        argv += [args.guild_enqueue, str(callers)]
    enq = _run_json(argv, env, args.timeout)
    t0, t1 = enq["t0"], enq["t1"]
    assert isinstance(t0, int) and isinstance(t1, int)
    return {
        "system": _callers_label(system, callers, args.guild_enqueue),
        "callers": callers,
        "synchronous": level,
        "enqueue_jobs_per_s": args.n / ((t1 - t0) / 1e9),
        "enqueue_cpu_us": float(enq["cpu_ns"]) / 1e3 / args.n,  # type: ignore[arg-type]
        "pragmas": enq.get("pragmas"),
        "version": enq.get("version"),
    }


def one(
    system: str,
    level: str,
    processes: int,
    args: argparse.Namespace,
    work: Path,
    tag: str,
) -> dict[str, object]:
    folder, env = _fresh(system, level, work, tag)
    if system == "huey":
        enq = _run_json(
            [args.huey_python, "huey_side.py", "enqueue", str(args.n)], env, args.timeout
        )
        argv = [
            args.huey_python,
            "-m",
            "huey.bin.huey_consumer",
            "huey_side.huey",
            "-w",
            str(processes),  # huey_consumer's worker threads
            "-k",
            "thread",
            "-q",
            "-d",
            "0.001",
            "-m",
            "0.01",
        ]
    else:
        url = _guild_url(folder, level)
        enq = _run_json(
            [sys.executable, __file__, "_enqueue", url, str(args.n), args.guild_enqueue, "1"],
            env,
            args.timeout,
        )
        argv = [
            sys.executable,
            "-m",
            "guild",
            "run",
            "bench_vs_huey:app",
            "--broker",
            url,
            "--concurrency",
            "64",
            "--processes",
            str(processes),
            "--log-level",
            "warning",
        ]
    t0, t1 = enq["t0"], enq["t1"]
    assert isinstance(t0, int) and isinstance(t1, int)
    # With --enqueue-only no worker ran: the row has no drain figures at all
    # (not NaN, which would print as "nan" and is not JSON).
    drain: dict[str, object] = {}
    if not args.enqueue_only:
        drain = _drain(argv, env, args.n, folder / "done.fifo", args.timeout, folder / "worker.log")
    return {
        "system": _label(system, processes),
        "synchronous": level,
        "enqueue_jobs_per_s": args.n / ((t1 - t0) / 1e9),
        # CPU of the enqueueing process (every thread) per job: steadier than the
        # rate on a shared machine, and free of the disk's fsync.
        "enqueue_cpu_us": float(enq["cpu_ns"]) / 1e3 / args.n,  # type: ignore[arg-type]
        "pragmas": enq.get("pragmas"),
        "version": enq.get("version"),
        **drain,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=5000, help="jobs per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--synchronous",
        default="NORMAL,FULL",
        help="comma list of LEVEL (both sides) or HUEY_LEVEL=GUILD_LEVEL, e.g. FULL=ENQUEUE;"
        " GUILD_LEVEL 'default' leaves guild's URL without the option",
    )
    parser.add_argument(
        "--huey-python", default=os.environ.get("HUEY_PYTHON", "/tmp/huey-venv/bin/python")
    )
    parser.add_argument(
        "--huey-workers",
        default="2,8",
        help="huey_consumer -w, comma list; ratios are to the best Huey row",
    )
    parser.add_argument("--processes", default="1", help="guild run --processes, comma list")
    parser.add_argument(
        "--guild-enqueue",
        choices=["trio", "sync"],
        default="trio",
        help="trio: `await app.enqueue(...)` under trio.run; sync: `guild.Client.enqueue` from a"
        " plain thread, the shape of Huey's call",
    )
    parser.add_argument(
        "--callers",
        default="",
        help="comma list of C: also time N one-job enqueues by C callers at once (Huey: C"
        " threads; guild: C Trio tasks, or threads with --guild-enqueue sync), rows of their own",
    )
    parser.add_argument(
        "--enqueue-only", action="store_true", help="time the enqueues only: no worker runs"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="per step, seconds")
    parser.add_argument("--json", metavar="FILE", help="write every run and the medians here")
    args = parser.parse_args()
    probe = subprocess.run(
        [args.huey_python, "-c", "import huey"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        raise SystemExit(
            f"--huey-python {args.huey_python} cannot import huey; make one with:\n"
            f"  python3 -m venv /tmp/huey-venv && /tmp/huey-venv/bin/pip install huey"
        )
    levels = [x.strip().upper() for x in args.synchronous.split(",") if x.strip()]
    callers = [int(c) for c in args.callers.split(",") if c.strip()]
    if any(c < 1 for c in callers):
        raise SystemExit(f"--callers must be counts of at least 1, got {args.callers!r}")
    systems = [("huey", int(w)) for w in args.huey_workers.split(",")]
    systems += [("guild", int(p)) for p in args.processes.split(",")]
    runs: list[dict[str, object]] = []
    callers_runs: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="bench-vs-huey-") as tmp:
        for r in range(args.rounds):
            order = systems if r % 2 == 0 else systems[::-1]
            for level in levels:
                for system, processes in order:
                    row = one(
                        system,
                        level,
                        processes,
                        args,
                        Path(tmp),
                        f"r{r}-{level}-{system}{processes}",
                    )
                    row["round"] = r + 1
                    runs.append(row)
                    line = (
                        f"round {r + 1} {row['system']:20} {level:8} enqueue {row['enqueue_jobs_per_s']:8,.0f}/s"
                        f" {row['enqueue_cpu_us']:5.0f} us CPU/job"
                    )
                    if not args.enqueue_only:
                        line += (
                            f"  drain {row['jobs_per_s']:8,.0f}/s  steady {row['steady_jobs_per_s']:8,.0f}/s"
                            f"  1st job {row['first_job_after_s']:.2f}s  dup {row['duplicates']}"
                        )
                    print(line, file=sys.stderr, flush=True)
                for c in callers:
                    for system in ("huey", "guild") if r % 2 == 0 else ("guild", "huey"):
                        row = callers_one(
                            system, level, c, args, Path(tmp), f"r{r}-{level}-{system}-c{c}"
                        )
                        row["round"] = r + 1
                        callers_runs.append(row)
                        print(
                            f"round {r + 1} {row['system']:30} {level:8} enqueue"
                            f" {row['enqueue_jobs_per_s']:8,.0f}/s"
                            f" {row['enqueue_cpu_us']:5.0f} us CPU/job",
                            file=sys.stderr,
                            flush=True,
                        )
    medians: list[dict[str, object]] = []
    for level in levels:
        mine_level: list[dict[str, object]] = []
        for system, n in systems:
            mine = [
                x for x in runs if x["system"] == _label(system, n) and x["synchronous"] == level
            ]
            figures = ["enqueue_jobs_per_s", "enqueue_cpu_us"]
            if not args.enqueue_only:
                figures += ["jobs_per_s", "steady_jobs_per_s", "first_job_after_s"]
            med = {
                k: statistics.median(float(x[k]) for x in mine)  # type: ignore[arg-type]
                for k in figures
            }
            mine_level.append(
                {
                    "system": _label(system, n),
                    "synchronous": level,
                    "pragmas": mine[0]["pragmas"],
                    "version": mine[0]["version"],
                    **med,
                }
            )
            if not args.enqueue_only:
                mine_level[-1]["duplicates"] = sum(int(x["duplicates"]) for x in mine)  # type: ignore[call-overload]
        # The anchor is Huey at its best worker count for this durability.
        hueys = [m for m in mine_level if str(m["system"]).startswith("huey")]
        best_enqueue = max(float(m["enqueue_jobs_per_s"]) for m in hueys)  # type: ignore[arg-type]
        least_cpu = min(float(m["enqueue_cpu_us"]) for m in hueys)  # type: ignore[arg-type]
        for m in mine_level:
            m["enqueue_ratio_to_huey"] = float(m["enqueue_jobs_per_s"]) / best_enqueue  # type: ignore[arg-type]
            # Huey's CPU per job over this row's: above 1, this row spends less.
            m["enqueue_cpu_ratio_to_huey"] = least_cpu / float(m["enqueue_cpu_us"])  # type: ignore[arg-type]
            if not args.enqueue_only:
                best_drain = max(float(h["jobs_per_s"]) for h in hueys)  # type: ignore[arg-type]
                m["drain_ratio_to_huey"] = float(m["jobs_per_s"]) / best_drain  # type: ignore[arg-type]
        medians.extend(mine_level)
    print(
        f"n={args.n}, {args.rounds} rounds, huey_consumer -k thread, guild run --concurrency 64;"
        " medians; ratios to the best Huey row at the same durability"
    )
    head = (
        "| system | synchronous | enqueue jobs/s (1 per call) | ratio | enqueue CPU us/job "
        "| Huey's CPU / this |"
    )
    if not args.enqueue_only:  # no worker ran: no drain columns
        head += " drain jobs/s (start-up incl.) | ratio | steady jobs/s | 1st job s |"
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for m in medians:
        line = (
            f"| {m['system']} {m['version']} | {m['synchronous']} | {m['enqueue_jobs_per_s']:,.0f} "
            f"| {m['enqueue_ratio_to_huey']:.2f}x | {m['enqueue_cpu_us']:.0f} "
            f"| {m['enqueue_cpu_ratio_to_huey']:.2f}x |"
        )
        if not args.enqueue_only:
            line += (
                f" {m['jobs_per_s']:,.0f} | {m['drain_ratio_to_huey']:.2f}x "
                f"| {m['steady_jobs_per_s']:,.0f} | {m['first_job_after_s']:.2f} |"
            )
        print(line)
    callers_medians = _callers_medians(callers_runs, levels, callers, args.guild_enqueue)
    if callers_medians:
        print(
            "\nconcurrent callers, one job per call, N in all; medians; ratios to Huey's row"
            " with the same callers and durability"
        )
        print(
            "| system | synchronous | enqueue jobs/s | ÷ Huey | enqueue CPU us/job"
            " | Huey's CPU / this |"
        )
        print("|---|---|---|---|---|---|")
        for m in callers_medians:
            print(
                f"| {m['system']} {m['version']} | {m['synchronous']} | {m['enqueue_jobs_per_s']:,.0f}"
                f" | {m['enqueue_ratio_to_huey']:.2f}x | {m['enqueue_cpu_us']:.0f}"
                f" | {m['enqueue_cpu_ratio_to_huey']:.2f}x |"
            )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "args": vars(args),
                    "runs": runs,
                    "medians": medians,
                    "callers_runs": callers_runs,
                    "callers_medians": callers_medians,
                },
                indent=1,
            )
        )


def _callers_medians(
    runs: list[dict[str, object]], levels: list[str], callers: list[int], guild_enqueue: str
) -> list[dict[str, object]]:
    """Medians of the concurrent-callers runs, each row's ratios to Huey's with its C."""
    medians: list[dict[str, object]] = []
    for level in levels:
        for c in callers:
            rows = []
            for system in ("huey", "guild"):
                mine = [
                    x
                    for x in runs
                    if x["system"] == _callers_label(system, c, guild_enqueue)
                    and x["synchronous"] == level
                ]
                rows.append(
                    {
                        "system": _callers_label(system, c, guild_enqueue),
                        "callers": c,
                        "synchronous": level,
                        "pragmas": mine[0]["pragmas"],
                        "version": mine[0]["version"],
                        **{
                            k: statistics.median(float(x[k]) for x in mine)  # type: ignore[arg-type]
                            for k in ("enqueue_jobs_per_s", "enqueue_cpu_us")
                        },
                    }
                )
            huey_rate, huey_cpu = rows[0]["enqueue_jobs_per_s"], rows[0]["enqueue_cpu_us"]
            for m in rows:
                m["enqueue_ratio_to_huey"] = float(m["enqueue_jobs_per_s"]) / float(huey_rate)  # type: ignore[arg-type]
                m["enqueue_cpu_ratio_to_huey"] = float(huey_cpu) / float(m["enqueue_cpu_us"])  # type: ignore[arg-type]
            medians.extend(rows)
    return medians


def _enqueue_sync(url: str, n: int, callers: int = 1) -> dict[str, object]:
    with guild.Client(url) as client:
        timed = timed_threads(functools.partial(client.enqueue, QUEUE), n, callers)
    return {**timed, "version": guild.__version__}


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "_enqueue":
        url, n, callers = sys.argv[2], int(sys.argv[3]), int(sys.argv[5])
        if sys.argv[4] == "trio":
            done = trio.run(_enqueue, url, n, callers)
        else:
            done = _enqueue_sync(url, n, callers)
        print(json.dumps(done))
    else:
        main()
