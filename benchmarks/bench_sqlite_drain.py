"""SQLite drain by ``guild run``: decay with a deep backlog, and ``--processes 2`` against 1.

    python benchmarks/bench_sqlite_drain.py [--rounds 3] [--small 10000] [--large 500000]
        [--fleet-n 50000] [--synchronous default] [--only backlog|processes]
        [--tree DIR ...] [--json FILE]

Every run starts from a fresh SQLite file filled with no-op jobs through
``app.enqueue_many`` (1,000 per call, not timed), then spawns the real CLI
(``guild run bench_vs_huey:app --concurrency 64``) and times it from the spawn
to a job count, from the records each job body writes to a FIFO (the same app
and clock as ``bench_vs_huey.py``):

* **backlog decay**: the first ``--small`` jobs drained from a backlog of
  ``--small`` and from one of ``--large``; *steady* (first job to the
  ``--small``-th) is compared, so start-up does not blur it. Decay is
  ``1 - steady(large) / steady(small)``.
* **processes**: ``--fleet-n`` jobs drained by ``--processes 1`` and by
  ``--processes 2``, start-up included (spawn to last job).

Runs alternate within each round; medians over rounds. ``--only`` runs one of
the two comparisons. ``--tree DIR`` (repeatable) runs the processes cases from
each source tree (put first on ``PYTHONPATH``), alternated in each round, for
an A/B of two versions on a shared machine: ``git archive HEAD | tar -x -C DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import trio

import guild

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_vs_huey as common  # the app, FIFO clock and spawn/stop of bench_vs_huey


async def _fill(url: str, n: int) -> None:
    async with guild.open_broker(url) as broker:
        for start in range(0, n, 1000):
            payloads = list(range(start, min(n, start + 1000)))
            await common.app.enqueue_many(common.QUEUE, payloads, broker=broker)


def run_one(
    work: Path,
    tag: str,
    level: str,
    backlog: int,
    count: int,
    processes: int,
    timeout: float,
    tree: str | None = None,
) -> dict[str, object]:
    folder = work / tag
    folder.mkdir()
    url = f"sqlite:///{folder}/guild.db"
    if level.upper() != "DEFAULT":
        url += f"?synchronous={level.upper()}"
    trio.run(_fill, url, backlog)
    # The fill is not timed, and neither is its write-back: a 500,000-job fill
    # leaves about 110 MB of dirty pages that the kernel flushes 30 s later
    # (vm.dirty_expire_centisecs), in the middle of some later timed drain.
    os.sync()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (tree, str(common.HERE), env.get("PYTHONPATH", "")) if p
    )
    env.pop("GUILD_BROKER", None)
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
    row = common._drain(argv, env, count, folder / "done.fifo", timeout, folder / "worker.log")
    for p in folder.iterdir():
        p.unlink()
    return {"backlog": backlog, "timed_jobs": count, "processes": processes, **row}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=500_000)
    parser.add_argument("--fleet-n", type=int, default=50_000)
    parser.add_argument("--synchronous", default="default", help="NORMAL, FULL, ... or default")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--only", choices=("backlog", "processes"), help="run one comparison")
    parser.add_argument(
        "--tree",
        action="append",
        metavar="DIR",
        help="a source tree to run the processes cases from (repeatable: an A/B)",
    )
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    # name: (backlog, jobs timed, processes, source tree)
    cases: dict[str, tuple[int, int, int, str | None]] = {}
    if args.only != "processes":
        cases["backlog small"] = (args.small, args.small, 1, None)
        cases["backlog large"] = (args.large, args.small, 1, None)
    if args.only != "backlog":
        for tree in args.tree or [None]:
            at = f" @{tree}" if tree else ""
            for processes in (1, 2):
                cases[f"processes {processes}{at}"] = (args.fleet_n, args.fleet_n, processes, tree)
    runs: dict[str, list[dict[str, object]]] = {k: [] for k in cases}
    with tempfile.TemporaryDirectory(prefix="bench-sqlite-drain-") as tmp:
        for r in range(args.rounds):
            order = list(cases) if r % 2 == 0 else list(cases)[::-1]
            for number, name in enumerate(order):
                backlog, count, processes, tree = cases[name]
                row = run_one(
                    Path(tmp),
                    f"r{r}-{number}",
                    args.synchronous,
                    backlog,
                    count,
                    processes,
                    args.timeout,
                    tree,
                )
                runs[name].append(row)
                print(
                    f"round {r + 1} {name:14} backlog {backlog:>7,} drain {row['jobs_per_s']:8,.0f}/s"
                    f"  steady {row['steady_jobs_per_s']:8,.0f}/s  1st job {row['first_job_after_s']:.2f}s"
                    f"  dup {row['duplicates']}",
                    file=sys.stderr,
                    flush=True,
                )

    def med(name: str, key: str) -> float:
        return statistics.median(float(x[key]) for x in runs[name])  # type: ignore[arg-type]

    print(f"sqlite drain, synchronous={args.synchronous}, {args.rounds} rounds, medians")
    print(
        "| case | backlog | jobs timed | drain jobs/s (start-up incl.) | steady jobs/s | 1st job s |"
    )
    print("|---|---|---|---|---|---|")
    for name, (backlog, count, _, _) in cases.items():
        print(
            f"| {name} | {backlog:,} | {count:,} | {med(name, 'jobs_per_s'):,.0f} "
            f"| {med(name, 'steady_jobs_per_s'):,.0f} | {med(name, 'first_job_after_s'):.2f} |"
        )
    summary: dict[str, object] = {"args": vars(args), "runs": runs}
    if args.only != "processes":
        decay = 1 - med("backlog large", "steady_jobs_per_s") / med(
            "backlog small", "steady_jobs_per_s"
        )
        summary["decay"] = decay
        print(
            f"\nsteady rate, backlog {args.large:,} / backlog {args.small:,}: {1 - decay:.2f}x"
            f" (a decay of {decay:.1%})"
        )
    if args.only != "backlog":
        for tree in args.tree or [None]:
            at = f" @{tree}" if tree else ""
            fleet = med(f"processes 2{at}", "jobs_per_s") / med(f"processes 1{at}", "jobs_per_s")
            steady = med(f"processes 2{at}", "steady_jobs_per_s") / med(
                f"processes 1{at}", "steady_jobs_per_s"
            )
            summary[f"processes_ratio{at}"] = fleet
            summary[f"processes_ratio_steady{at}"] = steady
            print(f"--processes 2 / 1{at}: {fleet:.2f}x start-up incl., {steady:.2f}x steady")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
