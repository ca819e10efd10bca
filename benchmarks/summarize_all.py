"""The summary of one ``benchmarks/run_all.sh`` results folder, as Markdown.

    python benchmarks/summarize_all.py RESULTS_DIR > RESULTS_DIR/summary.md

Medians over rounds or repetitions; every ratio compares figures from the same
run, and where rounds pair up (throughput) the ratio is taken per round first.
A part whose files are missing is reported as missing, not skipped silently.
"""

from __future__ import annotations

import glob
import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def rng(values: list[float], digits: int = 0) -> str:
    if not values:
        return "n/a"
    f = f"{{:,.{digits}f}}"
    m = f.format(med(values))
    if len(values) == 1:
        return m
    return f"{m} ({f.format(min(values))}-{f.format(max(values))})"


def get(d: Any, *path: str) -> float | None:
    for k in path:
        d = d.get(k) if isinstance(d, dict) else None
    return float(d) if isinstance(d, (int, float)) else None


def last_json(text: str) -> Any:
    """The JSON document that ends ``text``: the worker's log lines share stdout with it."""
    lines = text.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i] in ("[", "{"):
            return json.loads("\n".join(lines[i:]))
    raise ValueError("no JSON document")


def section_timings(res: Path, out: list[str]) -> None:
    out.append("## Machine and run\n")
    machine = res / "machine.txt"
    out.append(machine.read_text() if machine.exists() else "(machine.txt missing)\n")
    out.append("\n| part | wall s | exit | load average at its start |\n|---|---|---|---|")
    timings = res / "timings.tsv"
    for line in timings.read_text().splitlines() if timings.exists() else []:
        name, secs, rc, load = [*line.split("\t"), "", "", ""][:4]
        out.append(f"| {name} | {float(secs):,.0f} | {rc} | {load} |")
    out.append("")


def section_throughput(res: Path, out: list[str]) -> None:
    out.append("## Throughput, one process (bench_throughput.py) beside the bare-Trio anchor\n")
    folder = res / "throughput"
    if not folder.is_dir():
        out.append("missing\n")
        return
    rounds = sorted(
        {int(m.group(1)) for p in folder.iterdir() if (m := re.match(r"r(\d+)-", p.name))}
    )
    bare: dict[int, float] = {}
    rows: dict[str, dict[int, dict[str, Any]]] = {}
    for r in rounds:
        text = (
            (folder / f"r{r}-bare_trio.txt").read_text()
            if (folder / f"r{r}-bare_trio.txt").exists()
            else ""
        )
        m = re.search(r"([\d,]+) items/s", text)
        if m:
            bare[r] = float(m.group(1).replace(",", ""))
        for p in folder.glob(f"r{r}-*.json"):
            label = p.stem.split("-", 1)[1]
            try:
                rows.setdefault(label, {})[r] = last_json(p.read_text())[0]
            except (ValueError, IndexError):
                out.append(f"- {p.name}: no result (see throughput.log)")
    out.append(
        f"{len(rounds)} rounds; bare Trio channel (16 handlers): {rng(list(bare.values()))} items/s\n"
    )
    out.append(
        "| broker | enqueue jobs/s | drain jobs/s | drain ÷ bare Trio (per round) "
        "| enqueue→start p50 / p99 ms | round trip p50 / p99 ms |"
    )
    out.append("|---|---|---|---|---|---|")
    labels = ["memory", "memory16", "sqlite-normal", "sqlite-full", "sqlite-default", "redis"]
    if any(k.endswith("@base") for k in rows):
        labels = [x for label in labels for x in (label, f"{label}@base")]
    for label in labels:
        per = rows.get(label, {})
        if not per:
            out.append(f"| {label} | missing | | | | |")
            continue
        drains = [float(x["drain_jobs_per_s"]) for x in per.values()]
        ratios = [float(x["drain_jobs_per_s"]) / bare[r] for r, x in per.items() if r in bare]

        def col(*k: str, per: dict[int, dict[str, Any]] = per) -> float:
            return med([v for x in per.values() if (v := get(x, *k)) is not None])

        out.append(
            f"| {label} | {rng([float(x['enqueue_jobs_per_s']) for x in per.values()])} | {rng(drains)} "
            f"| {med(ratios):.2f}x | {col('enqueue_to_start_ms', 'p50'):.3f} / {col('enqueue_to_start_ms', 'p99'):.3f} "
            f"| {col('round_trip_ms', 'p50'):.3f} / {col('round_trip_ms', 'p99'):.3f} |"
        )
    out.append(
        "\n`memory` runs concurrency 64 (the docs' setting); `memory16` runs 16, the anchor's;"
        " `@base` rows ran BASELINE_TREE's code in the same rounds.\n"
    )


