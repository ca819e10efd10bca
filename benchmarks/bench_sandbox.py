"""Sandbox overhead: the time a sandboxed run adds to plain trio.run_process of the same argv.

    python benchmarks/bench_sandbox.py [-n 300] [--argv /bin/true] [--json]

Each path runs the same command N times; the paths take turns, one run each, so
that load from elsewhere on the machine lands on all of them alike. Reported per
path: p50 and p95 of the per-run time, and the time added to the plain run
(p50 minus the plain p50, p95 minus the plain p95). Paths:

* ``fork server``      ``isolate="never"``: the full policy path (check, job
  directory, rlimits, uid lease and privilege drop when root, a cgroup when one
  can be made, output capture, the end-of-run sweep), no namespaces;
* ``kernel namespaces`` ``isolate="kernel"``: the same, in network, PID, mount,
  IPC and UTS namespaces the fork server's spare made before the run asked;
* ``bwrap``            ``isolate="bwrap"``, when bubblewrap works here.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from collections.abc import Awaitable, Callable

import trio

from guild.sandbox import Sandbox, SandboxPolicy

Run = Callable[[], Awaitable[object]]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


async def _timed(n: int, modes: list[tuple[str, Run]]) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {label: [] for label, _ in modes}
    for _ in range(n):
        for label, one in modes:
            t = time.perf_counter()
            await one()
            times[label].append(time.perf_counter() - t)
    return times


async def main(n: int, argv: list[str]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    program = shutil.which(argv[0]) or argv[0]

    async def plain() -> None:
        await trio.run_process([program, *argv[1:]], capture_stdout=True, capture_stderr=True)

    modes: list[tuple[str, Run]] = [("trio.run_process", plain)]
    name = program.rsplit("/", 1)[-1]
    for label, isolate in (
        ("fork server", "never"),
        ("kernel namespaces", "kernel"),
        ("bwrap", "bwrap"),
    ):
        try:
            box = Sandbox(SandboxPolicy(allow=(name,), isolate=isolate))  # type: ignore[arg-type]
        except Exception as exc:
            rows.append({"mode": label, "error": str(exc)})
            continue

        async def sandboxed(box: Sandbox = box) -> None:
            await box.run([name, *argv[1:]], timeout=10)

        modes.append((label, sandboxed))
    await _timed(10, modes)  # warm-up (and the fork servers' start)
    times = await _timed(n, modes)
    base = times["trio.run_process"]
    for label, taken in times.items():
        rows.append(
            {
                "mode": label,
                "p50_ms": round(percentile(taken, 50) * 1000, 3),
                "p95_ms": round(percentile(taken, 95) * 1000, 3),
                "added_p50_ms": round((percentile(taken, 50) - percentile(base, 50)) * 1000, 3),
                "added_p95_ms": round((percentile(taken, 95) - percentile(base, 95)) * 1000, 3),
            }
        )
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=300)
    parser.add_argument("--argv", default="/bin/true", help="the command, split on spaces")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    result = trio.run(main, args.n, args.argv.split())
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for row in result:
            if "error" in row:
                print(f"{row['mode']:18} unavailable: {row['error']}")
                continue
            print(
                f"{row['mode']:18} p50 {row['p50_ms']:7.3f} ms  p95 {row['p95_ms']:7.3f} ms"
                f"  added p50 {row['added_p50_ms']:+7.3f} ms  p95 {row['added_p95_ms']:+7.3f} ms"
            )
