"""Sandbox overhead: runs of /bin/true per second, sandboxed vs plain trio.run_process.

    python benchmarks/bench_sandbox.py [-n 300] [--json]

Each mode runs the same command N times and reports runs/s and p50 / p99 of the
per-run time. The modes take turns, one run each, so that load from elsewhere on
the machine lands on all of them alike. "sandbox" is the full policy path (check, job
directory, rlimits, privilege drop when root, output capture, cleanup sweep);
"sandbox+bwrap" adds bubblewrap namespaces when bwrap works here.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import trio

from guild.sandbox import Sandbox, SandboxPolicy


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


async def _timed(n: int, modes: list[tuple[str, object]]) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {label: [] for label, _ in modes}
    for _ in range(n):
        for label, one in modes:
            t = time.perf_counter()
            await one()  # type: ignore[operator]
            times[label].append(time.perf_counter() - t)
    return times


async def main(n: int) -> list[dict[str, object]]:
    rows = []

    async def plain() -> None:
        await trio.run_process(["/bin/true"], capture_stdout=True, capture_stderr=True)

    modes: list[tuple[str, object]] = [("trio.run_process", plain)]
    for label, isolate in (("sandbox", "never"), ("sandbox+bwrap", "always")):
        try:
            box = Sandbox(SandboxPolicy(allow=("true",), isolate=isolate))  # type: ignore[arg-type]
        except Exception as exc:
            rows.append({"mode": label, "error": str(exc)})
            continue

        async def sandboxed(box: Sandbox = box) -> None:
            await box.run(["true"], timeout=10)

        modes.append((label, sandboxed))
    await _timed(10, modes)  # warm-up (and the fork server's start)
    for label, times in (await _timed(n, modes)).items():
        rows.append(
            {
                "mode": label,
                "runs_per_s": round(n / sum(times), 1),
                "p50_ms": round(percentile(times, 50) * 1000, 3),
                "p99_ms": round(percentile(times, 99) * 1000, 3),
            }
        )
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    result = trio.run(main, args.n)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        base = next(r for r in result if r["mode"] == "trio.run_process")
        for row in result:
            if "error" in row:
                print(f"{row['mode']:18} unavailable: {row['error']}")
                continue
            overhead = (row["p50_ms"] / base["p50_ms"] - 1) * 100  # type: ignore[operator]
            print(
                f"{row['mode']:18} {row['runs_per_s']:>8} runs/s  p50 {row['p50_ms']:.3f} ms"
                f"  p99 {row['p99_ms']:.3f} ms  overhead {overhead:+.0f}%"
            )