def section_json_table(res: Path, out: list[str], name: str, title: str) -> None:
    out.append(f"## {title}\n")
    p = res / f"{name}.json"
    try:
        rows = json.loads(p.read_text())
    except (OSError, ValueError):
        out.append("missing\n")
        return
    # A row may be an error (a mode this host lacks): its columns stay empty and
    # its reason goes under the table, so the modes that ran are still shown.
    keys = list(dict.fromkeys(k for r in rows for k in r if k != "error"))
    out.append("| " + " | ".join(keys) + " |")
    out.append("|" + "---|" * len(keys))
    for r in rows:
        out.append("| " + " | ".join(str(r.get(k, "—")) for k in keys) + " |")
    out.append("")
    for r in rows:
        if "error" in r:
            out.append(f"{r.get(keys[0], '?')}: not measured: {r['error']}\n")


def section_huey(res: Path, out: list[str]) -> None:
    out.append("## SQLite against Huey at equal durability (bench_vs_huey.py)\n")
    _huey_tables(res / "huey.json", out)
    for other in sorted(res.glob("huey-*.json")):
        out.append(f"### The other guild enqueue, enqueue only ({other.name})\n")
        _huey_tables(other, out)


def _huey_tables(path: Path, out: list[str]) -> None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        out.append("missing\n")
        return
    a = data["args"]
    out.append(
        f"n={a['n']}, {a['rounds']} rounds, huey_consumer -k thread -w {a['huey_workers']}; "
        f"guild enqueue: {a.get('guild_enqueue', 'trio')}; medians. "
        "Ratios are to the best Huey row at the same `synchronous` (HUEY=GUILD where they differ).\n"
    )
    drained = all("jobs_per_s" in m for m in data["medians"])
    if not drained:  # --enqueue-only
        out.append("| system | synchronous | enqueue jobs/s (1 per call) | ÷ Huey |")
        out.append("|---|---|---|---|")
    else:
        out.append(
            "| system | synchronous | enqueue jobs/s (1 per call) | ÷ Huey | drain jobs/s (start-up incl.) "
            "| ÷ Huey | steady jobs/s | 1st job s | duplicates |"
        )
        out.append("|---|---|---|---|---|---|---|---|---|")
    for m in data["medians"]:
        if not drained:
            out.append(
                f"| {m['system']} {m['version']} | {m['synchronous']} | {m['enqueue_jobs_per_s']:,.0f} "
                f"| {m['enqueue_ratio_to_huey']:.2f}x |"
            )
            continue
        out.append(
            f"| {m['system']} {m['version']} | {m['synchronous']} | {m['enqueue_jobs_per_s']:,.0f} "
            f"| {m['enqueue_ratio_to_huey']:.2f}x | {m['jobs_per_s']:,.0f} | {m['drain_ratio_to_huey']:.2f}x "
            f"| {m['steady_jobs_per_s']:,.0f} | {m['first_job_after_s']:.2f} | {m['duplicates']} |"
        )
    out.append("")
    callers = data.get("callers_medians") or []
    if not callers:
        return
    guild_side = (
        "threads calling `guild.Client.enqueue`, a commit each"
        if a.get("guild_enqueue") == "sync"
        else "Trio tasks awaiting `app.enqueue`, whose writes that wait together share a commit"
    )
    out.append(
        "Concurrent callers, one job per call (Huey: threads calling the task, serialized on its"
        f" one connection, a commit each; guild: {guild_side}); enqueue only, medians, ratios"
        " to Huey's row with the same callers and `synchronous`.\n"
    )
    out.append(
        "| system | synchronous | enqueue jobs/s | ÷ Huey | enqueue CPU µs/job | Huey's CPU ÷ this |"
    )
    out.append("|---|---|---|---|---|---|")
    for m in callers:
        out.append(
            f"| {m['system']} {m['version']} | {m['synchronous']} | {m['enqueue_jobs_per_s']:,.0f} "
            f"| {m['enqueue_ratio_to_huey']:.2f}x | {m['enqueue_cpu_us']:.0f} "
            f"| {m['enqueue_cpu_ratio_to_huey']:.2f}x |"
        )
    out.append("")


def section_sqlite(res: Path, out: list[str]) -> None:
    out.append("## SQLite drain: backlog decay and --processes 2 (bench_sqlite_drain.py)\n")
    try:
        data = json.loads((res / "sqlite.json").read_text())
    except (OSError, ValueError):
        out.append("missing\n")
        return
    a = data["args"]
    out.append(f"synchronous={a['synchronous']}, {a['rounds']} rounds; medians (min-max)\n")
    out.append(
        "| case | backlog | jobs timed | drain jobs/s (start-up incl.) | steady jobs/s | 1st job s |"
    )
    out.append("|---|---|---|---|---|---|")
    for name, runs in data["runs"].items():

        def col(k: str, runs: list[dict[str, Any]] = runs) -> list[float]:
            return [float(x[k]) for x in runs]

        out.append(
            f"| {name} | {runs[0]['backlog']:,} | {runs[0]['timed_jobs']:,} | {rng(col('jobs_per_s'))} "
            f"| {rng(col('steady_jobs_per_s'))} | {rng(col('first_job_after_s'), 2)} |"
        )
    out.append(
        f"\nsteady rate of the first {a['small']:,} jobs, backlog {a['large']:,} / backlog {a['small']:,}: "
        f"{1 - data['decay']:.2f}x (aim: at least 0.90x, a decay of at most 10 %); "
        f"--processes 2 / 1: {data['processes_ratio']:.2f}x start-up included (aim: at least 1.5x), "
        f"{data['processes_ratio_steady']:.2f}x steady\n"
    )


def section_bullmq(res: Path, out: list[str]) -> None:
    out.append("## Redis: guild beside BullMQ (shared bullmq harness)\n")
    folder = res / "bullmq"
    bull = [
        json.loads(Path(p).read_text()) for p in sorted(glob.glob(str(folder / "bullmq-r*.json")))
    ]
    guild: list[dict[str, Any]] = []
    for p in sorted(glob.glob(str(folder / "guild-r*.json"))):
        results = json.loads(Path(p).read_text()).get("results") or []
        guild.extend(results[:1])
    if not bull or not guild:
        out.append("missing\n")
        return
    summary = folder / "summary.md"
    if summary.exists():
        out.append(summary.read_text())

    def bcol(conc: int, *k: str) -> list[float]:
        return [
            v
            for r in bull
            for c in r["configs"]
            if c["concurrency"] == conc and (v := get(c, *k)) is not None
        ]

    def gcol(*k: str) -> list[float]:
        return [v for r in guild if (v := get(r, *k)) is not None]

    concs = sorted({c["concurrency"] for r in bull for c in r["configs"]})
    best_drain = max(concs, key=lambda c: med(bcol(c, "drain", "jobs_per_s")))
    best_rt = min(concs, key=lambda c: med(bcol(c, "latency", "p50_ms")))
    out.append("\n| figure | BullMQ | guild | guild ÷ BullMQ |\n|---|---|---|---|")
    for label, conc, k, digits in (
        ("drain jobs/s, start-up incl.", best_drain, ("drain", "jobs_per_s"), 0),
        ("steady drain jobs/s", best_drain, ("drain", "steady_jobs_per_s"), 0),
        ("round trip p50 ms", best_rt, ("latency", "p50_ms"), 2),
        ("round trip p99 ms", best_rt, ("latency", "p99_ms"), 2),
        ("worker CPU µs/job", best_drain, ("drain", "worker_cpu_us_per_job"), 1),
    ):
        b, g = bcol(conc, *k), gcol(*k)
        out.append(
            f"| {label} (BullMQ c={conc}) | {rng(b, digits)} | {rng(g, digits)} | {med(g) / med(b):.2f}x |"
        )
    out.append("")


def section_peers(res: Path, out: list[str]) -> None:
    out.append("## Redis: guild beside the Python peers (shared peers harness)\n")
    try:
        data = json.loads((res / "peers" / "results.json").read_text())
    except (OSError, ValueError):
        out.append("missing\n")
        return
    table = res / "peers" / "table.md"
    bench = res / "peers" / "redis-benchmark.txt"
    if bench.exists():
        out.append("```\n" + bench.read_text() + "```\n")
    if table.exists():
        out.append(table.read_text())
    rows = {r["peer"]: r for r in data["summary"]}
    peers = {k: v for k, v in rows.items() if not k.startswith("guild")}
    out.append("\n| figure | best peer | guild | guild ÷ best | guild-p2 | guild-p2 ÷ guild |")
    out.append("|---|---|---|---|---|---|")
    for label, key, higher, digits in (
        ("enqueue jobs/s", "enqueue_jobs_per_s", True, 0),
        ("drain jobs/s (start-up incl.)", "drain_jobs_per_s", True, 0),
        ("steady jobs/s", "steady_jobs_per_s", True, 0),
        ("round trip p50 ms", "p50_ms", False, 2),
        ("1st job after s", "first_job_after_s", False, 2),
        ("worker CPU µs/job", "drain_worker_cpu_us_per_job", False, 0),
    ):
        vals = {k: v for k, row in peers.items() if (v := get(row, key, "median")) is not None}
        g = get(rows.get("guild", {}), key, "median")
        g2 = get(rows.get("guild-p2", {}), key, "median")
        if not vals or g is None:
            out.append(f"| {label} | n/a | n/a | | | |")
            continue
        best = (max if higher else min)(vals, key=lambda k: vals[k])
        f = f"{{:,.{digits}f}}"
        p2 = f"{f.format(g2)} | {g2 / g:.2f}x" if g2 is not None else "n/a |"
        out.append(
            f"| {label} | {best} {f.format(vals[best])} | {f.format(g)} | {g / vals[best]:.2f}x | {p2} |"
        )
    out.append("")


def main() -> None:
    res = Path(sys.argv[1])
    out = [f"# guild benchmarks: {res.name}\n"]
    section_timings(res, out)
    section_throughput(res, out)
    section_json_table(res, out, "startup", "Start-up (bench_startup.py)")
    section_json_table(res, out, "sandbox", "Sandbox overhead (bench_sandbox.py)")
    section_huey(res, out)
    section_sqlite(res, out)
    section_bullmq(res, out)
    section_peers(res, out)
    print("\n".join(out))


if __name__ == "__main__":
    main()
